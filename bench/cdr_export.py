"""The CDR export (getLogs.csv) of one user's large call log: rows/s and the server's memory.

    python -m bench.cdr_export --rows 10000000            # fill, then export
    python -m bench.cdr_export --rows 10000000 --reuse    # export what the last run filled

Fill: the target PostgreSQL database (`callgate_bench_export`) is dropped, created,
migrated, and given one user with `--rows` call-log rows, written by INSERT … SELECT over
generate_series in batches (no Python in the loop). Export: a real `callgate serve` (one
worker, in-process cache) on free ports; the client streams `getLogs.csv` for each
`--limits` value (0 = the whole log), counts bytes and CSV lines, and samples the server's
resident memory (VmRSS of its processes, every 0.2 s) while the file flows. The figure to
read is the peak RSS against the number of rows: constant memory means it does not grow
with the rows. Results as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text

from bench.world import recreate_database
from billing_core.auth.secrets_store import hash_password, md5_hex
from billing_core.bootstrap import ADMIN_USERNAME, bootstrap
from billing_core.cache.keys import NAMESPACES
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.directory.keys import add_key
from billing_core.ledger.accounts import create_account, create_user

HOST = "127.0.0.1"
DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/callgate_bench_export"
USER = "exporter"
PASSWORD = "bench-export"
KEY = "bench-export-key-0123456789"
BATCH = 250_000  # one INSERT stays well inside the engine's 10 s statement time-out
PROJECT_ROOT = Path(__file__).resolve().parent.parent

_FILL = text(
    """
    INSERT INTO cdrs (call_uid, prior, user_id, account_id, sip_extension, callerid, destination, direction,
                      route, length_s, answered_ms, billed_s, status, cause, cost, display_cost,
                      display_currency, answer, created_at)
    SELECT 'bench-' || g, 1, :user_id, :account_id, '70001', '74950000000',
           '7901' || lpad((g % 10000000)::text, 7, '0'), 'Russia Mobile', 'bench-primary',
           30 + g % 600, CASE WHEN g % 4 = 0 THEN NULL ELSE 1500 END,
           CASE WHEN g % 4 = 0 THEN 0 ELSE 60 * ((89 + g % 600) / 60) END,
           CASE WHEN g % 4 = 0 THEN '0NOANSWER' ELSE '16ANSWER' END, '16',
           round((g % 1000) * 0.0013, 4), round((g % 1000) * 0.0013, 4), 'EUR', 'Saved',
           timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'
    FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g
    """
)


async def fill(settings: Settings, rows: int) -> None:
    await recreate_database(settings.database_url, synchronous_commit="off")
    services = Services.build(settings)
    try:
        await bootstrap(services.db)
        async with services.db.begin() as conn:
            account_id = await create_account(conn)
            user_id = await create_user(
                conn, username=USER, password_hash=hash_password(md5_hex(PASSWORD)), accesslevel=11,
                manager=ADMIN_USERNAME, account_id=account_id, currency="EUR",
            )  # fmt: skip
        await add_key(
            services.db, services.box, name="bench-export", access_level=0, source="127.0.0.1", owner=ADMIN_USERNAME,
            auth_by="username", apikey=KEY,
        )  # fmt: skip
        started = time.perf_counter()
        for lo in range(1, rows + 1, BATCH):
            hi = min(lo + BATCH - 1, rows)
            async with services.db.begin(timeout_s=3600) as conn:
                await conn.execute(_FILL, {"user_id": user_id, "account_id": account_id, "lo": lo, "hi": hi})
            print(f"filled {hi} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        async with services.db.begin(timeout_s=3600) as conn:
            await conn.execute(text("ANALYZE cdrs"))
        await services.cache.invalidate(*NAMESPACES)
    finally:
        await services.close()


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def _sample(pid: int, peaks: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peaks.append(_rss_kib(pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except TimeoutError:
            pass


async def export_once(port: int, pid: int, limit: int) -> dict[str, Any]:
    args = {"login": USER, "password": md5_hex(PASSWORD)}
    if limit:
        args["limit"] = str(limit)
    url = f"http://{HOST}:{port}/billing/api/2.2/{KEY}/getLogs.csv"
    samples: list[int] = []
    stop = asyncio.Event()
    before = _rss_kib(pid)
    sampler = asyncio.create_task(_sample(pid, samples, stop))
    lines = size = 0
    started = time.perf_counter()
    first_byte = None
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, params=args) as response:
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {(await response.read())[:300]!r}")
        async for chunk in response.content.iter_chunked(1 << 16):
            if first_byte is None:
                first_byte = time.perf_counter() - started
            size += len(chunk)
            lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    stop.set()
    await sampler
    rows = lines - 1  # the header line (no field of these rows holds a line break)
    return {
        "limit": limit or "all",
        "rows": rows,
        "bytes": size,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "mib_per_s": round(size / elapsed / 2**20, 1),
        "first_byte_ms": round((first_byte or 0) * 1000, 1),
        "server_rss_before_mib": round(before / 1024, 1),
        "server_rss_peak_mib": round(max(samples, default=0) / 1024, 1),
    }


async def _wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("callgate serve exited")
            try:
                async with session.get(f"http://{HOST}:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("callgate serve not healthy within 60 s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(settings: Settings) -> tuple[subprocess.Popen[bytes], int]:
    """`callgate serve` (one worker, in-process cache) on free ports; its log in a temp dir."""
    http_port, agi_port = _free_port(), _free_port()
    work = Path(tempfile.mkdtemp(prefix="callgate-export-"))
    env = {
        **os.environ,
        "CALLGATE_DATABASE_URL": settings.database_url,
        "CALLGATE_REDIS_URL": "",
        "CALLGATE_AGI_LISTEN": f"{HOST}:{agi_port}",
        "CALLGATE_HTTP_LISTEN": f"{HOST}:{http_port}",
        "CALLGATE_WORKERS": "1",
        "CALLGATE_LOG_LEVEL": "warning",
        "CALLGATE_SECRET_FILE": settings.secret_file,
        "CALLGATE_SPOOL_DIR": str(work / "spool"),
    }
    command = [str(Path(sys.executable).parent / "callgate"), "serve"]
    with open(work / "serve.log", "wb") as log:
        proc = subprocess.Popen(command, env=env, cwd=str(PROJECT_ROOT), stdout=log, stderr=subprocess.STDOUT)
    return proc, http_port


async def export(proc: subprocess.Popen[bytes], port: int, limits: list[int]) -> list[dict[str, Any]]:
    await _wait_healthy(port, proc)
    return [await export_once(port, proc.pid, limit) for limit in limits]


def _host() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor()}, {os.cpu_count()} CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--reuse", action="store_true", help="export the rows the last run filled")
    parser.add_argument("--limits", default="100000,1000000,0", help="rows per export, 0 = the whole log")
    args = parser.parse_args(argv)
    secret = Path(tempfile.gettempdir()) / "callgate-bench-export-secret"
    settings = Settings.from_env({"CALLGATE_DATABASE_URL": args.database_url, "CALLGATE_SECRET_FILE": str(secret)})
    if not args.reuse:
        asyncio.run(fill(settings, args.rows))
    proc, port = start_server(settings)
    try:
        results = asyncio.run(export(proc, port, [int(v) for v in args.limits.split(",")]))
    finally:
        proc.terminate()
        proc.wait(30)
    load = os.getloadavg()
    report = {"host": _host(), "load_average_1_5_15": load, "rows_in_log": args.rows, "exports": results}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
