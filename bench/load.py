"""The load client: N channels doing callPrepare + callFinish pairs against `callgate serve`.

    .venv/bin/python -m bench.load --channels 200 --seconds 10 --repeats 5 --workers 1,2 \\
        --modes fastagi,http,script --script-channels 20 --json /tmp/bench.json

It provisions a fresh `callgate_bench` database (bench/world.py), starts `callgate serve`
as a child process on free loopback ports (PostgreSQL + Redis, CALLGATE_WORKERS from
--workers), waits for /healthz, runs every mode for --seconds, --repeats times, interleaved
(fastagi, http, script, fastagi, http, script, …), stops the server and prints the tables
(medians over the repeats) for docs/performance.md. Several --workers counts (or
--experiment variants) are interleaved too: a fresh server per repeat and configuration.

A channel plays one Asterisk channel in a loop: callPrepare (its own user's extension as
login, a random destination among the tariff's directions, a fresh uniqueid, prior=1), then
callFinish for the same call (ANSWER, a random length up to min(maxtime, 120) s, answered_ms,
cause 16). A pair counts when both answers are right (Allowed, then Saved); anything else is
an error, counted by kind. Latency of a decision = what Asterisk waits: from connect to the
server closing the session (fastagi), request to full response (http), process start to
process exit (script). By default channels run back to back (closed loop: the throughput
is the server's maximum, and latency = channels / decisions per second); --rate R paces
them to R pairs/s in total (each channel one pair every channels/R s from a random phase; a
channel still busy when its next pair is due starts it as soon as it is free).

Clients: by default (`--client c`) the fastagi and http modes are played by bench/agi_load.c,
compiled with `cc` into the run's temp directory: like Asterisk, C with one thread per channel
doing blocking I/O, so the load costs the server's two CPUs far less than asyncio does
(`--client python` keeps the asyncio clients below; script mode is always Python). The C
client gets the logins and ~20,000 destinations drawn as the Python channels draw theirs,
runs every channel the same way, and reports the same numbers as JSON; its CPU counts in
the `client` group.

Modes:
- fastagi: the wire protocol as Asterisk speaks it — env block, then one command at a time,
  answering `200 result=0` to `EXEC MSet` and `200 result=1` to `SET VARIABLE`, until the
  server closes. The env block goes out in one write (res_agi.c writes a line per write(2);
  the bytes are the same). `--fastagi-client sim` uses tests/asterisk_sim.run_agi_session
  instead (with its artificial pauses turned off); it costs ~1.5x the client CPU per pair.
- http: the same pairs through the HTTP shim, aiohttp keep-alive, connector limit = channels,
  with callgate's extra `call_id` argument pairing the two requests.
- script: process per decision, like Asterisk's AGI() running a local script: the client
  starts `python bench/agi_script.py`, writes an env block with agi_arg_N to its stdin and
  answers its commands on stdout until it exits. The script asks the HTTP shim (urllib).

Where the time goes, per run: CPU seconds from /proc of the client (and its reaped script
children), the callgate processes, the PostgreSQL backends serving the bench database, the
other PostgreSQL processes (WAL writer, checkpointer …), redis-server, and "other" (all the
rest of the machine's busy time: other users' jobs, kernel threads — the noise), plus the
PostgreSQL transactions per pair (pg_stat_database). `--experiment` serves callgate with
patches that measure a part of it (see EXPERIMENTS: `constant` gives the transport's floor, no
decision made); `--driver-overhead N`
times one ledger-shaped transaction through SQLAlchemy Core and through asyncpg.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp

from bench.world import BenchWorld, Direction, pg_names, provision
from billing_core.catalog.registry import TextAnswer
from billing_core.config import Settings
from billing_core.ledger.pg_call_ledger import asyncpg_dsn
from fastagi.asterisk_parse import agi_shell_split, mset_decode

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
AGI_SCRIPT: Final = PROJECT_ROOT / "bench" / "agi_script.py"
C_CLIENT_SOURCE: Final = PROJECT_ROOT / "bench" / "agi_load.c"
CLIENTS: Final = ("c", "python")
C_CLIENT_MODES: Final = ("fastagi", "http")  # what the C client plays; script mode is always Python
C_DESTINATIONS: Final = 20_000  # destinations drawn for each C run; its channels pick among them
HOST: Final = "127.0.0.1"
# The Unix socket: PostgreSQL on the same host costs less per statement than over loopback TCP
# (docs/performance.md). Pass --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/… for TCP.
DEFAULT_DATABASE_URL: Final = "postgresql+asyncpg://postgres@/callgate_bench?host=/var/run/postgresql"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/3"
MODES: Final = ("fastagi", "http", "script")
DECISION_TIMEOUT_S: Final = 15.0
HEALTH_WAIT_S: Final = 60.0
STOP_WAIT_S: Final = 15.0
MAX_LENGTH_S: Final = 120
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


class DecisionError(Exception):
    """A wrong or missing answer; the message is the error's kind (counted, not raised on)."""


# --- one decision per transport ---------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    login: str
    destination: str
    uniqueid: str


@dataclass(frozen=True)
class Answer:
    result: str
    maxtime: int = 0
    error: str = ""  # CALLGATE_ERROR (E_…) of a declined or failed answer

    def kind(self, method: str) -> str:
        """How an unexpected answer is counted: `callPrepare Declined E_SQL_ERROR`."""
        return " ".join(part for part in (method, self.result or "no result", self.error) if part)


def _env_lines(request: str, uniqueid: str, login: str, *, network: bool) -> list[str]:
    """The env block res_agi.c writes (FastAGI adds agi_network and agi_network_script)."""
    lines = ["agi_network: yes", f"agi_network_script: {request}"] if network else []
    lines += [
        f"agi_request: {'agi://' + HOST + '/' if network else ''}{request}",
        f"agi_channel: PJSIP/{login}-0000{uniqueid[-4:]}",
        "agi_language: en",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}",
        "agi_version: 22.0.0",
        f"agi_callerid: {login}",
        "agi_calleridname: bench",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: unknown",
        "agi_rdnis: unknown",
        "agi_context: callgate-outbound",
        "agi_extension: s",
        "agi_priority: 1",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140000000000000",
    ]
    return lines


def _prepare_args(call: Call) -> dict[str, str]:
    return {"login": call.login, "destination": call.destination, "callerid": call.login, "prior": "1"}


