/*
 * agi_load: the benchmark's load client in C, playing Asterisk against `callgate serve`.
 *
 *     cc -O2 -Wall -Wextra -pthread -o agi_load bench/agi_load.c
 *     ./agi_load --mode fastagi --port 4573 --channels 200 --seconds 10 \
 *         --logins logins.txt --destinations destinations.txt > run.json
 *
 * Like Asterisk (C, one thread per channel, blocking AGI I/O), each channel is a thread with
 * blocking sockets. It loops until the deadline doing call pairs exactly like `_channel()` in
 * bench/load.py: callPrepare (its login, a random destination from the list, a fresh
 * uniqueid, prior=1); if the answer is Allowed, callFinish with ANSWER, a random length in
 * [0, min(maxtime, 120)] s, answered_ms = length * 1000, cause 16. A pair counts when the
 * answers are Allowed, then Saved; anything else is an error, counted by kind in the words
 * bench/load.py uses (`callPrepare Declined E_SQL_ERROR`, `timeout`, `ConnectionRefusedError`).
 *
 * Modes:
 *   fastagi  one TCP connection per decision (res_agi.c's launch_netscript): the env block in
 *            one write, then one reply per command line (`EXEC MSet` -> 200 result=0, `SET
 *            VARIABLE` -> 200 result=1, `VERBOSE` -> 200 result=1, else 510), until the
 *            server closes. MSet and SET VARIABLE are decoded with ports of Asterisk's
 *            parse_args (res_agi.c) and __ast_app_separate_args (main/app.c), as
 *            fastagi/asterisk_parse.py does.
 *   http     one persistent HTTP/1.1 connection per channel to the HTTP shim (plain text
 *            answers), `call_id` pairing callFinish with its callPrepare; reconnects when the
 *            server closes.
 *   replay   no network: AGI command lines on stdin, Asterisk's replies and the variables it
 *            would store as one JSON object on stdout (the tests compare it with the Python
 *            port).
 *
 * --rate R paces the channels to R pairs/s in total (each one pair every channels/R s from a
 * random phase, `late` counting pairs that start more than one interval after they were
 * due); 0 = closed loop, back to back. All threads start, then are released together: the
 * run's seconds start at the release. Latency of a decision (CLOCK_MONOTONIC): from before
 * connect() (fastagi) / before the request is sent (http; a reconnect included: the
 * keep-alive connections are opened during the start-up) to the complete answer.
 *
 * Output: one JSON object on stdout at the end: pairs, seconds, errors {kind: count}, late,
 * prepare_ms, finish_ms, cpu_s (getrusage RUSAGE_SELF, user + sys; cpu_user_s and cpu_sys_s
 * apart), next_uniqueid (the counter after the last uniqueid used; uniqueids are PREFIX +
 * counter, counting from --uniqueid-start + 1).
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_LENGTH_S 120      /* bench/load.py MAX_LENGTH_S */
#define DECISION_TIMEOUT_S 15 /* per read (SO_RCVTIMEO) and per connect/write (SO_SNDTIMEO) */
#define ERROR_PAUSE_NS 50000000L /* after a socket error: a refused connection must not spin */
#define AGI_MAX_ARGS 128      /* res_agi.c MAX_ARGS */
#define MSET_MAX_ARGS 99      /* pbx_builtin_setvar_multiple: AST_APP_ARG(pair)[99] */
#define KIND_LEN 256
#define MAX_KINDS 64
#define THREAD_STACK (256 * 1024)

