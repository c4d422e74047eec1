"""`callgate dids import FILE.csv` (the local provider's stock) and `callgate maintenance`.

    callgate dids import FILE.csv   header did,country,area[,voice_support,sms_support]; the
                                    numbers the `local` pools of that country and area sell
    callgate maintenance            doMaintenance once: DID renewals and releases, lapsed
                                    holds, exchange rates; prints one JSON line per task.
                                    From cron, e.g. `17 3 * * * cd /srv/callgate && callgate maintenance`
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from billing_core.cache.keys import NS_PROFILES, NS_RATING
from billing_core.container import Services
from billing_core.numbers.providers import import_stock, read_stock_csv


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dids = sub.add_parser("dids", help="direct numbers").add_subparsers(dest="dids_command", required=True)
    imp = dids.add_parser("import", help="load the local provider's numbers from CSV")
    imp.add_argument("file", help="header did,country,area[,voice_support,sms_support]")
    sub.add_parser("maintenance", help="run doMaintenance once (cron): DID renewals, holds, exchange rates")


async def dids_import(services: Services, args: argparse.Namespace) -> int:
    rows, errors = read_stock_csv(args.file)
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # the bar goes to stderr (and only to a terminal): stdout keeps the one summary line
    with Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("numbers", total=len(rows))
        report = await import_stock(services.db, rows, lambda n: progress.advance(task, n))
    for line in errors:
        print(f"{args.file}: {line}", file=sys.stderr)
    print(f"inserted={report.inserted} present={report.present} errors={len(errors)}")
    return 0 if not errors else 1


async def maintenance(services: Services) -> int:
    import billing_core.api.methods  # noqa: F401 - registers every subsystem's maintenance task
    from billing_core.numbers.maintenance_api import run_maintenance

    report = await run_maintenance(services)
    await services.cache.invalidate(NS_PROFILES, NS_RATING)
    failed = False
    for name, values in report.items():
        print(json.dumps({"task": name, **values}))
        failed = failed or "error" in values
    return 1 if failed else 0