def _finish_args(call: Call, length_s: int) -> dict[str, str]:
    return {
        "login": call.login, "destination": call.destination, "callerid": call.login, "prior": "1",
        "length": str(length_s), "answered_ms": str(length_s * 1000), "status": "ANSWER", "cause": "16",
    }  # fmt: skip


def _agi_answer(variables: dict[str, str]) -> Answer:
    result = variables.get("CALLGATE_RESULT", "")
    maxtime = variables.get("CALLGATE_MAXTIME", "")
    return Answer(result, int(maxtime) if maxtime.isdigit() else 0, variables.get("CALLGATE_ERROR", ""))


_MSET: Final = 'EXEC MSet "'
_MSET_SPECIAL: Final = frozenset('\\()[]"')


def _mset_pairs(command: str) -> list[tuple[str, str]]:
    """What Asterisk's MSet stores. Fast path when the data has nothing MSet or parse_args
    would treat specially (callgate escapes those with a backslash, so their absence means a
    plain comma list); anything else goes through the ports of Asterisk's parsers."""
    data = command[len(_MSET) : -1]
    if command.startswith(_MSET) and command.endswith('"') and _MSET_SPECIAL.isdisjoint(data):
        pairs = []
        for entry in data.split(","):
            name, sep, value = entry.partition("=")
            if sep:
                pairs.append((name, value))
        return pairs
    argv = agi_shell_split(command)
    return mset_decode(argv[2] if len(argv) > 2 else "")


def _reply_to(command: str, variables: dict[str, str]) -> bytes:
    """Asterisk's reply to one command, and what it stores on the channel."""
    head = command[:12].upper()
    if head.startswith("EXEC MSET"):
        variables.update(_mset_pairs(command))
        return b"200 result=0\n"
    if head == "SET VARIABLE":
        argv = agi_shell_split(command)
        if len(argv) != 4:
            return b"520 Invalid command syntax.  Proper usage not available.\n"
        variables[argv[2]] = argv[3]
        return b"200 result=1\n"
    if head.startswith("VERBOSE"):
        return b"200 result=1\n"
    return b"510 Invalid or unknown command\n"


class _AGIChannel(asyncio.Protocol):
    """Asterisk's side of one FastAGI session: the env block, then one reply per command line,
    until the server closes. A protocol rather than streams: the client shares the two CPUs
    with the server, so every microsecond it saves is the server's."""

    def __init__(self, env: bytes, done: asyncio.Future[dict[str, str]]) -> None:
        self.env = env
        self.done = done
        self.buffer = b""
        self.variables: dict[str, str] = {}
        self.transport: Any = None  # uvloop's transports do not subclass asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.write(self.env)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\n")) >= 0:
            line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
            self.transport.write(_reply_to(line.decode("utf-8", "replace"), self.variables))

    def eof_received(self) -> bool:
        return False  # the server closed: so do we

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is not None:
            self.done.set_exception(exc)
        else:
            self.done.set_result(self.variables)


async def fastagi_decision(port: int, script: str, args: dict[str, str], call: Call) -> Answer:
    """One FastAGI session, played like Asterisk (lean client): done when the server closes."""
    request = f"{script}?{urlencode(args, quote_via=quote)}"
    env = "".join(f"{line}\n" for line in _env_lines(request, call.uniqueid, call.login, network=True)) + "\n"
    loop = asyncio.get_running_loop()
    done: asyncio.Future[dict[str, str]] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _AGIChannel(env.encode(), done), HOST, port)
    try:
        variables = await done
    finally:
        transport.close()
    return _agi_answer(variables)


async def sim_decision(port: int, script: str, args: dict[str, str], call: Call) -> Answer:
    """The same session through the test suite's Asterisk simulator (no artificial pauses)."""
    from tests.asterisk_sim import run_agi_session

    result = await run_agi_session(
        HOST, port, script, query=urlencode(args, quote_via=quote), uniqueid=call.uniqueid, callerid=call.login,
        split_env=False, pipeline_grace_s=0.0, timeout_s=DECISION_TIMEOUT_S,
    )  # fmt: skip
    return _agi_answer(result.variables)


def _plain_answer(body: str) -> Answer:
    words = body.split()
    if not words:
        return Answer("")
    maxtime = int(words[1]) if words[0] == "Allowed" and len(words) > 1 and words[1].isdigit() else 0
    error = words[1] if words[0] == "Declined" and len(words) > 1 else ""
    return Answer(words[0], maxtime, error)


def _envelope_code(body: str) -> str:
    """The E_* code of an error answer: a JSON envelope, or a plain one (the code alone)."""
    try:
        envelope = json.loads(body)
    except ValueError:
        word = body.strip()
        return word if word.startswith("E_") and " " not in word else ""
    return str(envelope.get("response", "")) if isinstance(envelope, dict) else ""


async def http_decision(session: aiohttp.ClientSession, api: str, method: str, args: dict[str, str]) -> Answer:
    async with session.get(f"{api}/{method}", params=args) as response:
        body = await response.text()
        if response.status != 200:
            raise DecisionError(f"{method} http {response.status} {_envelope_code(body)}".rstrip())
    return _plain_answer(body)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill our own child (by its handle) if it is still running, and wait for it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def script_decision(api: str, method: str, args: dict[str, str], call: Call) -> Answer:
    """Asterisk's AGI() with a local script: a fresh interpreter for this one decision."""
    argv = [method, *(f"{k}={v}" for k, v in args.items())]
    lines = _env_lines(str(AGI_SCRIPT), call.uniqueid, call.login, network=False)
    lines += [f"agi_arg_{i}: {arg}" for i, arg in enumerate(argv, 1)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(AGI_SCRIPT), *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "CALLGATE_SCRIPT_API": api}, cwd=str(PROJECT_ROOT),
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    variables: dict[str, str] = {}
    try:
        proc.stdin.write(("".join(f"{line}\n" for line in lines) + "\n").encode())
        while line := await proc.stdout.readline():
            proc.stdin.write(_reply_to(line.decode("utf-8", "replace").rstrip("\n"), variables))
        await proc.wait()
    finally:
        await _reap(proc)
    if proc.returncode != 0:
        raise DecisionError(f"script exit {proc.returncode}")
    return _agi_answer(variables)


