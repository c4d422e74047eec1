"""The first wave after a start (issue 9, item 10): N callPrepare at once, right after
`callgate serve` reports healthy, with the start-up warm-up (callgate.startup.prepare) and
without it (only the migration: what start-up did before).

    .venv/bin/python -m bench.first_wave --database-url postgresql+asyncpg://postgres@127.0.0.1/callgate_bench_wave \
        --redis-url redis://127.0.0.1:6379/7 --calls 200

Each mode provisions the same world (bench.world), starts a fresh `callgate serve` (one
worker) in a subprocess, waits for /healthz, then opens N FastAGI sessions at the same
moment (one asyncio task each, lean client of bench.load) and prints the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bench.load import Call, _prepare_args, fastagi_decision, free_port
from bench.world import provision
from billing_core.config import Settings

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# The cold mode: the service as start-up was before item 10 (migrate, then listen).
COLD = (
    "import callgate.startup as s\n"
    "from billing_core.bootstrap import bootstrap\n"
    "async def migrate_only(services):\n"
    "    await bootstrap(services.db)\n"
    "    return s.WarmReport(0, 0, 0, 0, 0)\n"
    "s.prepare = migrate_only\n"
    "from callgate.cli import main\n"
    "raise SystemExit(main(['serve']))\n"
)
WARM = "from callgate.cli import main\nraise SystemExit(main(['serve']))\n"


async def _healthy(port: int, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if proc.returncode is not None:
                raise SystemExit("callgate serve exited")
            try:
                async with session.get(f"http://{HOST}:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit("callgate serve never became healthy")


async def _wave(mode: str, args: argparse.Namespace) -> list[float]:
    settings = Settings(database_url=args.database_url, redis_url=args.redis_url)
    world = await provision(settings, users=args.calls)
    agi_port, http_port = free_port(), free_port()
    env = os.environ | {
        "CALLGATE_DATABASE_URL": args.database_url, "CALLGATE_REDIS_URL": args.redis_url or "",
        "CALLGATE_AGI_LISTEN": f"{HOST}:{agi_port}", "CALLGATE_HTTP_LISTEN": f"{HOST}:{http_port}",
        "CALLGATE_LOG_LEVEL": "warning", "CALLGATE_SPOOL_DIR": f"/tmp/callgate-wave-{mode}-spool",
    }  # fmt: skip
    code = COLD if mode == "cold" else WARM
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env, cwd=REPO,
                                                stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        await _healthy(http_port, proc)
        rng = random.Random(7)
        calls = [
            Call(ext, world.directions[n % len(world.directions)].number(rng), f"wave-{mode}.{n}")
            for n, ext in enumerate(world.extensions)
        ]

        async def one(call: Call) -> float:
            started = time.perf_counter()
            answer = await fastagi_decision(agi_port, "callPrepare", _prepare_args(call), call)
            if answer.result != "Allowed":
                raise SystemExit(f"unexpected answer {answer}")
            return time.perf_counter() - started

        return sorted(await asyncio.gather(*(one(call) for call in calls)))
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=30)


def _ms(values: list[float], pct: float) -> str:
    return f"{values[min(len(values) - 1, int(len(values) * pct))] * 1000:.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for round_ in range(args.rounds):
        for mode in ("cold", "warm"):
            values = await _wave(mode, args)
            print(f"round {round_ + 1} {mode}: {len(values)} callPrepare at once: p50 {_ms(values, 0.5)} ms, "
                  f"p90 {_ms(values, 0.9)} ms, max {values[-1] * 1000:.1f} ms", flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