/* --- small utilities ------------------------------------------------------------------- */

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("agi_load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double when) {
    struct timespec ts;
    ts.tv_sec = (time_t)when;
    ts.tv_nsec = (long)((when - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void pause_after_error(void) {
    struct timespec ts = {0, ERROR_PAUSE_NS};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* A growable byte string, always NUL-terminated. */
typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t extra) {
    if (b->len + extra + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + extra + 1 > cap) cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
}

static void sb_putn(sbuf *b, const char *s, size_t n) {
    sb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

static void sb_putc(sbuf *b, char c) { sb_putn(b, &c, 1); }

static void sb_printf(sbuf *b, const char *fmt, ...) {
    sb_reserve(b, 128);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) die("vsnprintf failed");
    if ((size_t)n >= b->cap - b->len) { /* did not fit: again, with room */
        sb_reserve(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

static void sb_clear(sbuf *b) {
    b->len = 0;
    if (b->p) b->p[0] = '\0';
}

/* urllib.parse.quote(s, safe=""): everything but ALPHA / DIGIT / "_.-~" as %XX. */
static void sb_quote(sbuf *b, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (isalnum(*c) || *c == '_' || *c == '.' || *c == '-' || *c == '~') {
            sb_putc(b, (char)*c);
        } else {
            char esc[3] = {'%', hex[*c >> 4], hex[*c & 15]};
            sb_putn(b, esc, 3);
        }
    }
}

/* JSON string: quotes, backslashes and control chars escaped; non-ASCII bytes as '?'. */
static void json_string(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            fputc('\\', out);
            fputc(*c, out);
        } else if (*c < 0x20) {
            fprintf(out, "\\u%04x", *c);
        } else if (*c >= 0x80) {
            fputc('?', out);
        } else {
            fputc(*c, out);
        }
    }
    fputc('"', out);
}

/* --- random numbers: xoshiro256**, one generator per channel ---------------------------- */

typedef struct {
    uint64_t s[4];
} rng_t;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng_t *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static double rng_uniform(rng_t *r, double low, double high) {
    return low + (high - low) * (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform integer in [0, n), unbiased (rejection). */
static uint64_t rng_below(rng_t *r, uint64_t n) {
    if (n <= 1) return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_next(r);
    while (x >= limit);
    return x % n;
}

/* --- Asterisk's parsers (fastagi/asterisk_parse.py ports them to Python) ---------------- */

/* res_agi.c parse_args(): words split on blanks, "..." groups, a backslash escapes any char.
 * Returns the word count; words point into `store` (freed by the caller with argv). */
static int agi_shell_split(const char *line, char ***argv_out, char **store_out) {
    size_t n = strlen(line);
    char **argv = xmalloc((n + 2) * sizeof *argv);
    char *out = xmalloc(2 * n + 2);
    size_t pos = 0;
    int argc = 0, quoted = 0, escaped = 0, whitespace = 1;
    for (size_t i = 0; i < n; i++) {
        char c = line[i];
        if (c == '"' && !escaped) {
            quoted = !quoted;
            if (quoted && whitespace) {
                if (argc) out[pos++] = '\0';
                argv[argc++] = out + pos;
                whitespace = 0;
            }
            continue;
        }
        if ((c == ' ' || c == '\t') && !quoted && !escaped) {
            whitespace = 1;
            continue;
        }
        if (c == '\\' && !escaped) {
            escaped = 1;
            continue;
        }
        if (whitespace) {
            if (argc >= AGI_MAX_ARGS - 1) continue; /* "Too many arguments, truncating" */
            if (argc) out[pos++] = '\0';
            argv[argc++] = out + pos;
            whitespace = 0;
        }
        out[pos++] = c;
        escaped = 0;
    }
    out[pos] = '\0';
    *argv_out = argv;
    *store_out = out;
    return argc;
}

/* main/app.c __ast_app_separate_args(remove_chars=1): split on delim outside (), [] and "...";
 * double quotes removed; a backslash removed and the char after it taken literally. The last
 * of `arraylen` slots gets the unparsed rest. Returns the count; args point into `store`. */
static int separate_args(const char *buf, char delim, int arraylen, char ***args_out, char **store_out) {
    size_t n = strlen(buf);
    char **args = xmalloc(((size_t)arraylen + 1) * sizeof *args);
    char *out = xmalloc(2 * n + (size_t)arraylen + 2);
    size_t pos = 0, i = 0;
    int count = 0, paren = 0, bracket = 0, quote = 0, ended_on_delim = 0;
    while (i < n && count < arraylen - 1) {
        args[count++] = out + pos;
        ended_on_delim = 0;
        while (i < n) {
            char c = buf[i++];
            if (c == '(') {
                paren++;
            } else if (c == ')' && paren) {
                paren--;
            } else if (c == '[') {
                bracket++;
            } else if (c == ']' && bracket) {
                bracket--;
            } else if (c == '"' && delim != '"') {
                quote = !quote;
                continue;
            } else if (c == '\\') {
                if (i < n) out[pos++] = buf[i++]; /* a trailing backslash is dropped */
                continue;
            } else if (c == delim && !paren && !quote && !bracket) {
                ended_on_delim = 1;
                break;
            }
            out[pos++] = c;
        }
        out[pos++] = '\0';
    }
    if (i < n) {
        args[count++] = out + pos;
        memcpy(out + pos, buf + i, n - i);
        pos += n - i;
        out[pos++] = '\0';
    } else if (ended_on_delim) {
        args[count++] = out + pos;
        out[pos++] = '\0';
    }
    *args_out = args;
    *store_out = out;
    return count;
}

/* --- channel variables ------------------------------------------------------------------ */

typedef struct {
    char **names, **values;
    int count, cap;
} vars_t;

static void vars_set(vars_t *v, const char *name, const char *value) {
    for (int i = 0; i < v->count; i++) {
        if (strcmp(v->names[i], name) == 0) {
            free(v->values[i]);
            v->values[i] = xstrdup(value);
            return;
        }
    }
    if (v->count == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 16;
        v->names = xrealloc(v->names, (size_t)v->cap * sizeof *v->names);
        v->values = xrealloc(v->values, (size_t)v->cap * sizeof *v->values);
    }
    v->names[v->count] = xstrdup(name);
    v->values[v->count] = xstrdup(value);
    v->count++;
}

static const char *vars_get(const vars_t *v, const char *name) {
    for (int i = 0; i < v->count; i++)
        if (strcmp(v->names[i], name) == 0) return v->values[i];
    return "";
}

static void vars_clear(vars_t *v) {
    for (int i = 0; i < v->count; i++) {
        free(v->names[i]);
        free(v->values[i]);
    }
    v->count = 0;
}

static void vars_free(vars_t *v) {
    vars_clear(v);
    free(v->names);
    free(v->values);
    v->names = v->values = NULL;
    v->cap = 0;
}

/* MSet's data -> the pairs it sets; entries without '=' are ignored. */
static void mset_store(const char *data, vars_t *vars) {
    if (!*data) return;
    char **entries, *estore;
    int count = separate_args(data, ',', MSET_MAX_ARGS, &entries, &estore);
    for (int i = 0; i < count; i++) {
        char **parts, *pstore;
        if (separate_args(entries[i], '=', 2, &parts, &pstore) == 2) vars_set(vars, parts[0], parts[1]);
        free(parts);
        free(pstore);
    }
    free(entries);
    free(estore);
}

/* Asterisk's reply to one command line (without "\n"), and what it stores on the channel
 * (bench/load.py _reply_to). */
static const char *reply_to(const char *command, vars_t *vars) {
    char head[13];
    size_t n = 0;
    for (; n < 12 && command[n]; n++) head[n] = (char)toupper((unsigned char)command[n]);
    head[n] = '\0';
    if (strncmp(head, "EXEC MSET", 9) == 0) {
        char **argv, *store;
        int argc = agi_shell_split(command, &argv, &store);
        mset_store(argc > 2 ? argv[2] : "", vars);
        free(argv);
        free(store);
        return "200 result=0\n";
    }
    if (strcmp(head, "SET VARIABLE") == 0) {
        char **argv, *store;
        int argc = agi_shell_split(command, &argv, &store);
        const char *reply = "520 Invalid command syntax.  Proper usage not available.\n";
        if (argc == 4) {
            vars_set(vars, argv[2], argv[3]);
            reply = "200 result=1\n";
        }
        free(argv);
        free(store);
        return reply;
    }
    if (strncmp(head, "VERBOSE", 7) == 0) return "200 result=1\n";
    return "510 Invalid or unknown command\n";
}

/* --- configuration and shared state ------------------------------------------------------ */

enum mode { MODE_FASTAGI, MODE_HTTP };

static struct {
    enum mode mode;
    const char *host;
    int port;
    const char *key;
    int channels;
    double seconds;
    double rate;
    uint64_t seed;
    const char *uniqueid_prefix;
    char **logins;
    size_t n_logins;
    char **dests;
    size_t n_dests;
    struct sockaddr_in addr;
    double deadline;
    pthread_barrier_t ready, go;
    atomic_ullong uniqueid;
} g = {.host = "127.0.0.1", .key = "", .seed = 1, .uniqueid_prefix = "bench."};

/* --- per channel ------------------------------------------------------------------------- */

typedef struct {
    double *v;
    size_t n, cap;
} dvec;

static void dvec_push(dvec *d, double x) {
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 256;
        d->v = xrealloc(d->v, d->cap * sizeof *d->v);
    }
    d->v[d->n++] = x;
}

typedef struct {
    char kind[KIND_LEN];
    long count;
} kind_count;

/* A buffered reader on one socket. */
typedef struct {
    int fd;
    char *buf;
    size_t start, end, cap;
} conn_t;

typedef struct {
    int index;
    pthread_t thread;
    const char *login;
    rng_t rng;
    long pairs, late;
    dvec prepare_ms, finish_ms;
    kind_count kinds[MAX_KINDS];
    int n_kinds;
    conn_t conn;       /* fastagi: the current session; http: the keep-alive connection */
    vars_t vars;
    sbuf out, line;    /* what goes on the wire; the current line read */
} channel_t;

static void count_error(channel_t *ch, const char *kind) {
    for (int i = 0; i < ch->n_kinds; i++) {
        if (strcmp(ch->kinds[i].kind, kind) == 0) {
            ch->kinds[i].count++;
            return;
        }
    }
    if (ch->n_kinds == MAX_KINDS) { /* the last slot already counts the rest */
        ch->kinds[MAX_KINDS - 1].count++;
        return;
    }
    kind_count *slot = &ch->kinds[ch->n_kinds++];
    snprintf(slot->kind, KIND_LEN, "%s", ch->n_kinds == MAX_KINDS ? "(other kinds)" : kind);
    slot->count = 1;
}

/* The outcome of one decision. */
typedef enum {
    DECIDED,       /* an answer: result, maxtime, error */
    FAILED,        /* a wrong answer (http status): `kind` */
    SOCKET_ERROR,  /* `kind` names it; the channel pauses before its next pair */
} outcome_t;

typedef struct {
    char result[64];
    long maxtime;
    char error[64];
    char kind[KIND_LEN];
} answer_t;

/* Python's exception names for socket errors (bench/load.py counts type(exc).__name__);
 * a timeout is `timeout`, as asyncio.timeout is counted. */
static void errno_kind(int err, char *kind) {
    const char *name;
    switch (err) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EINPROGRESS:
    case ETIMEDOUT:
        name = "timeout";
        break;
    case ECONNREFUSED:
        name = "ConnectionRefusedError";
        break;
    case ECONNRESET:
        name = "ConnectionResetError";
        break;
    case ECONNABORTED:
        name = "ConnectionAbortedError";
        break;
    case EPIPE:
        name = "BrokenPipeError";
        break;
    default:
        snprintf(kind, KIND_LEN, "OSError %s", strerror(err));
        return;
    }
    snprintf(kind, KIND_LEN, "%s", name);
}

static void conn_close(conn_t *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->start = c->end = 0;
}

/* Connect with the bounds set; 0 or an errno. */
static int conn_open(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return errno;
    struct timeval tv = {DECISION_TIMEOUT_S, 0};
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds connect() too (Linux) */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    while (connect(fd, (const struct sockaddr *)&g.addr, sizeof g.addr) != 0) {
        if (errno == EINTR) continue;
        int err = errno;
        close(fd);
        return err;
    }
    c->fd = fd;
    c->start = c->end = 0;
    return 0;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* More bytes into the buffer: >0 read, 0 EOF, -errno on error. */
static long conn_fill(conn_t *c) {
    if (c->start > 0 && c->start == c->end) c->start = c->end = 0;
    if (c->end == c->cap) {
        if (c->start > 0) {
            memmove(c->buf, c->buf + c->start, c->end - c->start);
            c->end -= c->start;
            c->start = 0;
        } else {
            c->cap = c->cap ? 2 * c->cap : 16384;
            c->buf = xrealloc(c->buf, c->cap);
        }
    }
    for (;;) {
        ssize_t r = read(c->fd, c->buf + c->end, c->cap - c->end);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -(long)errno;
        c->end += (size_t)r;
        return (long)r;
    }
}

/* The next line, "\n" (and a "\r" before it when strip_cr) removed, into `line`:
 * 1 a line, 0 EOF (a partial last line is dropped), -errno on error. */
static int conn_line(conn_t *c, sbuf *line, int strip_cr) {
    for (;;) {
        char *nl = c->end > c->start ? memchr(c->buf + c->start, '\n', c->end - c->start) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - (c->buf + c->start));
            sb_clear(line);
            sb_putn(line, c->buf + c->start, n);
            c->start += n + 1;
            if (strip_cr && line->len && line->p[line->len - 1] == '\r') line->p[--line->len] = '\0';
            return 1;
        }
        long r = conn_fill(c);
        if (r <= 0) return (int)r;
    }
}

/* --- fastagi ----------------------------------------------------------------------------- */

static void build_query(sbuf *b, const char *const *args) {
    for (int i = 0; args[i]; i += 2) {
        if (i) sb_putc(b, '&');
        sb_quote(b, args[i]);
        sb_putc(b, '=');
        sb_quote(b, args[i + 1]);
    }
}

/* bench/load.py _env_lines(request, uniqueid, login, network=True) + the blank line. */
static void build_env(sbuf *b, const char *script, const char *const *args, const char *uniqueid,
                      const char *login) {
    sbuf request = {0};
    sb_puts(&request, script);
    sb_putc(&request, '?');
    build_query(&request, args);
    size_t ulen = strlen(uniqueid);
    const char *tail4 = uniqueid + (ulen > 4 ? ulen - 4 : 0);
    sb_clear(b);
    sb_printf(b,
              "agi_network: yes\n"
              "agi_network_script: %s\n"
              "agi_request: agi://%s/%s\n"
              "agi_channel: PJSIP/%s-0000%s\n"
              "agi_language: en\n"
              "agi_type: PJSIP\n"
              "agi_uniqueid: %s\n"
              "agi_version: 22.0.0\n"
              "agi_callerid: %s\n"
              "agi_calleridname: bench\n"
              "agi_callingpres: 0\n"
              "agi_callingani2: 0\n"
              "agi_callington: 0\n"
              "agi_callingtns: 0\n"
              "agi_dnid: unknown\n"
              "agi_rdnis: unknown\n"
              "agi_context: callgate-outbound\n"
              "agi_extension: s\n"
              "agi_priority: 1\n"
              "agi_enhanced: 0.0\n"
              "agi_accountcode: \n"
              "agi_threadid: 140000000000000\n"
              "\n",
              request.p, g.host, request.p, login, tail4, uniqueid, login);
    free(request.p);
}

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

static long parse_maxtime(const char *s) {
    if (!all_digits(s)) return 0;
    errno = 0;
    long v = strtol(s, NULL, 10);
    return errno ? 0 : v;
}

/* One FastAGI session: connect, env block, a reply per command line, until the server closes. */
static outcome_t fastagi_decision(channel_t *ch, const char *script, const char *const *args,
                                  const char *uniqueid, answer_t *ans, double *latency_ms) {
    build_env(&ch->out, script, args, uniqueid, ch->login);
    vars_clear(&ch->vars);
    double t0 = mono_s();
    int err = conn_open(&ch->conn);
    if (!err) err = send_all(ch->conn.fd, ch->out.p, ch->out.len);
    while (!err) {
        int r = conn_line(&ch->conn, &ch->line, 0);
        if (r == 0) break; /* the server closed: the answer is complete */
        if (r < 0) {
            err = -r;
            break;
        }
        const char *reply = reply_to(ch->line.p, &ch->vars);
        /* A reply the server no longer reads (it closed after its last command) is lost, as
         * asyncio's write to a closing transport is; the read that follows sees the EOF. */
        int werr = send_all(ch->conn.fd, reply, strlen(reply));
        if (werr && werr != EPIPE && werr != ECONNRESET) err = werr;
    }
    conn_close(&ch->conn);
    if (err) {
        errno_kind(err, ans->kind);
        return SOCKET_ERROR;
    }
    *latency_ms = (mono_s() - t0) * 1000.0;
    snprintf(ans->result, sizeof ans->result, "%s", vars_get(&ch->vars, "CALLGATE_RESULT"));
    ans->maxtime = parse_maxtime(vars_get(&ch->vars, "CALLGATE_MAXTIME"));
    snprintf(ans->error, sizeof ans->error, "%s", vars_get(&ch->vars, "CALLGATE_ERROR"));
    return DECIDED;
}

/* --- http -------------------------------------------------------------------------------- */

/* The E_* code of an error answer: the JSON envelope's "response", or a plain E_ word. */
static void envelope_code(const char *body, char *code, size_t size) {
    code[0] = '\0';
    while (isspace((unsigned char)*body)) body++;
    if (*body == '{') {
        const char *key = strstr(body, "\"response\"");
        if (!key) return;
        const char *p = key + strlen("\"response\"");
        while (isspace((unsigned char)*p)) p++;
        if (*p++ != ':') return;
        while (isspace((unsigned char)*p)) p++;
        if (*p++ != '"') return;
        size_t n = 0;
        while (*p && *p != '"' && n + 1 < size) {
            if (*p == '\\' && p[1]) p++;
            code[n++] = *p++;
        }
        code[n] = '\0';
        return;
    }
    size_t n = strlen(body);
    while (n && isspace((unsigned char)body[n - 1])) n--;
    if (n >= 2 && body[0] == 'E' && body[1] == '_' && n < size && !memchr(body, ' ', n)) {
        memcpy(code, body, n);
        code[n] = '\0';
    }
}

/* bench/load.py _plain_answer: `Allowed 2994 …`, `Declined E_CODE`, `Saved …`. */
static void plain_answer(const char *body, answer_t *ans) {
    char words[2][64] = {"", ""};
    const char *p = body;
    for (int w = 0; w < 2; w++) {
        while (isspace((unsigned char)*p)) p++;
        size_t n = 0;
        while (*p && !isspace((unsigned char)*p)) {
            if (n + 1 < sizeof words[w]) words[w][n++] = *p;
            p++;
        }
        words[w][n] = '\0';
    }
    snprintf(ans->result, sizeof ans->result, "%s", words[0]);
    ans->maxtime = strcmp(words[0], "Allowed") == 0 ? parse_maxtime(words[1]) : 0;
    snprintf(ans->error, sizeof ans->error, "%s", strcmp(words[0], "Declined") == 0 ? words[1] : "");
}

static int header_is(const char *line, const char *name, const char **value) {
    size_t n = strlen(name);
    if (strncasecmp(line, name, n) != 0 || line[n] != ':') return 0;
    const char *v = line + n + 1;
    while (*v == ' ' || *v == '\t') v++;
    *value = v;
    return 1;
}

/* Read n body bytes into `body`: 0, EOF_BODY, or an errno. */
#define EOF_BODY (-1)
static int read_exact(conn_t *c, size_t n, sbuf *body) {
    while (c->end - c->start < n) {
        long r = conn_fill(c);
        if (r == 0) return EOF_BODY;
        if (r < 0) return (int)-r;
    }
    sb_putn(body, c->buf + c->start, n);
    c->start += n;
    return 0;
}

typedef enum { RESP_OK, RESP_CLOSED_BEFORE, RESP_DISCONNECTED, RESP_BAD, RESP_ERRNO } resp_t;

/* One HTTP/1.1 response: status, body; `keep` false when the server closes after it. */
static resp_t read_response(channel_t *ch, int *status, sbuf *body, int *keep, int *err) {
    conn_t *c = &ch->conn;
    int r = conn_line(c, &ch->line, 1);
    if (r == 0) return c->end > c->start ? RESP_DISCONNECTED : RESP_CLOSED_BEFORE; /* a part came: no retry */
    if (r < 0) {
        *err = -r;
        return (*err == ECONNRESET || *err == EPIPE) ? RESP_CLOSED_BEFORE : RESP_ERRNO;
    }
    int minor = 1;
    if (sscanf(ch->line.p, "HTTP/1.%d %d", &minor, status) != 2) return RESP_BAD;
    *keep = minor >= 1;
    long length = -1;
    int chunked = 0;
    for (;;) {
        r = conn_line(c, &ch->line, 1);
        if (r == 0) return RESP_DISCONNECTED;
        if (r < 0) {
            *err = -r;
            return RESP_ERRNO;
        }
        if (ch->line.len == 0) break;
        const char *v;
        if (header_is(ch->line.p, "Content-Length", &v)) {
            length = strtol(v, NULL, 10);
        } else if (header_is(ch->line.p, "Transfer-Encoding", &v)) {
            chunked = strncasecmp(v, "chunked", 7) == 0;
        } else if (header_is(ch->line.p, "Connection", &v)) {
            if (strncasecmp(v, "close", 5) == 0) *keep = 0;
            if (strncasecmp(v, "keep-alive", 10) == 0) *keep = 1;
        }
    }
    sb_clear(body);
    if (chunked) {
        for (;;) {
            r = conn_line(c, &ch->line, 1);
            if (r == 0) return RESP_DISCONNECTED;
            if (r < 0) {
                *err = -r;
                return RESP_ERRNO;
            }
            char *end;
            long size = strtol(ch->line.p, &end, 16);
            if (end == ch->line.p || size < 0) return RESP_BAD;
            if (size == 0) {
                do { /* trailers, then the blank line */
                    r = conn_line(c, &ch->line, 1);
                    if (r <= 0) return r == 0 ? RESP_DISCONNECTED : (*err = -r, RESP_ERRNO);
                } while (ch->line.len);
                break;
            }
            int e = read_exact(c, (size_t)size, body);
            if (e == 0) {
                r = conn_line(c, &ch->line, 1); /* the CRLF after the chunk */
                if (r <= 0) return r == 0 ? RESP_DISCONNECTED : (*err = -r, RESP_ERRNO);
                continue;
            }
            if (e == EOF_BODY) return RESP_DISCONNECTED;
            *err = e;
            return RESP_ERRNO;
        }
    } else if (length >= 0) {
        int e = read_exact(c, (size_t)length, body);
        if (e == EOF_BODY) return RESP_DISCONNECTED;
        if (e) {
            *err = e;
            return RESP_ERRNO;
        }
    } else { /* no length: the body runs to the close */
        for (;;) {
            long n = conn_fill(c);
            if (n == 0) break;
            if (n < 0) {
                *err = (int)-n;
                return RESP_ERRNO;
            }
        }
        sb_putn(body, c->buf + c->start, c->end - c->start);
        c->start = c->end;
        *keep = 0;
    }
    return RESP_OK;
}

/* One request on the channel's keep-alive connection (opened, or opened again, as needed). */
static outcome_t http_decision(channel_t *ch, const char *method, const char *const *args,
                               const char *uniqueid, answer_t *ans, double *latency_ms) {
    sbuf *req = &ch->out;
    sb_clear(req);
    sb_puts(req, "GET /billing/api/2.2/");
    sb_quote(req, g.key);
    sb_printf(req, "/%s?", method);
    build_query(req, args);
    sb_puts(req, "&call_id=");
    sb_quote(req, uniqueid);
    sb_printf(req, " HTTP/1.1\r\nHost: %s:%d\r\n\r\n", g.host, g.port);
    sbuf body = {0};
    int status = 0, keep = 1, err = 0;
    resp_t resp = RESP_CLOSED_BEFORE;
    double t0 = mono_s();
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = ch->conn.fd < 0;
        if (fresh && (err = conn_open(&ch->conn)) != 0) break;
        err = send_all(ch->conn.fd, req->p, req->len);
        resp = err ? RESP_CLOSED_BEFORE : read_response(ch, &status, &body, &keep, &err);
        if (resp == RESP_OK) break;
        conn_close(&ch->conn);
        /* A kept-alive connection the server closed meanwhile: once more on a new one. */
        if (fresh || resp != RESP_CLOSED_BEFORE) break;
        err = 0;
    }
    outcome_t outcome;
    if (resp == RESP_OK) {
        if (!keep) conn_close(&ch->conn);
        if (status != 200) {
            char code[128];
            envelope_code(body.p ? body.p : "", code, sizeof code);
            snprintf(ans->kind, KIND_LEN, "%s http %d%s%s", method, status, *code ? " " : "", code);
            outcome = FAILED;
        } else {
            *latency_ms = (mono_s() - t0) * 1000.0;
            plain_answer(body.p ? body.p : "", ans);
            outcome = DECIDED;
        }
    } else {
        conn_close(&ch->conn);
        if (resp == RESP_BAD) {
            snprintf(ans->kind, KIND_LEN, "ClientResponseError");
        } else if (err) {
            errno_kind(err, ans->kind);
        } else {
            snprintf(ans->kind, KIND_LEN, "ServerDisconnectedError");
        }
        outcome = SOCKET_ERROR;
    }
    free(body.p);
    return outcome;
}

/* --- the channel loop (bench/load.py _channel) ------------------------------------------- */

static outcome_t decide(channel_t *ch, const char *method, const char *const *args, const char *uniqueid,
                        answer_t *ans, dvec *latencies) {
    double ms = 0.0;
    ans->result[0] = ans->error[0] = ans->kind[0] = '\0';
    ans->maxtime = 0;
    outcome_t o = g.mode == MODE_FASTAGI ? fastagi_decision(ch, method, args, uniqueid, ans, &ms)
                                         : http_decision(ch, method, args, uniqueid, ans, &ms);
    if (o == DECIDED) dvec_push(latencies, ms);
    return o;
}

/* `callPrepare Declined E_SQL_ERROR`: method, result (or "no result"), error. */
static void answer_kind(const char *method, const answer_t *ans, char *kind) {
    snprintf(kind, KIND_LEN, "%s %s%s%s", method, ans->result[0] ? ans->result : "no result",
             ans->error[0] ? " " : "", ans->error);
}

static void *channel_main(void *arg) {
    channel_t *ch = arg;
    /* http: the keep-alive connection is part of the start-up, not of the first decision (a
     * burst of connects at the release would overflow the shim's listen backlog: aiohttp's
     * 128); if it fails, the first decision connects again and counts the error. */
    if (g.mode == MODE_HTTP) conn_open(&ch->conn);
    pthread_barrier_wait(&g.ready);
    pthread_barrier_wait(&g.go);
    const double deadline = g.deadline;
    const double interval = g.rate > 0 ? (double)g.channels / g.rate : 0.0;
    double due = mono_s() + rng_uniform(&ch->rng, 0.0, interval);
    double now;
    char uniqueid[96], length_s[32], answered_ms[32], kind[KIND_LEN];
    answer_t ans;
    while ((now = mono_s()) < deadline) {
        if (interval > 0) {
            if (due > now) {
                if (due >= deadline) break; /* the next pair would start after the run */
                sleep_until(due);
            } else if (now - due > interval) {
                ch->late++;
            }
            due += interval;
        }
        const char *dest = g.dests[rng_below(&ch->rng, g.n_dests)];
        unsigned long long id = atomic_fetch_add(&g.uniqueid, 1) + 1;
        snprintf(uniqueid, sizeof uniqueid, "%s%llu", g.uniqueid_prefix, id);
        const char *prepare[] = {"login", ch->login, "destination", dest, "callerid", ch->login,
                                 "prior", "1", NULL};
        outcome_t o = decide(ch, "callPrepare", prepare, uniqueid, &ans, &ch->prepare_ms);
        if (o == DECIDED && strcmp(ans.result, "Allowed") == 0) {
            long top = ans.maxtime < MAX_LENGTH_S ? ans.maxtime : MAX_LENGTH_S;
            long length = top > 0 ? (long)rng_below(&ch->rng, (uint64_t)top + 1) : 0;
            snprintf(length_s, sizeof length_s, "%ld", length);
            snprintf(answered_ms, sizeof answered_ms, "%ld", length * 1000);
            const char *finish[] = {"login", ch->login, "destination", dest, "callerid", ch->login,
                                    "prior", "1", "length", length_s, "answered_ms", answered_ms,
                                    "status", "ANSWER", "cause", "16", NULL};
            o = decide(ch, "callFinish", finish, uniqueid, &ans, &ch->finish_ms);
            if (o == DECIDED && strcmp(ans.result, "Saved") == 0) {
                ch->pairs++;
                continue;
            }
            if (o == DECIDED) answer_kind("callFinish", &ans, kind);
        } else if (o == DECIDED) {
            answer_kind("callPrepare", &ans, kind);
        }
        count_error(ch, o == DECIDED ? kind : ans.kind);
        if (o == SOCKET_ERROR) pause_after_error();
    }
    conn_close(&ch->conn);
    return NULL;
}

/* --- replay mode: Asterisk's side of a transcript, for the tests -------------------------- */

static int replay(void) {
    conn_t in = {.fd = STDIN_FILENO};
    sbuf line = {0};
    vars_t vars = {0};
    FILE *out = stdout;
    fputs("{\"replies\": [", out);
    int r, first = 1;
    while ((r = conn_line(&in, &line, 0)) > 0) {
        const char *reply = reply_to(line.p, &vars);
        char trimmed[128];
        snprintf(trimmed, sizeof trimmed, "%.*s", (int)strcspn(reply, "\n"), reply);
        fputs(first ? "" : ", ", out);
        json_string(out, trimmed);
        first = 0;
    }
    if (r < 0) die("reading stdin: %s", strerror(-r));
    fputs("], \"variables\": {", out);
    for (int i = 0; i < vars.count; i++) {
        fputs(i ? ", " : "", out);
        json_string(out, vars.names[i]);
        fputs(": ", out);
        json_string(out, vars.values[i]);
    }
    fputs("}}\n", out);
    vars_free(&vars);
    free(line.p);
    free(in.buf);
    return 0;
}

/* --- main -------------------------------------------------------------------------------- */

static char **read_lines(const char *path, size_t *count) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    char **lines = NULL;
    size_t n = 0, cap = 0;
    char *buf = NULL;
    size_t bufcap = 0;
    ssize_t len;
    while ((len = getline(&buf, &bufcap, f)) >= 0) {
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = '\0';
        if (len == 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            lines = xrealloc(lines, cap * sizeof *lines);
        }
        lines[n++] = xstrdup(buf);
    }
    free(buf);
    fclose(f);
    if (n == 0) die("%s has no lines", path);
    *count = n;
    return lines;
}