# --- channels ---------------------------------------------------------------------------------


Decide = Callable[[str, dict[str, str], Call], Awaitable[Answer]]


@dataclass
class RunStats:
    mode: str
    channels: int
    repeat: int
    rate: float = 0.0  # offered pairs/s over all channels; 0 = closed loop (as fast as answered)
    workers: int = 1
    server: str = "1w"  # workers, plus the experiment patches applied, if any
    seconds: float = 0.0
    pairs: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    prepare_ms: list[float] = field(default_factory=list)
    finish_ms: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0  # share of both CPUs busy (all processes) during the run
    late: int = 0  # paced runs: pairs that started more than one interval after they were due
    pg_xacts: int = 0  # PostgreSQL transactions (commits + rollbacks) on the bench database
    client: str = "python"  # who played the channels: "c" (bench/agi_load.c) or "python"

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "channels": self.channels,
            "rate": self.rate,
            "workers": self.workers,
            "server": self.server,
            "client": self.client,
            "repeat": self.repeat,
            "seconds": round(self.seconds, 3),
            "pairs": self.pairs,
            "pairs_per_s": round(self.pairs / self.seconds, 1) if self.seconds else 0.0,
            "prepare_p50_ms": _pct(self.prepare_ms, 50),
            "prepare_p99_ms": _pct(self.prepare_ms, 99),
            "finish_p50_ms": _pct(self.finish_ms, 50),
            "finish_p99_ms": _pct(self.finish_ms, 99),
            "decisions": len(self.prepare_ms) + len(self.finish_ms),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()},
            "cpu_ms_per_pair": {k: round(1000 * v / self.pairs, 3) if self.pairs else None
                                for k, v in self.cpu_s.items()},
            "machine_busy": round(self.machine_busy, 3),
            "pg_xacts_per_pair": round(self.pg_xacts / self.pairs, 2) if self.pairs else None,
            "other_load_cores": round(self.cpu_s.get("other", 0.0) / self.seconds, 2) if self.seconds else None,
            "late_starts": self.late,
        }  # fmt: skip


def _pct(values: Sequence[float], pct: float) -> float | None:
    """Percentile with linear interpolation (values in ms)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 2)


class Uniqueids:
    """Asterisk-style uniqueids (`<epoch>.<n>`), fresh for every call of the process."""

    def __init__(self) -> None:
        self.epoch = int(time.time())
        self.next = 0

    def __call__(self) -> str:
        self.next += 1
        return f"{self.epoch}.{self.next}"


async def _timed(decide: Decide, method: str, args: dict[str, str], call: Call, out: list[float]) -> Answer:
    started = time.perf_counter()
    async with asyncio.timeout(DECISION_TIMEOUT_S):
        answer = await decide(method, args, call)
    out.append((time.perf_counter() - started) * 1000)
    return answer


async def _channel(
    decide: Decide, login: str, dirs: Sequence[Direction], rng: random.Random, ids: Uniqueids,
    deadline: float, stats: RunStats, interval_s: float,
) -> None:  # fmt: skip
    """Pairs back to back (interval 0), or one pair every interval_s from a random phase; a
    channel still busy when its next pair is due starts it late (a channel carries one call)."""
    due = time.perf_counter() + rng.uniform(0, interval_s)
    while (now := time.perf_counter()) < deadline:
        if interval_s:
            if due > now:
                if due >= deadline:
                    return  # the next pair would start after the run
                await asyncio.sleep(due - now)
            elif now - due > interval_s:
                stats.late += 1
            due += interval_s
        call = Call(login, rng.choice(dirs).number(rng), ids())
        try:
            prepared = await _timed(decide, "callPrepare", _prepare_args(call), call, stats.prepare_ms)
            if prepared.result != "Allowed":
                raise DecisionError(prepared.kind("callPrepare"))
            length = rng.randint(0, min(prepared.maxtime, MAX_LENGTH_S))
            finished = await _timed(decide, "callFinish", _finish_args(call, length), call, stats.finish_ms)
            if finished.result != "Saved":
                raise DecisionError(finished.kind("callFinish"))
            stats.pairs += 1
        except DecisionError as exc:
            stats.errors[str(exc)] += 1
        except TimeoutError:
            stats.errors["timeout"] += 1
        except (OSError, aiohttp.ClientError) as exc:
            stats.errors[type(exc).__name__] += 1
            await asyncio.sleep(0.05)  # a refused connection must not spin the loop


# --- CPU accounting from /proc ----------------------------------------------------------------


def _proc_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        parent = _ppid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _group_of(pid: int, server_pids: set[int], database: str) -> str | None:
    if pid in server_pids:
        return "callgate"
    cmd = _cmdline(pid)
    if cmd.startswith("postgres"):
        return "postgres_bench" if f" {database} " in cmd else "postgres_other"
    if cmd.startswith("redis-server") or cmd.startswith("/usr/bin/redis-server"):
        return "redis"
    return None


def cpu_snapshot(server_root: int, database: str) -> dict[tuple[str, int], float]:
    server_pids = set(descendants(server_root))
    snap: dict[tuple[str, int], float] = {}
    for pid in _all_pids():
        group = _group_of(pid, server_pids, database)
        if group is not None and (cpu := _proc_cpu(pid)) is not None:
            snap[(group, pid)] = cpu
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children only: the AGI scripts
    snap[("client", 0)] = own.ru_utime + own.ru_stime
    snap[("scripts", 0)] = kids.ru_utime + kids.ru_stime
    return snap


def cpu_delta(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]) -> dict[str, float]:
    groups: dict[str, float] = {}
    for key, value in after.items():
        groups[key[0]] = groups.get(key[0], 0.0) + value - before.get(key, 0.0)
    return groups


def children_cpu() -> float:
    """CPU seconds of this process's reaped children so far (what `scripts` counts)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


# --- the C client (bench/agi_load.c) -----------------------------------------------------------


