"""The cost per request of each front door against the Narayana door, in one run.

    python -m bench.doors [--seconds 3] [--repeats 3] [--concurrency 4] [--json FILE]
                          [--database-url URL --redis-url URL]

A child process serves callgate's HTTP app (the real registry, uvloop, the embedded
default unless --database-url/--redis-url name the server backend) with the VCS and
BILLmanager doors open; the bench process is the client (aiohttp, keep-alive, a closed
loop of `--concurrency` requests in flight). Each case runs `--seconds`, the cases one
after the other, `--repeats` rounds; every figure is the median over the rounds. Server
CPU per request is the child's user+sys time (/proc/PID/stat) over the case divided by its
requests: what the door costs callgate, apart from the client.

Cases, each on the same user `alice` (level 11):
- getCurrencies (level 0: no user, the transport's own cost): Narayana GET, VCS JSON-RPC,
  BILLmanager `out=xml` and `out=JSONdata`.
- getInfo (level 1, a user to find): Narayana with a static key (default user, no
  password), VCS with a SID, BILLmanager with `auth=` (both sessions); and with the
  password checked on every call: Narayana `login`+md5 `password`, VCS `auth`,
  BILLmanager `authinfo` (each one scrypt verification at the production cost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

USER, PASSWORD = "alice", "alice-secret"


# --- the child: callgate's HTTP app with both doors open -------------------------------------


async def _child(directory: str, database_url: str | None, redis_url: str | None) -> None:
    import billing_core.api.methods  # noqa: F401 - registers every method
    from billing_core.api.dispatch import Dispatcher
    from billing_core.bootstrap import bootstrap, seed_base_data
    from billing_core.config import Settings
    from billing_core.container import Services
    from billing_core.http import bound_port, start_http
    from tests.factories import make_key, make_user

    settings = Settings(
        database_url=database_url or f"sqlite+aiosqlite:///{directory}/callgate.db",
        redis_url=redis_url,
        secret_file=f"{directory}/secret",
        spool_dir=f"{directory}/spool",
        log_level="warning",
    )
    services = Services.build(settings)
    await bootstrap(services.db)
    await seed_base_data(services.db)
    await make_user(services, USER, accesslevel=11, manager="admin", password=PASSWORD)
    dynamic = await make_key(services, level=0, owner="admin", name="bench-doors")
    static = await make_key(services, level=0, owner="admin", name="bench-static", default_user=USER)
    from dataclasses import replace

    services = replace(services, settings=replace(settings, vcs_apikey=dynamic, billmgr_apikey=dynamic))
    runner = await start_http(Dispatcher(services), "127.0.0.1", 0)
    print(json.dumps({"port": bound_port(runner), "dynamic": dynamic, "static": static}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    await runner.cleanup()
    await services.close()


def _configure_child_logging() -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


# --- the parent: the client --------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    verb: str
    path: str
    body: str | None = None


def _cases(keys: dict[str, str], vcs_sid: str, bm_session: str) -> list[Case]:
    from billing_core.auth.secrets_store import md5_hex

    md5 = md5_hex(PASSWORD)
    dyn, static = keys["dynamic"], keys["static"]
    auth = {"login": USER, "password": PASSWORD}

    def rpc(method: str, params: dict[str, Any]) -> str:
        return json.dumps({"method": method, "params": params, "id": 1})

    return [
        Case("getCurrencies: Narayana", "GET", f"/billing/api/2.2/{dyn}/getCurrencies"),
        Case("getCurrencies: VCS", "POST", "/jsonrpc/", rpc("getCurrencies", {})),
        Case("getCurrencies: BILLmanager xml", "GET", "/billmgr?func=getCurrencies&out=xml"),
        Case("getCurrencies: BILLmanager JSONdata", "GET", "/billmgr?func=getCurrencies&out=JSONdata"),
        Case("getInfo: Narayana, static key", "GET", f"/billing/api/2.2/{static}/getInfo"),
        Case("getInfo: VCS, SID", "POST", "/jsonrpc/", rpc("getInfo", {"SID": vcs_sid})),
        Case("getInfo: BILLmanager, auth= session", "GET", f"/billmgr?func=getInfo&out=xml&auth={bm_session}"),
        Case("getInfo: Narayana, login+password", "GET", f"/billing/api/2.2/{dyn}/getInfo?login={USER}&password={md5}"),
        Case("getInfo: VCS, auth", "POST", "/jsonrpc/", rpc("getInfo", {"auth": auth})),
        Case("getInfo: BILLmanager, authinfo", "GET", f"/billmgr?func=getInfo&out=xml&authinfo={USER}:{PASSWORD}"),
    ]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _answer_ok(case: Case, status: int, body: bytes) -> bool:
    if status != 200:
        return False
    if case.path.startswith("/billmgr"):
        return b"<error" not in body and b'"error"' not in body
    if case.path.startswith("/jsonrpc"):
        return b'"code": true' in body
    return body.startswith(b'{"result": true')


async def _run_case(session: aiohttp.ClientSession, base: str, case: Case, seconds: float, concurrency: int,
                    pid: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with session.request(case.verb, base + case.path, data=case.body) as reply:
                body = await reply.read()
            latencies.append(time.perf_counter() - started)
            if not _answer_ok(case, reply.status, body):
                errors += 1

    cpu_before, wall_before = _cpu_s(pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall_before, _cpu_s(pid) - cpu_before
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "per_s": len(latencies) / wall,
        "median_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "server_cpu_ms": cpu / len(latencies) * 1000,
    }


async def _sessions(session: aiohttp.ClientSession, base: str) -> tuple[str, str]:
    login = {"method": "getInfo", "params": {"auth": {"login": USER, "password": PASSWORD}}, "id": 1}
    async with session.post(base + "/jsonrpc/", json=login) as reply:
        sid = (await reply.json())["result"]["session_id"]
    async with session.get(base + f"/billmgr?func=auth&out=JSONdata&username={USER}&password={PASSWORD}") as reply:
        bm = (await reply.json(content_type=None))["auth"]
    return str(sid), str(bm)


async def _parent(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        command = [sys.executable, "-m", "bench.doors", "--child", directory]
        if args.database_url:
            command += ["--database-url", args.database_url]
        if args.redis_url:
            command += ["--redis-url", args.redis_url]
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
        try:
            assert child.stdout is not None
            keys = json.loads(child.stdout.readline())
            base = f"http://127.0.0.1:{keys['port']}"
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            async with aiohttp.ClientSession(connector=connector) as session:
                sid, bm = await _sessions(session, base)
                cases = _cases(keys, sid, bm)
                rounds: dict[str, list[dict[str, float]]] = {case.name: [] for case in cases}
                for _ in range(args.repeats):
                    for case in cases:
                        rounds[case.name].append(
                            await _run_case(session, base, case, args.seconds, args.concurrency, child.pid)
                        )
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=30)
    results = {
        name: {metric: statistics.median(r[metric] for r in runs) for metric in runs[0]} | {"runs": runs}
        for name, runs in rounds.items()
    }
    return {
        "host": platform.node(),
        "python": platform.python_version(),
        "backend": "server" if args.redis_url else "embedded",
        "seconds": args.seconds,
        "repeats": args.repeats,
        "concurrency": args.concurrency,
        "results": results,
    }


def _table(report: dict[str, Any]) -> str:
    lines = [
        "| case | requests/s | median ms | p99 ms | server CPU per request | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["results"].items():
        lines.append(
            f"| {name} | {r['per_s']:,.0f} | {r['median_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['server_cpu_ms']:.3f} ms | {int(r['errors'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--json", default=None, help="also write the full report (every run) here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.child:
        _configure_child_logging()
        asyncio.run(_child(args.child, args.database_url, args.redis_url))
        return
    report = asyncio.run(_parent(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(_table(report))


if __name__ == "__main__":
    main()
