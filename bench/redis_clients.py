"""asyncio-redis vs redis.asyncio (hiredis) on one event loop: ops/s per command.

    python -m bench.redis_clients --tasks 50 --seconds 3 [--poolsize 50] [--repeats 5] [--json]

N tasks share one pool per client and run one command in a loop for a fixed time;
each (command, client) measurement is repeated, interleaved A, B, A, B, ..., and the
median ops/s is reported with the ratio redis.asyncio / asyncio-redis, and the median
CPU time this process spent per operation (user+sys; the Redis server's time is not
included). ops/s depends on how much CPU the machine has free; CPU per op much less so.

Both clients decode replies to str (asyncio-redis' default UTF8Encoder,
``decode_responses=True`` for redis-py) and return plain Python values: the
asyncio-redis MGET and EVALSHA replies are unwrapped (``aslist()``,
``return_value()``), as the service would have to.

Uses Redis db 14 on 127.0.0.1:6379 by default and flushes that db only
(before and after). Results go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Final

import asyncio_redis
import redis
import redis.asyncio as aredis
import redis.utils

OPS: Final = ("GET", "SET", "MGET10", "INCR", "EVALSHA")
CLIENT_A: Final = "asyncio-redis"
CLIENT_B: Final = "redis.asyncio"
KEY_PREFIX: Final = "bench:rc:"
MGET_KEYS: Final = [f"{KEY_PREFIX}m{i}" for i in range(10)]
VALUE: Final = "x" * 64
MAX_OPS_PER_TASK: Final = 10_000_000  # a hard cap besides the time limit
# a small "take one unit if under the limit" script, like a per-account call limiter
LUA: Final = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], 0)
end
return n
"""

Op = Callable[[], Awaitable[object]]


@dataclass
class Sample:
    op: str
    client: str
    repeat: int
    ops: int
    seconds: float
    cpu_seconds: float  # this process' CPU time (user+sys) during the run

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_op(self) -> float:
        return self.cpu_seconds / self.ops * 1e6 if self.ops else 0.0


@dataclass
class Row:
    op: str
    a_median: float
    b_median: float
    ratio: float
    a_cpu_us: float
    b_cpu_us: float
    a_runs: list[float] = field(default_factory=list)
    b_runs: list[float] = field(default_factory=list)


def _ops_asyncio_redis(pool: asyncio_redis.Pool, sha: str) -> dict[str, Op]:
    async def get() -> object:
        return await pool.get(f"{KEY_PREFIX}k")

    async def set_() -> object:
        return await pool.set(f"{KEY_PREFIX}s", VALUE)

    async def mget() -> object:
        reply = await pool.mget(MGET_KEYS)
        return await reply.aslist()

    async def incr() -> object:
        return await pool.incr(f"{KEY_PREFIX}i")

    async def evalsha() -> object:
        reply = await pool.evalsha(sha, [f"{KEY_PREFIX}e"], ["1000000"])
        return await reply.return_value()

    return {"GET": get, "SET": set_, "MGET10": mget, "INCR": incr, "EVALSHA": evalsha}


def _ops_redis_py(client: aredis.Redis, sha: str) -> dict[str, Op]:
    async def get() -> object:
        return await client.get(f"{KEY_PREFIX}k")

    async def set_() -> object:
        return await client.set(f"{KEY_PREFIX}s", VALUE)

    async def mget() -> object:
        return await client.mget(MGET_KEYS)

    async def incr() -> object:
        return await client.incr(f"{KEY_PREFIX}i")

    async def evalsha() -> object:
        return await client.evalsha(sha, 1, f"{KEY_PREFIX}e", "1000000")

    return {"GET": get, "SET": set_, "MGET10": mget, "INCR": incr, "EVALSHA": evalsha}


async def _run_for(op: Op, tasks: int, seconds: float) -> tuple[int, float, float]:
    """Run *op* from *tasks* tasks until *seconds* have passed; returns (ops done, elapsed, CPU seconds)."""
    stop = False

    async def worker() -> int:
        done = 0
        while not stop and done < MAX_OPS_PER_TASK:
            await op()
            done += 1
        return done

    loop = asyncio.get_running_loop()
    start, cpu_start = time.perf_counter(), time.process_time()
    workers = [asyncio.ensure_future(worker()) for _ in range(tasks)]

    def _stop() -> None:
        nonlocal stop
        stop = True

    handle = loop.call_later(seconds, _stop)
    try:
        counts = await asyncio.wait_for(asyncio.gather(*workers), timeout=seconds + 10.0)
    finally:
        handle.cancel()
        for w in workers:
            w.cancel()
    return sum(counts), time.perf_counter() - start, time.process_time() - cpu_start


def _prepare_db(host: str, port: int, db: int) -> tuple[str, str]:
    """Flush *db* (only that one), seed the keys, load the script; returns (its sha, server version)."""
    sync = redis.Redis(host=host, port=port, db=db, socket_timeout=5)
    try:
        sync.flushdb()
        sync.set(f"{KEY_PREFIX}k", VALUE)
        sync.mset({k: VALUE for k in MGET_KEYS})
        sha = str(sync.script_load(LUA))
        info = sync.info("server")
        return sha, str(info.get("redis_version", "?"))
    finally:
        sync.close()


def _flush_db(host: str, port: int, db: int) -> None:
    sync = redis.Redis(host=host, port=port, db=db, socket_timeout=5)
    try:
        sync.flushdb()
    finally:
        sync.close()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(args: argparse.Namespace, redis_server: str) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "event_loop": args.loop,
        "asyncio-redis": _version("asyncio-redis"),
        "redis-py": _version("redis"),
        "hiredis": _version("hiredis"),
        "hiredis_used": bool(redis.utils.HIREDIS_AVAILABLE),
        "uvloop": _version("uvloop"),
        "redis_server": redis_server,
        "tasks": args.tasks,
        "poolsize": args.poolsize or args.tasks,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "ops": args.ops,
    }