def compile_c_client(workdir: Path) -> Path:
    """Build bench/agi_load.c into workdir (once per bench run); the binary's path."""
    cc = shutil.which("cc")
    if cc is None:
        raise SystemExit("no C compiler (cc) on PATH for the C load client: install gcc or use --client python")
    binary = workdir / "agi_load"
    command = [cc, "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(binary), str(C_CLIENT_SOURCE)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return binary


def c_client_command(
    binary: Path, mode: str, port: int, channels: int, seconds: float, rate: float, *, seed: int, key: str = "",
    uniqueid_prefix: str, uniqueid_start: int, logins: Path, destinations: Path,
) -> list[str]:  # fmt: skip
    return [
        str(binary), "--mode", mode, "--host", HOST, "--port", str(port), "--key", key,
        "--channels", str(channels), "--seconds", repr(seconds), "--rate", repr(rate), "--seed", str(seed),
        "--uniqueid-prefix", uniqueid_prefix, "--uniqueid-start", str(uniqueid_start),
        "--logins", str(logins), "--destinations", str(destinations),
    ]  # fmt: skip


def read_c_report(text: str, stats: RunStats) -> int:
    """The C client's JSON into stats (pairs, errors, latencies, late, seconds); returns the
    uniqueid counter it stopped at."""
    report = json.loads(text)
    stats.pairs = int(report["pairs"])
    stats.seconds = float(report["seconds"])
    stats.late = int(report["late"])
    stats.errors.update({str(kind): int(count) for kind, count in report["errors"].items()})
    stats.prepare_ms = [float(v) for v in report["prepare_ms"]]
    stats.finish_ms = [float(v) for v in report["finish_ms"]]
    return int(report["next_uniqueid"])


PG_STATS_SETTLE_S: Final = 1.2  # backends report their counters at most once a second when busy


async def pg_transactions(database_url: str, *, settle_s: float = 0.0) -> int:
    """Commits + rollbacks so far on the bench database (pg_stat_database); -1 when not PostgreSQL."""
    import asyncpg  # type: ignore[import-untyped]

    if not database_url.startswith("postgresql"):
        return -1
    admin_dsn, database = pg_names(database_url)
    if settle_s:
        await asyncio.sleep(settle_s)
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return -1
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1", database
        )
        return int(value or 0)
    finally:
        await conn.close()


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# --- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    agi_port: int
    http_port: int
    log_path: Path

    async def wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_WAIT_S
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"callgate serve exited ({self.proc.returncode}); see {self.log_path}")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(f"http://{HOST}:{self.http_port}/healthz", timeout=aiohttp.ClientTimeout(
                            total=2)) as response:
                        if response.status == 200 and await self._agi_listening():
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"callgate serve not healthy within {HEALTH_WAIT_S:.0f} s; see {self.log_path}")

    async def _agi_listening(self) -> bool:
        try:
            _, writer = await asyncio.open_connection(HOST, self.agi_port)
        except OSError:
            return False
        writer.close()
        return True

    def events(self) -> Counter[str]:
        """The server's log lines (warning and up by default) counted by event name."""
        return Counter(_event_of(line) for line in self.log_path.read_text(errors="replace").splitlines())

    def samples(self) -> dict[str, str]:
        """The first line of each event, and the first lines that are not JSON (tracebacks)."""
        found: dict[str, str] = {}
        odd: list[str] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            event = _event_of(line)
            if event == "(not json)":
                if len(odd) < 40:
                    odd.append(line[:300])
            elif event not in found:
                found[event] = line[:600]
        if odd:
            found["(not json)"] = "\n".join(odd)
        return found

    def stop(self) -> int | None:
        """SIGTERM (workers finish their sessions), then SIGKILL after a bound."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                for pid in reversed(descendants(self.proc.pid)):  # our server's own processes only
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def start_server(
    settings: Settings, log_path: Path, workers: int, log_level: str, command: Sequence[str]
) -> Server:
    env = {
        **os.environ,
        "CALLGATE_DATABASE_URL": settings.database_url,
        "CALLGATE_REDIS_URL": settings.redis_url or "",
        "CALLGATE_AGI_LISTEN": f"{HOST}:{settings.agi_port}",
        "CALLGATE_HTTP_LISTEN": f"{HOST}:{settings.http_port}",
        "CALLGATE_WORKERS": str(workers),
        "CALLGATE_LOG_LEVEL": log_level,
        "CALLGATE_SECRET_FILE": settings.secret_file,
        "CALLGATE_SPOOL_DIR": settings.spool_dir,
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(command), env=env, cwd=str(PROJECT_ROOT), stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(proc, settings.agi_port, settings.http_port, log_path)


# --- runs -------------------------------------------------------------------------------------


@dataclass
class Bench:
    world: BenchWorld
    server: Server
    database_url: str
    fastagi_client: str
    workers: int
    variant: str
    ids: Uniqueids = field(default_factory=Uniqueids)
    seed: int = 1
    c_client: Path | None = None  # the compiled bench/agi_load.c, for runs with client "c"

    @property
    def database_name(self) -> str:
        return pg_names(self.database_url)[1]  # also for a Unix-socket URL (…/db?host=/run/…)

    def api(self) -> str:
        return f"http://{HOST}:{self.server.http_port}/billing/api/2.2/{self.world.http_key}"

    async def run(
        self, mode: str, channels: int, seconds: float, repeat: int, rate: float = 0.0, client: str = "python"
    ) -> RunStats:
        """One run; client "c" plays fastagi and http with the C client (script mode is Python)."""
        label = f"{self.workers}w" + ("" if self.variant == "none" else f" {self.variant}")
        stats = RunStats(mode, channels, repeat, rate, self.workers, label)
        if client == "c" and mode in C_CLIENT_MODES:
            if self.c_client is None:
                raise ValueError("the C client was not compiled for this bench")
            stats.client = "c"
            await self._drive_c(self.c_client, mode, channels, seconds, stats)
        elif mode == "http":
            connector = aiohttp.TCPConnector(limit=channels, limit_per_host=channels)
            async with aiohttp.ClientSession(connector=connector) as session:
                api = self.api()
                # `call_id` pairs callFinish with its callPrepare's hold, as agi_uniqueid does
                await self._drive(
                    lambda m, a, c: http_decision(session, api, m, {**a, "call_id": c.uniqueid}),
                    channels, seconds, stats,
                )  # fmt: skip
        elif mode == "fastagi":
            port = self.server.agi_port
            agi = sim_decision if self.fastagi_client == "sim" else fastagi_decision
            await self._drive(lambda m, a, c: agi(port, m, a, c), channels, seconds, stats)
        elif mode == "script":
            api = self.api()
            await self._drive(lambda m, a, c: script_decision(api, m, a, c), channels, seconds, stats)
        else:
            raise ValueError(f"unknown mode {mode}")
        return stats

    async def _drive(self, decide: Decide, channels: int, seconds: float, stats: RunStats) -> None:
        """The channels as asyncio tasks in this process."""
        exts = self.world.extensions
        dirs = self.world.directions
        self.seed += 1
        interval_s = channels / stats.rate if stats.rate else 0.0

        async def load() -> float:
            started = time.perf_counter()
            deadline = started + seconds
            async with asyncio.TaskGroup() as tasks:
                for n in range(channels):
                    rng = random.Random(self.seed * 100_003 + n)
                    login = exts[n % len(exts)]
                    tasks.create_task(_channel(decide, login, dirs, rng, self.ids, deadline, stats, interval_s))
            stats.seconds = time.perf_counter() - started
            return 0.0  # no child of ours is part of the client

        await self._measured(stats, load)

    async def _drive_c(self, binary: Path, mode: str, channels: int, seconds: float, stats: RunStats) -> None:
        """The channels as threads of the C client: one process for the whole run."""
        self.seed += 1
        rng = random.Random(self.seed)
        dirs = self.world.directions
        logins, destinations = binary.parent / "logins.txt", binary.parent / "destinations.txt"
        logins.write_text("".join(f"{ext}\n" for ext in self.world.extensions))
        destinations.write_text("".join(f"{rng.choice(dirs).number(rng)}\n" for _ in range(C_DESTINATIONS)))
        port, key = (self.server.agi_port, "") if mode == "fastagi" else (self.server.http_port, self.world.http_key)
        command = c_client_command(
            binary, mode, port, channels, seconds, stats.rate, seed=self.seed, key=key,
            uniqueid_prefix=f"{self.ids.epoch}.", uniqueid_start=self.ids.next, logins=logins,
            destinations=destinations,
        )  # fmt: skip
        # a channel may still be in its last pair at the deadline: two decisions of up to 15 s each
        bound_s = seconds + 2 * DECISION_TIMEOUT_S + 30
        report = ""

        async def load() -> float:
            nonlocal report
            reaped = children_cpu()
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                out, err = await asyncio.wait_for(proc.communicate(), bound_s)
            except TimeoutError:
                raise RuntimeError(f"the C client did not finish within {bound_s:.0f} s: {' '.join(command)}") from None
            finally:
                await _reap(proc)
            if proc.returncode != 0:
                raise RuntimeError(f"the C client exited {proc.returncode}: {err.decode(errors='replace').strip()}")
            report = out.decode()
            return children_cpu() - reaped  # the C client, reaped inside the window

        await self._measured(stats, load)
        self.ids.next = read_c_report(report, stats)

    async def _measured(self, stats: RunStats, load: Callable[[], Awaitable[float]]) -> None:
        """Run `load` inside the accounting window: PostgreSQL transactions, CPU by process
        group, the machine's busy share. `load` returns the CPU seconds of children it reaped
        that were the client itself (the C client): RUSAGE_CHILDREN counts them under
        `scripts`, they move to `client`."""
        xacts0 = await pg_transactions(self.database_url)
        before = cpu_snapshot(self.server.proc.pid, self.database_name)
        busy0, total0 = machine_ticks()
        client_children_s = await load()
        busy1, total1 = machine_ticks()
        stats.cpu_s = cpu_delta(before, cpu_snapshot(self.server.proc.pid, self.database_name))
        if client_children_s:
            stats.cpu_s["scripts"] = max(stats.cpu_s.get("scripts", 0.0) - client_children_s, 0.0)
            stats.cpu_s["client"] = stats.cpu_s.get("client", 0.0) + client_children_s
        stats.machine_busy = (busy1 - busy0) / max(total1 - total0, 1)
        # everything else on the machine (other sessions, the kernel's own threads): the noise
        busy_s = (busy1 - busy0) / CLK_TCK
        stats.cpu_s["other"] = max(busy_s - sum(stats.cpu_s.values()), 0.0)
        stats.pg_xacts = await pg_transactions(self.database_url, settle_s=PG_STATS_SETTLE_S) - xacts0


def run_plan(args: argparse.Namespace, modes: Sequence[str]) -> list[tuple[str, int, float, str]]:
    """(mode, channels, offered rate, client) of one repeat, interleaved: for each rate and
    channel count, every mode in turn, each with every client (--client). Script mode runs
    once per rate, at min(max channels, its cap), always with the Python client."""
    plan: list[tuple[str, int, float, str]] = []
    for rate in args.rate:
        for channels in args.channels:
            for mode in modes:
                if mode == "script":
                    if channels == max(args.channels):
                        plan.append((mode, min(channels, args.script_channels), rate, "python"))
                else:
                    plan.extend((mode, channels, rate, client) for client in args.client)
    return plan


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def _key(run: dict[str, Any]) -> tuple[str, str, int, float, str]:
    return run["server"], run["mode"], run["channels"], run["rate"], run["client"]


def aggregate(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over the repeats of each (server, mode, channels, offered rate, client)."""
    keys: list[tuple[str, str, int, float, str]] = []
    for run in runs:
        if _key(run) not in keys:
            keys.append(_key(run))
    rows = []
    for key in keys:
        mine = [r for r in runs if _key(r) == key]
        cpu_groups = sorted({g for r in mine for g in r["cpu_ms_per_pair"]})
        rows.append({
            "server": key[0],
            "mode": key[1],
            "channels": key[2],
            "rate": key[3],
            "client": key[4],
            "repeats": len(mine),
            "pairs_per_s": _median([r["pairs_per_s"] for r in mine]),
            "pairs_per_s_all": [r["pairs_per_s"] for r in mine],
            "prepare_p50_ms": _median([r["prepare_p50_ms"] for r in mine]),
            "prepare_p99_ms": _median([r["prepare_p99_ms"] for r in mine]),
            "finish_p50_ms": _median([r["finish_p50_ms"] for r in mine]),
            "finish_p99_ms": _median([r["finish_p99_ms"] for r in mine]),
            "errors": sum(r["errors"] for r in mine),
            "error_kinds": dict(sum((Counter(r["error_kinds"]) for r in mine), Counter())),
            "late_starts": sum(r["late_starts"] for r in mine),
            "cpu_ms_per_pair": {g: _median([r["cpu_ms_per_pair"].get(g) for r in mine]) for g in cpu_groups},
            "machine_busy": _median([r["machine_busy"] for r in mine]),
            "pg_xacts_per_pair": _median([r["pg_xacts_per_pair"] for r in mine]),
            "other_load_cores": _median([r["other_load_cores"] for r in mine]),
            "other_load_cores_all": [r["other_load_cores"] for r in mine],
        })  # fmt: skip
    return rows


