"""What aliases cost a decision: callPrepare/callFinish latency with no aliases, with many
aliases that the calls do not dial (the common case: one set lookup), and with calls that
dial an alias (the number is resolved, then rated as its destination).

    .venv/bin/python -m bench.aliases --database-url postgresql+asyncpg://postgres@127.0.0.1/callgate_bench_aliases \
        --redis-url redis://127.0.0.1:6379/7 --aliases 2000 --rate 400 --channels 100 --seconds 10 --repeats 3

One `callgate serve` (one worker) serves every run; between runs the alias table is filled
or emptied directly in the database and NS_ALIASES is bumped, as an alias write does. The
three states run interleaved in each repeat (none, miss, hit), so the machine's noise falls
on all of them alike; the answer is the ratio of medians. Every state dials the same 1,000
destinations: `none` and `miss` dial them as numbers, `hit` dials their (global) aliases,
so the rating work is the same; the other aliases belong to the calling extensions, so a
hit also walks the caller's own scope first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert

from bench.load import (
    Answer,
    Bench,
    Call,
    RunStats,
    fastagi_decision,
    free_port,
    machine_info,
    start_server,
)
from bench.world import BenchWorld, provision
from billing_core.cache.keys import NS_ALIASES
from billing_core.clock import utcnow
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.numbers.aliases import GLOBAL, extension_scope
from billing_core.numbers.tables import aliases

STATES = ("none", "miss", "hit")
TARGETS = 1000  # destinations every state dials


def alias_rows(world: BenchWorld, count: int, targets: Sequence[str]) -> list[dict[str, Any]]:
    """`count` aliases: the first TARGETS are global names of the targets (what `hit`
    dials); the rest are aliases of the extensions' own that nobody dials, so that the
    callers' own scopes are not empty and the index is `count` names large."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for index in range(count):
        row = {"alias": f"7{index:06d}", "destination": targets[index % len(targets)], "owner": "admin",
               "sip_extension": "", "scope": GLOBAL, "created_at": now}  # fmt: skip
        if index >= len(targets):
            ext = world.extensions[index % len(world.extensions)]
            row.update(sip_extension=ext, scope=extension_scope(ext))
        rows.append(row)
    return rows


def dialled(state: str, call: Call, targets: Sequence[str]) -> str:
    """The number this call dials in this state (the same for its prepare and its finish)."""
    index = zlib.crc32(call.uniqueid.encode()) % len(targets)
    return f"7{index:06d}" if state == "hit" else targets[index]


async def set_state(services: Services, rows: list[dict[str, Any]], state: str) -> None:
    async with services.db.begin() as conn:
        await conn.execute(delete(aliases))
        if state != "none":
            await conn.execute(insert(aliases), rows)
    await services.cache.invalidate(NS_ALIASES)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    settings = Settings(
        database_url=args.database_url, redis_url=args.redis_url, agi_port=free_port(), http_port=free_port(),
        secret_file=str(workdir / "secret"), spool_dir=str(workdir / "spool"),
    )  # fmt: skip
    world = await provision(settings, users=args.channels)
    rng = random.Random(7)
    targets = [rng.choice(world.directions).number(rng) for _ in range(TARGETS)]
    rows = alias_rows(world, args.aliases, targets)
    services = Services.build(settings)
    serve = [sys.executable, "-m", "callgate.cli", "serve"]
    server = start_server(settings, workdir / "serve.log", 1, "warning", serve)
    runs: list[dict[str, Any]] = []
    try:
        await server.wait_healthy()
        bench = Bench(world, server, settings.database_url, "lean", 1, "none")
        port = server.agi_port

        async def measure(state: str, seconds: float, repeat: int) -> RunStats:
            async def decide(method: str, call_args: dict[str, str], call: Call) -> Answer:
                number = dialled(state, call, targets)
                return await fastagi_decision(port, method, {**call_args, "destination": number}, call)

            stats = RunStats("fastagi", args.channels, repeat, args.rate, 1, state)
            await bench._drive(decide, args.channels, seconds, stats)
            return stats

        for state in STATES:  # warm-up: every state once, unmeasured
            await set_state(services, rows, state)
            await measure(state, args.warmup, 0)
        for repeat in range(1, args.repeats + 1):
            for state in STATES:
                await set_state(services, rows, state)
                await measure(state, args.warmup, 0)  # the snapshot reload after the write, unmeasured
                summary = (await measure(state, args.seconds, repeat)).summary()
                summary["state"] = state
                runs.append(summary)
                print(f"repeat {repeat} {state:4s}: {summary['pairs_per_s']:7.1f} pairs/s  prepare p50/p99 "
                      f"{summary['prepare_p50_ms']}/{summary['prepare_p99_ms']} ms  finish p50/p99 "
                      f"{summary['finish_p50_ms']}/{summary['finish_p99_ms']} ms  errors {summary['errors']} "
                      f"{summary['error_kinds'] or ''} busy {summary['machine_busy']:.0%}", flush=True)  # fmt: skip
    finally:
        server.stop()
        await services.close()
    table = []
    for state in STATES:
        mine = [r for r in runs if r["state"] == state]
        row: dict[str, Any] = {"state": state}
        for key in ("pairs_per_s", "prepare_p50_ms", "prepare_p99_ms", "finish_p50_ms", "finish_p99_ms"):
            row[key] = round(statistics.median(r[key] for r in mine), 2)
        row["errors"] = sum(r["errors"] for r in mine)
        table.append(row)
    base = table[0]
    for row in table:
        row["prepare_p99_ratio"] = round(row["prepare_p99_ms"] / base["prepare_p99_ms"], 3)
        row["prepare_p50_ratio"] = round(row["prepare_p50_ms"] / base["prepare_p50_ms"], 3)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(settings),
        "aliases": args.aliases, "rate": args.rate, "channels": args.channels, "seconds": args.seconds,
        "runs": runs, "table": table,
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql+asyncpg://postgres@127.0.0.1/callgate_bench_aliases")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--aliases", type=int, default=2000, help="alias rows in the miss and hit states")
    parser.add_argument("--rate", type=float, default=400.0, help="offered pairs/s over all channels")
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    if args.aliases < TARGETS:
        parser.error(f"--aliases must be at least {TARGETS} (one per dialled target)")
    with tempfile.TemporaryDirectory(prefix="callgate-bench-aliases-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    for row in result["table"]:
        print(json.dumps(row))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
