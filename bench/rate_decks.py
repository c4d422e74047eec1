"""Rate decks at carrier scale: import time, decision latency at 10 vs N prefixes, memory.

    python -m bench.rate_decks [--rows 1000000] [--runs 5] [--calls 2000] [--sqlite]

1. Writes a deck of `--rows` rows (bench/world.py's 10 directions at priorities 1 and 2,
   then 8-digit codes 2xxxxxxx on the primary route) to a temporary CSV file.
2. Provisions two PostgreSQL worlds (bench/world.py): `callgate_bench_decks_small` keeps
   its 10 directions; `callgate_bench_decks_large` gets the deck through
   `billing_core.rating.decks.import_deck` (timed), then the same file again (a re-import
   that changes nothing, timed). With `--sqlite`, the same import on the embedded default.
3. Decision latency, interleaved A/B (small, large, large, small, …), `--runs` runs of
   `--calls` decisions each, on one tariff: `warm` numbers (a pool of 200, the cache hot)
   and `cold` numbers (each one new: the large world's lookup reaches the database). Both
   through the rating engine alone (`rate`) and through the whole callPrepare (the
   dispatcher in-process, with the ledger's hold). Medians over the runs of each run's
   p50 and p99.
4. Memory: what the per-number cache entries of a cold run hold (tracemalloc), against
   what the whole table and the whole tariff (the design this replaced) would hold.

Redis: a database index of its own (15 down to 1, empty, claimed like the test suite's).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import random
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis
from sqlalchemy import select

import billing_core.api.methods  # noqa: F401  (the registry's methods)
from bench.world import DIRECTIONS, BenchWorld, provision
from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.cache.keys import NS_RATING
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.rating.decks import import_deck
from billing_core.rating.directions import DirectionIndex
from billing_core.rating.engine import TariffIndex, _entries_query, _entry_json
from billing_core.rating.tables import directions
from callgate.logging_setup import configure_logging

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379"


def write_deck(path: Path, rows: int) -> None:
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as out:
        out.write("code,direction,cost,route,priority\n")
        written = 0
        for code, name, _min, _max, price1, price2 in DIRECTIONS:
            out.write(f"{code},{name},{price1},bench-primary,1\n{code},{name},{price2},bench-backup,2\n")
            written += 2
        for i in range(rows - written):
            out.write(f"2{i:07d},Zone {i // 1000},0.{rng.randint(1, 9999):04d},bench-primary,1\n")


def claim_redis() -> tuple[str, Callable[[], None]]:
    claims = redis.Redis.from_url(f"{REDIS}/0")
    for index in range(15, 0, -1):
        key = f"callgate-test:claim:{index}"
        if claims.set(key, "bench.rate_decks", nx=True, ex=3600):
            if redis.Redis.from_url(f"{REDIS}/{index}").dbsize() == 0:
                url = f"{REDIS}/{index}"

                def release(url: str = url, key: str = key) -> None:
                    redis.Redis.from_url(url).flushdb()
                    claims.delete(key)

                return url, release
            claims.delete(key)
    raise SystemExit("no empty Redis database index is free")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


class Bench:
    def __init__(self, name: str, settings: Settings, world: BenchWorld) -> None:
        self.name, self.world = name, world
        self.services = Services.build(settings)
        self.dispatcher = Dispatcher(self.services)
        self.seq = 0

    def numbers(self, rng: random.Random, count: int) -> list[str]:
        return [rng.choice(self.world.directions).number(rng) for _ in range(count)]

    async def rate(self, number: str) -> None:
        gens = await self.services.cache.generations()
        await self.services.rating.rate(gens, tariff_id=self.world.tariff_id, option_ids=(), number=number, prior=1)

    async def prepare(self, number: str) -> None:
        self.seq += 1
        login = self.world.extensions[self.seq % len(self.world.extensions)]
        cred = Credentials(peer_ip="127.0.0.1", transport="bench", apikey=self.world.http_key,
                           call_uid=f"{self.name}-{self.seq}")  # fmt: skip
        outcome = await self.dispatcher.call("callPrepare", {"login": login, "destination": number}, cred)
        assert outcome.ok, outcome.error
        await self.dispatcher.call(
            "callFinish", {"login": login, "destination": number, "length": "0", "status": "NOANSWER"}, cred
        )

    async def run(self, what: str, numbers: list[str]) -> list[float]:
        call = self.rate if what == "rate" else self.prepare
        return [await timed(lambda n=n: call(n)) for n in numbers]  # type: ignore[misc]


async def memory(large: Bench, calls: int, rng: random.Random) -> dict[str, float]:
    """MB held: the cache entries of `calls` cold numbers, and the whole-table design."""
    await large.services.cache.invalidate(NS_RATING)
    numbers = large.numbers(rng, calls)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for number in numbers:
        await large.rate(number)
    gc.collect()
    entries = (tracemalloc.get_traced_memory()[0] - before) / 1e6
    tracemalloc.stop()
    c = directions.c
    async with large.services.db.begin(timeout_s=600) as conn:  # a decision's 5 s do not load it
        rows = [list(r) for r in (await conn.execute(select(c.id, c.code, c.direction, c.min_len, c.max_len))).all()]
        entry_rows = [_entry_json(r) for r in (await conn.execute(_entries_query(large.world.tariff_id))).all()]
    gc.collect()
    tracemalloc.start()
    index = DirectionIndex.from_rows(rows)
    whole_directions = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    tracemalloc.start()
    tariff = TariffIndex({"tariff": {"id": large.world.tariff_id, "name": "bench", "bill_type": "byminute",
                                     "is_option": False, "multiplier": "1"}, "entries": entry_rows})  # fmt: skip
    whole_tariff = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    del index, tariff
    return {"cold_entries_mb": entries, "cold_numbers": calls, "whole_directions_mb": whole_directions,
            "whole_tariff_mb": whole_tariff, "directions": len(rows), "entries": len(entry_rows)}  # fmt: skip


async def import_timing(settings: Settings, deck: Path, label: str) -> None:
    services = Services.build(settings)
    try:
        for attempt in ("first", "again"):
            started = time.perf_counter()
            report = await import_deck(services.db, deck, tariff="bench")
            elapsed = time.perf_counter() - started
            assert report.applied, report.summary()
            print(f"import {label} {attempt}: {elapsed:.1f} s  {report.summary()}", flush=True)
        await services.cache.invalidate(NS_RATING)
    finally:
        await services.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sqlite", action="store_true", help="also time the import on the embedded default")
    parser.add_argument("--memory-only", action="store_true", help="only the memory figures, on the large world left")
    args = parser.parse_args()
    configure_logging("warning")
    redis_url, release = claim_redis()
    workdir = Path(tempfile.mkdtemp(prefix="rate-decks-"))
    try:
        deck = workdir / "deck.csv"
        write_deck(deck, args.rows)
        print(f"deck: {args.rows} rows, {deck.stat().st_size / 1e6:.0f} MB", flush=True)
        base = Settings(secret_file=str(workdir / "secret"), spool_dir=str(workdir / "spool"), agi_port=0, http_port=0)
        small_s = dataclasses.replace(base, database_url=f"{PG}/callgate_bench_decks_small", redis_url=redis_url)
        large_s = dataclasses.replace(base, database_url=f"{PG}/callgate_bench_decks_large", redis_url=redis_url)
        if args.memory_only:
            from bench.world import Direction

            made = tuple(Direction(code, lo, hi) for code, _, lo, hi, _, _ in DIRECTIONS)
            large = Bench("large", large_s, BenchWorld("", "", (), made, 1))
            print("memory:", await memory(large, args.calls, random.Random(3)))
            await large.services.close()
            return
        small_w = await provision(small_s, users=10)
        large_w = await provision(large_s, users=10)
        await import_timing(large_s, deck, "PostgreSQL")
        if args.sqlite:
            lite = dataclasses.replace(base, database_url=f"sqlite+aiosqlite:///{workdir / 'callgate.db'}")
            await provision(lite, users=1)
            await import_timing(lite, deck, "SQLite")
        small, large = Bench("small", small_s, small_w), Bench("large", large_s, large_w)
        rng = random.Random(11)
        pool = small.numbers(rng, 200)
        results: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
        for run in range(args.runs):
            order = (small, large) if run % 2 == 0 else (large, small)
            for what in ("rate", "prepare"):
                for mode in ("warm", "cold"):
                    numbers = [rng.choice(pool) for _ in range(args.calls)] if mode == "warm" else None
                    for bench in order:
                        if mode == "cold":  # new numbers, and a fresh generation
                            await bench.services.cache.invalidate(NS_RATING)
                            await bench.rate(pool[0])
                        picked = numbers if numbers is not None else bench.numbers(rng, args.calls)
                        await bench.run(what, picked[:50])  # warm the path itself
                        took = await bench.run(what, picked)
                        results.setdefault((bench.name, what, mode), []).append(
                            (percentile(took, 0.5), percentile(took, 0.99))
                        )
            print(f"run {run + 1}/{args.runs} done", flush=True)
        print("\nmedian over runs of each run's p50 / p99, ms")
        for (name, what, mode), runs in sorted(results.items()):
            p50 = statistics.median(r[0] for r in runs)
            p99 = statistics.median(r[1] for r in runs)
            print(f"{name:6} {what:8} {mode:5} p50 {p50:.3f}  p99 {p99:.3f}")
        print("\nmemory:", await memory(large, args.calls, rng))
        for bench in (small, large):
            await bench.services.close()
    finally:
        release()


if __name__ == "__main__":
    asyncio.run(main())