def ratios(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per repeat, (server, rate) group and client: every mode's pairs/s over fastagi's (same
    client), in that repeat. A script run (capped channels, Python) is compared with the fastagi
    run of the largest channel count of each client."""
    out = []
    top = max((r["channels"] for r in runs), default=0)
    groups = sorted({(r["repeat"], r["server"], r["rate"]) for r in runs})
    for repeat, server, rate in groups:
        mine = [r for r in runs if (r["repeat"], r["server"], r["rate"]) == (repeat, server, rate)]
        for base in [r for r in mine if r["mode"] == "fastagi" and r["channels"] == top]:
            if not base["pairs_per_s"]:
                continue
            others = [
                r for r in mine
                if r["mode"] == "script" or (r["mode"] != "fastagi" and r["channels"] == top
                                             and r["client"] == base["client"])
            ]  # fmt: skip
            if not others:
                continue
            row = {"repeat": repeat, "server": server, "rate": rate, "channels": top, "client": base["client"],
                   "fastagi": 1.0}  # fmt: skip
            row |= {r["mode"]: round(r["pairs_per_s"] / base["pairs_per_s"], 4) for r in others}
            out.append(row)
    return out


def _offered(rate: float) -> str:
    return f"{rate:g}" if rate else "max"


def render(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        "| server | mode | client | channels | offered pairs/s | pairs/s (median) | pairs/s (each repeat) | "
        "callPrepare p50 / p99 ms | callFinish p50 / p99 ms | errors | other load (cores, each repeat) |\n"
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---|\n"
    )
    lines = [
        f"| {r['server']} | {r['mode']} | {r['client']} | {r['channels']} | {_offered(r['rate'])} | "
        f"{r['pairs_per_s']} | "
        f"{', '.join(str(v) for v in r['pairs_per_s_all'])} | "
        f"{r['prepare_p50_ms']} / {r['prepare_p99_ms']} | {r['finish_p50_ms']} / {r['finish_p99_ms']} | "
        f"{r['errors']}{' ' + json.dumps(r['error_kinds']) if r['errors'] else ''} | "
        f"{', '.join(str(v) for v in r['other_load_cores_all'])} |"
        for r in rows
    ]
    groups = ("client", "scripts", "callgate", "postgres_bench", "postgres_other", "redis", "other")
    cpu = (
        "| server | mode | client | channels | offered pairs/s | machine busy | PG transactions | "
        + " | ".join(groups) + " |\n|---|---|---|---:|---:|---:|---:|" + "---:|" * len(groups)
    )
    cpu_lines = [
        f"| {r['server']} | {r['mode']} | {r['client']} | {r['channels']} | {_offered(r['rate'])} | "
        f"{round(100 * (r['machine_busy'] or 0))} % | {r['pg_xacts_per_pair']} | "
        + " | ".join(str(r["cpu_ms_per_pair"].get(g)) for g in groups) + " |"
        for r in rows
    ]
    title = "\n\nPer completed pair (medians over repeats): PostgreSQL transactions, CPU ms by process group:\n\n"
    return header + "\n".join(lines) + title + cpu + "\n" + "\n".join(cpu_lines)


# --- machine ----------------------------------------------------------------------------------


def _run_text(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info(settings: Settings) -> dict[str, Any]:
    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in _run_text(["lscpu"]).splitlines() if line.startswith("Model name")),
        "",
    )
    pg = _run_text(["psql", "-h", HOST, "-U", "postgres", "-tAc", "SHOW server_version"])
    sync = _run_text(["psql", "-h", HOST, "-U", "postgres", "-tAc", "SHOW synchronous_commit"])
    redis_info = _run_text(["redis-cli", "-h", HOST, "info", "server"])
    redis_version = next((line.split(":", 1)[1] for line in redis_info.splitlines()
                          if line.startswith("redis_version")), "")  # fmt: skip
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg,
        "postgresql_synchronous_commit": sync,
        "redis": redis_version.strip(),
        "database_url": settings.database_url,
        "redis_url": settings.redis_url,
    }


def _event_of(line: str) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        return "(not json)"
    return str(record.get("event", "?")) if isinstance(record, dict) else "?"


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --- driver overhead: the same transaction through SQLAlchemy Core and through asyncpg --------------


async def driver_overhead(database_url: str, transactions: int) -> list[dict[str, Any]]:
    """CPU (this process) and wall time per transaction `BEGIN; SELECT balance … FOR UPDATE;
    UPDATE accounts …; COMMIT`, the shape of callgate's ledger work, one at a time:
    through callgate's own engine (SQLAlchemy Core, pool_pre_ping on), the same without
    pre-ping, and through asyncpg directly with prepared statements."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy import select, update

    from billing_core.db.engine import create_engine
    from billing_core.ledger.tables import accounts

    async def measure(name: str, one: Callable[[int], Awaitable[None]]) -> dict[str, Any]:
        for i in range(200):  # warm: pool, statement caches
            await one(i)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(transactions):
            await one(i)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"driver": name, "cpu_us": round(1e6 * cpu / transactions, 1),
                "wall_us": round(1e6 * wall / transactions, 1)}  # fmt: skip

    results = []
    for pre_ping in (True, False):
        engine = create_engine(database_url)
        engine.sync_engine.pool._pre_ping = pre_ping
        async with engine.begin() as conn:
            ids = [row[0] for row in (await conn.execute(select(accounts.c.id).limit(50))).all()]

        async def through_sqlalchemy(i: int, engine: Any = engine, ids: list[int] = ids) -> None:
            account = ids[i % len(ids)]
            async with engine.begin() as conn:
                await conn.execute(select(accounts.c.balance).where(accounts.c.id == account).with_for_update())
                await conn.execute(
                    update(accounts).where(accounts.c.id == account).values(balance=accounts.c.balance + 0)
                )

        label = f"SQLAlchemy Core (callgate's engine), pool_pre_ping={'on' if pre_ping else 'off'}"
        results.append(await measure(label, through_sqlalchemy))
        await engine.dispose()
    raw = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        lock = await raw.prepare("SELECT balance FROM accounts WHERE id = $1 FOR UPDATE")
        change = await raw.prepare("UPDATE accounts SET balance = balance + 0 WHERE id = $1")

        async def through_asyncpg(i: int) -> None:
            account = ids[i % len(ids)]
            async with raw.transaction():
                await lock.fetchrow(account)
                await change.fetch(account)

        results.append(await measure("asyncpg, prepared statements", through_asyncpg))
    finally:
        await raw.close()
    return results


