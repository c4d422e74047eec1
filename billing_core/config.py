"""Settings, read once from the environment at start-up and passed down.

| variable | default | meaning |
|---|---|---|
| CALLGATE_DATABASE_URL | sqlite+aiosqlite:///./callgate.db | SQLAlchemy async URL (postgresql+asyncpg://… in production) |
| CALLGATE_REDIS_URL | (empty) | redis://host:port/db; empty = in-process cache |
| CALLGATE_AGI_LISTEN | 127.0.0.1:4573 | FastAGI listen address |
| CALLGATE_HTTP_LISTEN | 127.0.0.1:8080 | HTTP shim listen address |
| CALLGATE_WORKERS | 1 | processes sharing the ports with SO_REUSEPORT |
| CALLGATE_SECRET_FILE | ./.callgate-secret | key that encrypts stored SIP passwords and PINs (created if missing) |
| CALLGATE_MAX_CALL_S | 14400 | ceiling of any call's max time |
| CALLGATE_RING_TIMEOUT_S | 60 | how long a call may ring: callPrepare answers it as CALLGATE_RINGTIME (Dial's time-out) and a hold lasts it on top of max time + grace |
| CALLGATE_RESERVATION_GRACE_S | 120 | a reservation expires ring time-out + max time + this after callPrepare |
| CALLGATE_BAN_SECONDS | 3600 | how long an IP that used a bad key (or too many wrong passwords) stays banned; 0 = indefinitely (the spec's literal rule) |
| CALLGATE_BAN_WHITELIST | (empty) | comma-separated IP masks that are never banned (the addresses of call-control keys are always whitelisted) |
| CALLGATE_LOGIN_MAX_FAILURES | 5 | wrong passwords for one login (dynamic client keys) before that login is locked out |
| CALLGATE_LOGIN_IP_MAX_FAILURES | 20 | wrong passwords from one address, any login, before the address is banned |
| CALLGATE_LOGIN_LOCKOUT_S | 900 | the window those failures are counted in, and how long a login stays locked |
| CALLGATE_DISA_MAX_FAILURES | 5 | failed DISA logins from one caller ID, or for one extension, before a lock-out |
| CALLGATE_DISA_LOCKOUT_S | 900 | how long that lock-out lasts |
| CALLGATE_FAIL_OPEN_MAX_S | 0 | when the database is down, allow calls for at most this many seconds; 0 = decline |
| CALLGATE_SPOOL_DIR | ./spool | where callFinish keeps CDRs it could not write yet |
| CALLGATE_PLAIN_AUTH_BY | sip_extension,id | key auth methods whose HTTP answers are plain text (config.api_plain_answer) |
| CALLGATE_DB_TIMEOUT_S | 2.0 | bound on one database transaction in a call decision |
| CALLGATE_HTTP_MAX_CONNECTIONS | 1000 | open HTTP connections at most (at most half the file-descriptor limit); more are answered 503 and closed |
| CALLGATE_HTTP_IDLE_TIMEOUT_S | 10 | an HTTP connection without a complete request head for this long (new, or idle between requests) is closed |
| CALLGATE_HTTP_BODY_TIMEOUT_S | 10 | a request body not read completely within this is answered 408 |
| CALLGATE_LOG_LEVEL | info | structlog level |
| CALLGATE_STARTUP_RETRY_MAX_S | 10 | `serve` with the database down: longest pause between migration / warm-up retries (back-off from 0.5 s) |
| CALLGATE_WARM_PROFILES | 1000 | extensions whose extension + user profiles are loaded before the FastAGI port opens; 0 = none |
| CALLGATE_WORKER_MAX_RESTARTS | 10 | worker restarts the supervisor allows within 60 s before it stops `serve` (exit 1) |
| CALLGATE_AMI_ACTION_TIMEOUT_S | 5 | bound on one AMI action (and on the login) to an Asterisk server (docs/ami.md) |
| CALLGATE_AMI_PING_INTERVAL_S | 5 | a Ping to each connected Asterisk this often ... |
| CALLGATE_AMI_PING_TIMEOUT_S | 3 | ... whose Pong must come within this, else the connection is dropped and made again |
| CALLGATE_AMI_RECONNECT_MAX_S | 30 | longest pause between AMI reconnect attempts (back-off from 0.5 s) |
| CALLGATE_AMI_REFRESH_S | 5 | how often `serve` re-reads the Asterisk servers (`callgate asterisk add` and `remove` reach it within this) |
| CALLGATE_DID_RELEASE_GRACE_DAYS | 7 | a rented DID past its expiration and not renewed (its owner could not pay, or auto-renew is off) is released this many days later by the maintenance run |
| CALLGATE_DID_ORDER_HOLD_S | 300 | how long orderDID's hold lasts while the provider is asked (a crashed order's hold lapses after it; the maintenance run closes the order) |
| CALLGATE_RATES_SOURCE | (empty) | where doMaintenance reads exchange rates: a file path or an http(s) URL of JSON `{"USD": 1.08, …}` or CSV `currency,eur_course`; empty = rates unchanged |
| CALLGATE_VCS_APIKEY | (empty) | the client key (access level 0, no default user) the JeraSoft VCS JSON-RPC door at /jsonrpc/ acts through; empty = that door is closed |
| CALLGATE_BILLMGR_APIKEY | (empty) | the same for the BILLmanager door at /billmgr |
| CALLGATE_SESSION_IDLE_S | 3600 | a front-door session (VCS SID, BILLmanager auth=) ends after this long without a request |
| CALLGATE_DIALPLAN_URL_PREFIXES | (empty) | comma-separated URL prefixes (http(s)://host/path/, ending in `/`) updateDialplan and updateInterface may fetch from; empty = none (docs/ami.md) |
| CALLGATE_BILLSEC_ROUNDING | truncate | talk ms -> whole seconds: truncate (Asterisk's CDR billsec), initiatedseconds (cdr.conf's option: >= 500 ms counts), ceiling |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

from billing_core.billsec import DEFAULT_ROUNDING, BillsecRounding, parse_rounding


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def _positive(name: str, value: str) -> int:
    # Dial's time-out: 0 or less would mean "ring forever", which no hold can outlast.
    number = int(value)
    if number <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return number


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def url_prefixes(value: str) -> tuple[str, ...]:
    """CALLGATE_DIALPLAN_URL_PREFIXES: each an http(s) URL with a host, no user, query or
    fragment, whose path ends in `/` (so `https://h/dialplans` cannot admit `https://h/dialplans-evil`)."""
    prefixes = _csv(value)
    for prefix in prefixes:
        parts = urlsplit(prefix)
        if (parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc or parts.query
                or parts.fragment or not parts.path.endswith("/")):  # fmt: skip
            raise ValueError(f"CALLGATE_DIALPLAN_URL_PREFIXES: {prefix!r} is not http(s)://host/path/ ending in '/'")
    return prefixes


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite+aiosqlite:///./callgate.db"
    redis_url: str | None = None
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    workers: int = 1
    secret_file: str = "./.callgate-secret"
    max_call_s: int = 14400
    ring_timeout_s: int = 60
    reservation_grace_s: int = 120
    ban_seconds: int = 3600
    ban_whitelist: tuple[str, ...] = ()
    disa_max_failures: int = 5
    disa_lockout_s: int = 900
    login_max_failures: int = 5
    login_ip_max_failures: int = 20
    login_lockout_s: int = 900
    register_ip_max_requests: int = 10  # registerRequest + registerByCode per address per login_lockout_s
    register_code_ttl_s: int = 86400  # how long a registerRequest code stays valid
    fail_open_max_s: int = 0
    spool_dir: str = "./spool"
    plain_auth_by: tuple[str, ...] = ("sip_extension", "id")
    db_timeout_s: float = 2.0
    http_max_connections: int = 1000
    http_idle_timeout_s: float = 10.0
    http_body_timeout_s: float = 10.0
    log_level: str = "info"
    startup_retry_max_s: float = 10.0
    warm_profiles: int = 1000
    worker_max_restarts: int = 10
    billsec_rounding: BillsecRounding = DEFAULT_ROUNDING
    ami_action_timeout_s: float = 5.0
    ami_ping_interval_s: float = 5.0
    ami_ping_timeout_s: float = 3.0
    ami_reconnect_max_s: float = 30.0
    ami_refresh_s: float = 5.0
    # After the last AMI Cdr event of a call, how long its callFinish may still come before
    # its open holds are closed from the event (billing_core.calls.orphans).
    orphan_grace_s: float = 60.0
    # Holds in slices (billing_core.calls.supervision): 0 = off, a call holds its whole
    # length (the default). > 0: a call on a server with AMI up holds this many seconds at
    # a time, asked for again `hold_slice_lead_s` before a slice ends.
    hold_slice_s: int = 0
    hold_slice_lead_s: int = 30
    dialplan_url_prefixes: tuple[str, ...] = ()
    system_currency: str = "EUR"
    did_release_grace_days: int = 7
    did_order_hold_s: int = 300
    rates_source: str = ""
    # the doors' keys are secrets: kept out of repr (a logged Settings must not show them)
    vcs_apikey: str = field(default="", repr=False)
    billmgr_apikey: str = field(default="", repr=False)
    session_idle_s: int = 3600
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        agi_host, agi_port = _host_port(env.get("CALLGATE_AGI_LISTEN", "127.0.0.1:4573"))
        http_host, http_port = _host_port(env.get("CALLGATE_HTTP_LISTEN", "127.0.0.1:8080"))
        return cls(
            database_url=env.get("CALLGATE_DATABASE_URL") or cls.database_url,
            redis_url=env.get("CALLGATE_REDIS_URL") or None,
            agi_host=agi_host,
            agi_port=agi_port,
            http_host=http_host,
            http_port=http_port,
            workers=int(env.get("CALLGATE_WORKERS", "1")),
            secret_file=env.get("CALLGATE_SECRET_FILE", cls.secret_file),
            max_call_s=int(env.get("CALLGATE_MAX_CALL_S", "14400")),
            ring_timeout_s=_positive("CALLGATE_RING_TIMEOUT_S", env.get("CALLGATE_RING_TIMEOUT_S", "60")),
            reservation_grace_s=int(env.get("CALLGATE_RESERVATION_GRACE_S", "120")),
            ban_seconds=int(env.get("CALLGATE_BAN_SECONDS", "3600")),
            ban_whitelist=_csv(env.get("CALLGATE_BAN_WHITELIST", "")),
            disa_max_failures=int(env.get("CALLGATE_DISA_MAX_FAILURES", "5")),
            disa_lockout_s=int(env.get("CALLGATE_DISA_LOCKOUT_S", "900")),
            login_max_failures=int(env.get("CALLGATE_LOGIN_MAX_FAILURES", "5")),
            login_ip_max_failures=int(env.get("CALLGATE_LOGIN_IP_MAX_FAILURES", "20")),
            login_lockout_s=int(env.get("CALLGATE_LOGIN_LOCKOUT_S", "900")),
            register_ip_max_requests=int(env.get("CALLGATE_REGISTER_IP_MAX_REQUESTS", "10")),
            register_code_ttl_s=_positive("CALLGATE_REGISTER_CODE_TTL_S", env.get("CALLGATE_REGISTER_CODE_TTL_S", "86400")),
            fail_open_max_s=int(env.get("CALLGATE_FAIL_OPEN_MAX_S", "0")),
            spool_dir=env.get("CALLGATE_SPOOL_DIR", cls.spool_dir),
            plain_auth_by=_csv(env.get("CALLGATE_PLAIN_AUTH_BY", "sip_extension,id")),
            db_timeout_s=float(env.get("CALLGATE_DB_TIMEOUT_S", "2.0")),
            http_max_connections=int(env.get("CALLGATE_HTTP_MAX_CONNECTIONS", "1000")),
            http_idle_timeout_s=float(env.get("CALLGATE_HTTP_IDLE_TIMEOUT_S", "10")),
            http_body_timeout_s=float(env.get("CALLGATE_HTTP_BODY_TIMEOUT_S", "10")),
            log_level=env.get("CALLGATE_LOG_LEVEL", "info"),
            startup_retry_max_s=float(env.get("CALLGATE_STARTUP_RETRY_MAX_S", "10")),
            warm_profiles=int(env.get("CALLGATE_WARM_PROFILES", "1000")),
            worker_max_restarts=int(env.get("CALLGATE_WORKER_MAX_RESTARTS", "10")),
            billsec_rounding=parse_rounding(env.get("CALLGATE_BILLSEC_ROUNDING", "")),
            ami_action_timeout_s=float(env.get("CALLGATE_AMI_ACTION_TIMEOUT_S", "5")),
            ami_ping_interval_s=float(env.get("CALLGATE_AMI_PING_INTERVAL_S", "5")),
            ami_ping_timeout_s=float(env.get("CALLGATE_AMI_PING_TIMEOUT_S", "3")),
            ami_reconnect_max_s=float(env.get("CALLGATE_AMI_RECONNECT_MAX_S", "30")),
            ami_refresh_s=float(env.get("CALLGATE_AMI_REFRESH_S", "5")),
            orphan_grace_s=float(env.get("CALLGATE_ORPHAN_GRACE_S", "60")),
            hold_slice_s=int(env.get("CALLGATE_HOLD_SLICE_S", "0")),
            hold_slice_lead_s=int(env.get("CALLGATE_HOLD_SLICE_LEAD_S", "30")),
            did_release_grace_days=int(env.get("CALLGATE_DID_RELEASE_GRACE_DAYS", "7")),
            did_order_hold_s=_positive("CALLGATE_DID_ORDER_HOLD_S", env.get("CALLGATE_DID_ORDER_HOLD_S", "300")),
            rates_source=env.get("CALLGATE_RATES_SOURCE", "").strip(),
            vcs_apikey=env.get("CALLGATE_VCS_APIKEY", ""),
            billmgr_apikey=env.get("CALLGATE_BILLMGR_APIKEY", ""),
            session_idle_s=_positive("CALLGATE_SESSION_IDLE_S", env.get("CALLGATE_SESSION_IDLE_S", "3600")),
            dialplan_url_prefixes=url_prefixes(env.get("CALLGATE_DIALPLAN_URL_PREFIXES", "")),
        )


SYSTEM_CURRENCY = "EUR"
ONE = Decimal(1)
