"""`callgate rates import` and `callgate directions import`: bulk loads with progress.

    callgate rates import FILE.csv --tariff NAME [--owner USER]
                          header code,direction,cost,route,priority; replaces the tariff's entries
    callgate directions import FILE.csv
                          header code,direction,min_len,max_len; upserts directions by code

On a terminal the progress is a rich progress bar (on stderr); otherwise (a pipe, a log,
cron) it is plain lines on stderr, one per phase and one per tenth of the rows. The summary
and every bad line go to stdout. Exit 0 when the file was loaded, 1 when bad rows kept
anything from being loaded (nothing was), 2 when the file or the tariff is unusable.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from billing_core.cache.keys import NS_RATING
from billing_core.container import Services
from billing_core.rating.decks import import_deck
from billing_core.rating.direction_import import import_directions_file


class LineProgress:
    """Plain progress lines: a phase's start, each tenth of its rows, its end."""

    def __init__(self, out: TextIO, command: str) -> None:
        self.out = out
        self.command = command
        self.name = ""
        self.total: int | None = None
        self.done = 0
        self.next_mark = 0
        self.started = 0.0

    def phase(self, name: str, total: int | None = None) -> None:
        self.name, self.total, self.done, self.started = name, total, 0, time.monotonic()
        self.next_mark = max((total or 0) // 10, 1)
        suffix = f" ({total} rows)" if total is not None else ""
        self._say(f"{name}{suffix}")

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.total and self.done >= self.next_mark:
            percent = min(100, 100 * self.done // self.total)
            self._say(f"{self.name}: {self.done}/{self.total} rows ({percent}%)")
            while self.next_mark <= self.done:
                self.next_mark += max(self.total // 10, 1)

    def finish(self) -> None:
        if self.name:
            rows = f" {self.done} rows," if self.total is not None else ""
            self._say(f"{self.name}: done,{rows} {time.monotonic() - self.started:.1f} s")
            self.name = ""

    def _say(self, text: str) -> None:
        print(f"{self.command}: {text}", file=self.out, flush=True)


class BarProgress:
    """A rich progress bar per phase (a terminal)."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=None, transient=False,
        )  # fmt: skip
        self.task: TaskID | None = None

    def __enter__(self) -> BarProgress:
        self.bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.finish()
        self.bar.stop()

    def phase(self, name: str, total: int | None = None) -> None:
        self.finish()
        self.task = self.bar.add_task(name, total=total)

    def advance(self, rows: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, rows)

    def finish(self) -> None:
        if self.task is not None:
            task = self.bar.tasks[-1]
            self.bar.update(self.task, total=task.completed if task.total is None else task.total,
                            completed=task.total if task.total is not None else task.completed)  # fmt: skip
            self.task = None


async def _run(services: Services, args: argparse.Namespace, command: str) -> int:
    async def work(progress: LineProgress | BarProgress) -> tuple[bool, str]:
        if command == "rates import":
            deck = await import_deck(services.db, args.file, tariff=args.tariff, owner=args.owner, progress=progress)
            return deck.ok, deck.summary()
        loaded = await import_directions_file(services.db, args.file, progress=progress)
        return loaded.ok, loaded.summary()

    if sys.stderr.isatty():
        with BarProgress() as bar:
            ok, summary = await work(bar)
    else:
        ok, summary = await work(LineProgress(sys.stderr, command))
    if ok:
        await services.cache.invalidate(NS_RATING)
    print(summary)
    return 0 if ok else 1


async def rates_import(services: Services, args: argparse.Namespace) -> int:
    return await _run(services, args, "rates import")


async def directions_import(services: Services, args: argparse.Namespace) -> int:
    return await _run(services, args, "directions import")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    directions = sub.add_parser("directions", help="directions").add_subparsers(
        dest="directions_command", required=True
    )
    imp = directions.add_parser("import", help="upsert directions from CSV (code,direction,min_len,max_len)")
    imp.add_argument("file")
    rates = sub.add_parser("rates", help="tariffs' rate decks").add_subparsers(dest="rates_command", required=True)
    deck = rates.add_parser(
        "import", help="replace a tariff's entries with a CSV deck (code,direction,cost,route,priority)"
    )
    deck.add_argument("file")
    deck.add_argument("--tariff", required=True, help="the tariff's name (addRates' name)")
    deck.add_argument("--owner", default="admin", help="the tariff's owner (its routes are the deck's)")