# --- experiments: what would a change to callgate buy? -----------------------------------------

EXPERIMENTS: Final = {
    "constant": "callPrepare and callFinish answer a fixed Allowed / Saved line without the registry, the "
    "cache or the database: what the transport (FastAGI session or HTTP request), the kernel and the "
    "load client cost on their own, the floor under every real decision",
}

# The "constant" experiment's answers: well-formed lines of the spec's forms, as a real
# decision on the bench's data would give them (the load client checks Allowed / Saved).
# Made once: the transports only read them.
_CONSTANT_ANSWERS: Final = {
    "callPrepare": TextAnswer(
        "Allowed 3600 15550001 70001 USA-Canada 1 carrier 0 0", "Allowed",
        fields={"CALLGATE_MAXTIME": "3600", "CALLGATE_DESTINATION": "15550001", "CALLGATE_CALLERID": "70001",
                "CALLGATE_DIRECTION": "USA-Canada", "CALLGATE_ROUTE_PREFIX": "1", "CALLGATE_ROUTE": "carrier",
                "CALLGATE_PITCH_RX": "0", "CALLGATE_PITCH_TX": "0"},
    ),
    "callFinish": TextAnswer(
        "Saved USA-Canada [70001/15550001] via [carrier] 30 0.0050 EUR ANSWER", "Saved",
        fields={"CALLGATE_COST": "0.0050", "CALLGATE_CURRENCY": "EUR"},
    ),
}  # fmt: skip