static void usage(void) {
    fputs("usage: agi_load --mode fastagi|http|replay [--host 127.0.0.1] --port PORT [--key KEY (http)]\n"
          "                --channels N --seconds S [--rate PAIRS_PER_S (0 = closed loop)] [--seed N]\n"
          "                [--uniqueid-prefix TEXT] [--uniqueid-start N] --logins FILE --destinations FILE\n"
          "       replay: AGI command lines on stdin; Asterisk's replies and variables as JSON on stdout\n",
          stderr);
    exit(2);
}

static double parse_double(const char *name, const char *text) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end) die("%s: not a number: %s", name, text);
    return v;
}

static unsigned long long parse_ull(const char *name, const char *text) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-') die("%s: not a count: %s", name, text);
    return v;
}

int main(int argc, char **argv) {
    const char *mode = NULL, *logins_path = NULL, *dests_path = NULL;
    unsigned long long uniqueid_start = 0;
    for (int i = 1; i < argc; i += 2) {
        const char *name = argv[i];
        if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) usage();
        if (i + 1 >= argc) die("%s needs a value", name);
        const char *value = argv[i + 1];
        if (strcmp(name, "--mode") == 0) mode = value;
        else if (strcmp(name, "--host") == 0) g.host = value;
        else if (strcmp(name, "--port") == 0) g.port = (int)parse_ull(name, value);
        else if (strcmp(name, "--key") == 0) g.key = value;
        else if (strcmp(name, "--channels") == 0) g.channels = (int)parse_ull(name, value);
        else if (strcmp(name, "--seconds") == 0) g.seconds = parse_double(name, value);
        else if (strcmp(name, "--rate") == 0) g.rate = parse_double(name, value);
        else if (strcmp(name, "--seed") == 0) g.seed = parse_ull(name, value);
        else if (strcmp(name, "--uniqueid-prefix") == 0) g.uniqueid_prefix = value;
        else if (strcmp(name, "--uniqueid-start") == 0) uniqueid_start = parse_ull(name, value);
        else if (strcmp(name, "--logins") == 0) logins_path = value;
        else if (strcmp(name, "--destinations") == 0) dests_path = value;
        else die("unknown option %s (see --help)", name);
    }
    if (!mode) usage();
    if (strcmp(mode, "replay") == 0) return replay();
    if (strcmp(mode, "fastagi") == 0) g.mode = MODE_FASTAGI;
    else if (strcmp(mode, "http") == 0) g.mode = MODE_HTTP;
    else die("unknown mode %s", mode);
    if (g.port <= 0 || g.port > 65535) die("--port is required (1-65535)");
    if (g.channels <= 0) die("--channels must be > 0");
    if (!(g.seconds > 0)) die("--seconds must be > 0");
    if (g.rate < 0) die("--rate must be >= 0");
    if (g.mode == MODE_HTTP && !*g.key) die("--key is required in http mode");
    if (!logins_path || !dests_path) die("--logins and --destinations are required");
    memset(&g.addr, 0, sizeof g.addr);
    g.addr.sin_family = AF_INET;
    g.addr.sin_port = htons((uint16_t)g.port);
    if (inet_pton(AF_INET, g.host, &g.addr.sin_addr) != 1) die("--host must be an IPv4 address: %s", g.host);
    g.logins = read_lines(logins_path, &g.n_logins);
    g.dests = read_lines(dests_path, &g.n_dests);
    atomic_init(&g.uniqueid, uniqueid_start);

    channel_t *chans = calloc((size_t)g.channels, sizeof *chans);
    if (!chans) die("out of memory");
    if (pthread_barrier_init(&g.ready, NULL, (unsigned)g.channels + 1) ||
        pthread_barrier_init(&g.go, NULL, (unsigned)g.channels + 1))
        die("pthread_barrier_init failed");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    for (int n = 0; n < g.channels; n++) {
        channel_t *ch = &chans[n];
        ch->index = n;
        ch->login = g.logins[(size_t)n % g.n_logins];
        ch->conn.fd = -1;
        rng_seed(&ch->rng, g.seed * 100003ULL + (uint64_t)n); /* as _drive seeds its channels */
        int err = pthread_create(&ch->thread, &attr, channel_main, ch);
        if (err) die("pthread_create (channel %d): %s", n, strerror(err));
    }
    pthread_attr_destroy(&attr);
    pthread_barrier_wait(&g.ready); /* every thread is up */
    double started = mono_s();
    g.deadline = started + g.seconds;
    pthread_barrier_wait(&g.go);
    for (int n = 0; n < g.channels; n++) pthread_join(chans[n].thread, NULL);
    double seconds = mono_s() - started;

    /* merge the channels */
    long pairs = 0, late = 0;
    kind_count *kinds = NULL;
    int n_kinds = 0;
    for (int n = 0; n < g.channels; n++) {
        pairs += chans[n].pairs;
        late += chans[n].late;
        for (int k = 0; k < chans[n].n_kinds; k++) {
            int j = 0;
            while (j < n_kinds && strcmp(kinds[j].kind, chans[n].kinds[k].kind) != 0) j++;
            if (j == n_kinds) {
                kinds = xrealloc(kinds, (size_t)(n_kinds + 1) * sizeof *kinds);
                kinds[n_kinds++] = chans[n].kinds[k];
            } else {
                kinds[j].count += chans[n].kinds[k].count;
            }
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double sys_s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;

    FILE *out = stdout;
    fprintf(out, "{\"mode\": \"%s\", \"channels\": %d, \"rate\": %.6g, \"pairs\": %ld, \"seconds\": %.6f, "
                 "\"late\": %ld, \"cpu_s\": %.6f, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, "
                 "\"next_uniqueid\": %llu, \"errors\": {",
            mode, g.channels, g.rate, pairs, seconds, late, user_s + sys_s, user_s, sys_s,
            (unsigned long long)atomic_load(&g.uniqueid));
    for (int k = 0; k < n_kinds; k++) {
        fputs(k ? ", " : "", out);
        json_string(out, kinds[k].kind);
        fprintf(out, ": %ld", kinds[k].count);
    }
    fputs("}", out);
    const char *names[2] = {"prepare_ms", "finish_ms"};
    for (int which = 0; which < 2; which++) {
        fprintf(out, ", \"%s\": [", names[which]);
        int first = 1;
        for (int n = 0; n < g.channels; n++) {
            dvec *d = which ? &chans[n].finish_ms : &chans[n].prepare_ms;
            for (size_t i = 0; i < d->n; i++) {
                fprintf(out, first ? "%.3f" : ", %.3f", d->v[i]);
                first = 0;
            }
        }
        fputs("]", out);
    }
    fputs("}\n", out);
    if (fflush(out) != 0) die("writing the result: %s", strerror(errno));
    return 0;
}