Result = tuple[list[Row], list[Sample], dict[str, Any]]


async def bench(args: argparse.Namespace) -> Result:
    poolsize = args.poolsize or args.tasks
    sha, server_version = _prepare_db(args.host, args.port, args.db)
    env = environment(args, server_version)
    pool_a = await asyncio.wait_for(
        asyncio_redis.Pool.create(host=args.host, port=args.port, db=args.db, poolsize=poolsize), timeout=10
    )
    client_b = aredis.Redis(
        connection_pool=aredis.BlockingConnectionPool(
            host=args.host, port=args.port, db=args.db, max_connections=poolsize, timeout=10, decode_responses=True
        )
    )
    samples: list[Sample] = []
    try:
        ops_a = _ops_asyncio_redis(pool_a, sha)
        ops_b = _ops_redis_py(client_b, sha)
        # same answers from both before timing anything
        for name in args.ops:
            got_a, got_b = await ops_a[name](), await ops_b[name]()
            if name in ("GET", "MGET10") and got_a != got_b:
                raise SystemExit(f"{name}: clients disagree: {got_a!r} != {got_b!r}")
        warm = min(0.5, args.seconds)
        for name in args.ops:
            for ops in (ops_a, ops_b):
                await _run_for(ops[name], args.tasks, warm)  # opens the pool's connections, warms caches
            for rep in range(args.repeats):
                for client, ops in ((CLIENT_A, ops_a), (CLIENT_B, ops_b)):
                    n, elapsed, cpu = await _run_for(ops[name], args.tasks, args.seconds)
                    s = Sample(name, client, rep, n, elapsed, cpu)
                    samples.append(s)
                    if not args.json:
                        print(
                            f"  {name:<8} {client:<14} run {rep + 1}: {s.rate:>10,.0f} ops/s"
                            f" {s.cpu_us_per_op:6.1f} us CPU/op  load {os.getloadavg()[0]:.2f}",
                            file=sys.stderr,
                        )
    finally:
        pool_a.close()
        await client_b.aclose()
        _flush_db(args.host, args.port, args.db)

    rows: list[Row] = []
    for name in args.ops:
        sa = [s for s in samples if s.op == name and s.client == CLIENT_A]
        sb = [s for s in samples if s.op == name and s.client == CLIENT_B]
        a, b = [s.rate for s in sa], [s.rate for s in sb]
        am, bm = statistics.median(a), statistics.median(b)
        a_cpu = statistics.median(s.cpu_us_per_op for s in sa)
        b_cpu = statistics.median(s.cpu_us_per_op for s in sb)
        rows.append(Row(name, am, bm, bm / am if am else float("inf"), a_cpu, b_cpu, a, b))
    if hasattr(os, "getloadavg"):
        env["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return rows, samples, env


def table(rows: list[Row], env: dict[str, Any]) -> str:
    head = (
        f"{env['tasks']} tasks, pool {env['poolsize']}, {env['seconds']} s per run, median of {env['repeats']} "
        f"interleaved runs, {env['event_loop']}, hiredis used by redis-py: {env['hiredis_used']}"
    )
    lines = [
        head,
        "",
        f"| {'op':<8} | {CLIENT_A + ' ops/s':>19} | {CLIENT_B + ' ops/s':>19} | {'B/A':>5} "
        f"| {'A µs CPU/op':>11} | {'B µs CPU/op':>11} |",
        f"|{'-' * 10}|{'-' * 20}:|{'-' * 20}:|{'-' * 6}:|{'-' * 12}:|{'-' * 12}:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.op:<8} | {r.a_median:>19,.0f} | {r.b_median:>19,.0f} | {r.ratio:>5.2f} "
            f"| {r.a_cpu_us:>11.1f} | {r.b_cpu_us:>11.1f} |"
        )
    spread = "; ".join(
        f"{r.op}: A {min(r.a_runs):,.0f}-{max(r.a_runs):,.0f}, B {min(r.b_runs):,.0f}-{max(r.b_runs):,.0f}"
        for r in rows
    )
    lines += ["", f"run ranges (min-max ops/s): {spread}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=50, help="concurrent tasks (default 50)")
    p.add_argument("--poolsize", type=int, default=0, help="connections per client (default: = tasks)")
    p.add_argument("--seconds", type=float, default=3.0, help="length of one run (default 3)")
    p.add_argument("--repeats", type=int, default=5, help="runs per client and command (default 5)")
    p.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--db", type=int, default=14, help="the db to use AND FLUSH (default 14)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    if not (1 <= args.tasks <= 1000 and 0 < args.seconds <= 60 and 1 <= args.repeats <= 20):
        p.error("tasks 1..1000, seconds 0..60, repeats 1..20")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("loopback only")
    return args


def _run(coro: Coroutine[Any, Any, Result], loop_name: str) -> Result:
    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows, samples, env = _run(bench(args), args.loop)
    if args.json:
        out = {
            "environment": env,
            "results": [asdict(r) for r in rows],
            "samples": [asdict(s) | {"rate": s.rate, "cpu_us_per_op": s.cpu_us_per_op} for s in samples],
        }
        print(json.dumps(out, indent=2))
    else:
        print(json.dumps({k: v for k, v in env.items() if k != "ops"}))
        print(table(rows, env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