def apply_experiments(names: Sequence[str]) -> None:
    """Patch callgate in this process before it serves. Measurement only: these patches take
    a part of callgate out to see what the rest costs; they are never part of callgate."""
    if "constant" in names:
        from billing_core.api.dispatch import Dispatcher, Outcome
        from billing_core.catalog.registry import REGISTRY

        real_call = Dispatcher.call
        keys: dict[str | None, Any] = {}  # the HTTP key, looked up once: its answer form is plain text

        async def call(self: Dispatcher, method_name: str, raw: Any, cred: Any, *, form: str | None = None) -> Outcome:
            canned = _CONSTANT_ANSWERS.get(method_name)
            if canned is None or form is not None:
                return await real_call(self, method_name, raw, cred, form=form)
            if cred.apikey not in keys:
                keys[cred.apikey] = (await self._keys(await self.services.cache.generations(), cred))[0]
            await asyncio.sleep(0)  # a real decision yields at least once (the database)
            return Outcome(value=canned, method=REGISTRY.get(method_name), key=keys[cred.apikey])

        Dispatcher.call = call  # type: ignore[method-assign]


def serve_with_experiments(names: Sequence[str]) -> int:
    apply_experiments(names)
    from callgate.cli import main as callgate_main

    return callgate_main(["serve"])


# --- main -------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _float_list(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _client_list(text: str) -> list[str]:
    clients = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not clients or not set(clients) <= set(CLIENTS):
        raise argparse.ArgumentTypeError(f"choose among {', '.join(CLIENTS)} (a comma list)")
    return clients


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=_int_list, default=[200], help="comma list, e.g. 10,50,200 (default 200)")
    p.add_argument("--rate", type=_float_list, default=[0.0],
                   help="offered pairs/s over all channels, comma list; 0 = closed loop, back to back (default 0)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each run (default 10)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every mode (default 3)")
    p.add_argument("--modes", default="fastagi,http,script", help="comma list of fastagi,http,script")
    p.add_argument("--script-channels", type=int, default=20, help="channel cap in script mode (default 20)")
    p.add_argument("--workers", type=_int_list, default=[1],
                   help="CALLGATE_WORKERS, comma list (default 1); several = a fresh server per repeat and count, "
                        "interleaved")
    p.add_argument("--users", type=int, default=0, help="users/extensions to provision (default: max channels)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per mode first (default 2)")
    p.add_argument("--client", type=_client_list, default=["c"],
                   help="who plays the fastagi and http channels: c = bench/agi_load.c, one thread per channel "
                        "like Asterisk, compiled with cc (default); python = the asyncio clients in this process; "
                        "a comma list (c,python) interleaves them against the same server")
    p.add_argument("--fastagi-client", choices=("lean", "sim"), default="lean",
                   help="with --client python: the lean FastAGI client (default) or tests/asterisk_sim")
    p.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument("--server-log-level", default="warning")
    p.add_argument("--synchronous-commit", default=None, choices=("on", "off", "local"),
                   help="set on the bench database (default: the server's setting, normally on)")
    p.add_argument("--serve-command", default=None,
                   help="experiments only: run this instead of `python -m callgate.cli serve` (e.g. a wrapper "
                        "that patches callgate first); CALLGATE_* settings still come from the environment")
    p.add_argument("--experiment", default="",
                   help="comma list of server variants to interleave, each 'none' or patches joined by '+' among "
                        + ", ".join(EXPERIMENTS) + " (e.g. none,constant; one worker only)")
    p.add_argument("--serve-experiment", default=None, help=argparse.SUPPRESS)  # the patched server itself
    p.add_argument("--driver-overhead", type=int, default=0, metavar="N",
                   help="instead of the load: provision, then time N transactions through SQLAlchemy and asyncpg")
    p.add_argument("--json", dest="json_path", default=None, help="write the raw numbers here")
    return p


async def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode}; choose among {', '.join(MODES)}")
    if args.fastagi_client == "sim" and "python" not in args.client and "fastagi" in modes:
        raise SystemExit("--fastagi-client sim is a Python client: add --client python")
    c_client = compile_c_client(workdir) if "c" in args.client and set(modes) & set(C_CLIENT_MODES) else None
    settings = Settings(
        database_url=args.database_url, redis_url=args.redis_url, agi_port=free_port(), http_port=free_port(),
        secret_file=str(workdir / "secret"), spool_dir=str(workdir / "spool"),
    )  # fmt: skip
    users = args.users or max(args.channels)
    load_before = load_average()
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.monotonic()
    world = await provision(settings, users=users, synchronous_commit=args.synchronous_commit)
    print(f"provisioned {users} users in {time.monotonic() - t0:.1f} s; load average {load_before}", flush=True)
    if args.driver_overhead:
        for row in await driver_overhead(settings.database_url, args.driver_overhead):
            print(f"{row['driver']:60s} CPU {row['cpu_us']:8.1f} us/transaction  wall {row['wall_us']:8.1f} us")
        raise SystemExit(0)
    variants = [v.strip() for v in args.experiment.split(",") if v.strip()] or ["none"]
    patches = {p for v in variants for p in v.split("+") if p != "none"}
    if not patches <= set(EXPERIMENTS) or (patches and args.workers != [1]):
        raise SystemExit(f"--experiment takes variants of {', '.join(EXPERIMENTS)} joined by '+', with --workers 1")
    configs = [(workers, variant) for workers in args.workers for variant in variants]

    def command_for(variant: str) -> list[str]:
        if args.serve_command:
            return shlex.split(args.serve_command)
        if variant != "none":
            return [sys.executable, "-m", "bench.load", "--serve-experiment", variant]
        return [sys.executable, "-m", "callgate.cli", "serve"]

    plan = run_plan(args, modes)
    restart = len(configs) > 1  # interleave server configurations too: a fresh server per (repeat, config)
    runs: list[dict[str, Any]] = []
    events: Counter[str] = Counter()
    samples: dict[str, str] = {}
    exit_codes: list[int | None] = []
    bench: Bench | None = None
    starts = 0

    async def start(workers: int, variant: str) -> Bench:
        nonlocal starts
        starts += 1
        log_path = workdir / f"serve-{starts}.log"
        server = start_server(settings, log_path, workers, args.server_log_level, command_for(variant))
        fresh = Bench(world, server, settings.database_url, args.fastagi_client, workers, variant, c_client=c_client)
        if bench is not None:
            fresh.ids, fresh.seed = bench.ids, bench.seed  # uniqueids stay fresh across servers
        await server.wait_healthy()
        print(f"callgate serve pid {server.proc.pid} (workers {workers}, {variant}) agi :{server.agi_port} "
              f"http :{server.http_port}", flush=True)  # fmt: skip
        if args.warmup > 0:
            for mode, channels, rate, client in plan:
                await fresh.run(mode, channels, args.warmup, 0, rate, client)
        return fresh

    def stop(current: Bench) -> None:
        exit_codes.append(current.server.stop())
        events.update(current.server.events())
        for event, line in current.server.samples().items():
            samples.setdefault(f"{current.server.proc.pid} {event}", line)

    try:
        for repeat in range(1, args.repeats + 1):
            for workers, variant in configs:
                if bench is None or restart:
                    bench = await start(workers, variant)
                for mode, channels, rate, client in plan:
                    summary = (await bench.run(mode, channels, args.seconds, repeat, rate, client)).summary()
                    runs.append(summary)
                    print(
                        f"repeat {repeat} {summary['server']} {mode:7s} {summary['client']:6s} ch {channels:4d} "
                        f"offered {_offered(rate):>5s}: "
                        f"{summary['pairs_per_s']:8.1f} pairs/s  "
                        f"prepare p50/p99 {summary['prepare_p50_ms']}/{summary['prepare_p99_ms']} ms  "
                        f"finish p50/p99 {summary['finish_p50_ms']}/{summary['finish_p99_ms']} ms  "
                        f"errors {summary['errors']}  busy {summary['machine_busy']:.0%}  "
                        f"other CPU {summary['cpu_s'].get('other', 0):.1f} s  load {load_average()}",
                        flush=True,
                    )
                if restart:
                    stop(bench)
    finally:
        if bench is not None and bench.server.proc.returncode is None:
            stop(bench)
    return {
        "started": started_at,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "-m", "bench.load", *sys.argv[1:]]),
        "machine": machine_info(settings),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "workers": args.workers,
        "server_exit_codes": exit_codes,
        "client": ",".join(args.client),  # who played fastagi and http; script mode is always Python
        "fastagi_client": args.fastagi_client,
        "synchronous_commit": args.synchronous_commit or "server default",
        "serve_commands": {variant: command_for(variant) for variant in variants},
        "experiments": {name: EXPERIMENTS[name] for name in sorted(patches)},
        "users": users,
        "seconds": args.seconds,
        "server_log_events": dict(events.most_common()),  # warning+ lines of the server, by event
        "server_log_samples": samples,  # per server pid: the first line of each event
        "runs": runs,
        "table": aggregate(runs),
        "ratios_vs_fastagi": ratios(runs),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.serve_experiment is not None:
        return serve_with_experiments(args.serve_experiment.split("+"))
    with tempfile.TemporaryDirectory(prefix="callgate-bench-") as tmp:
        try:
            import uvloop

            report = uvloop.run(run_all(args, Path(tmp)))
        except ImportError:
            report = asyncio.run(run_all(args, Path(tmp)))
    print()
    client = report["client"].replace("python", f"python (fastagi {report['fastagi_client']})")
    print(f"started {report['started']}  ended {report['date']}  workers {report['workers']}  "
          f"client {client}  synchronous_commit {report['synchronous_commit']}")
    for variant, command in report["serve_commands"].items():
        print(f"server {variant}: {' '.join(command)}")
    for name, meaning in report["experiments"].items():
        print(f"experiment {name}: {meaning}")
    print(f"command: {report['command']}")
    print(f"machine: {json.dumps(report['machine'])}")
    print(f"load average before {report['load_average_before']}, after {report['load_average_after']}")
    print()
    print(render(report["table"]))
    print()
    for row in report["ratios_vs_fastagi"]:
        print("pairs/s ratio to fastagi (same client) in the same repeat: "
              + ", ".join(f"{m} {v}" for m, v in row.items()))
    if report["server_log_events"]:
        print(f"\nserver log (level {args.server_log_level}) by event: {json.dumps(report['server_log_events'])}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2, default=list))
        print(f"\nraw numbers: {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
