"""doMaintenance (also `callgate maintenance`, from cron): the maintenance run.

The tasks registered here, in this order: `dids` (orders a crash left pending, renewals
of rented numbers, releases after the grace: billing_core.numbers.renewals), `holds`
(holds past their expiry marked expired: billing_core.ledger.book), `exchange_rates`
(from CALLGATE_RATES_SOURCE: billing_core.ledger.exchange_rates). Other subsystems add
theirs with `@MAINTENANCE.task` (billing_core.catalog.maintenance). The answer is true,
with what each task did in the description.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from billing_core.cache.keys import NS_PROFILES, NS_RATING
from billing_core.catalog.maintenance import MAINTENANCE, describe
from billing_core.catalog.params import Params
from billing_core.catalog.registry import REGISTRY, CallContext, DescribedAnswer
from billing_core.clock import utcnow
from billing_core.ledger.book import expire_reservations
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.exchange_rates import update_rates
from billing_core.numbers import did_orders, renewals


@MAINTENANCE.task("dids", order=10)
async def did_rent(services: LedgerContext, now: datetime) -> dict[str, Any]:
    report = renewals.RenewalReport()
    report.orders_closed = await did_orders.close_stale_orders(services, now)
    await renewals.renew_due(services, now, report)
    await renewals.release_lapsed(services, now, report)
    return report.as_json()


@MAINTENANCE.task("holds", order=20)
async def holds(services: LedgerContext, now: datetime) -> dict[str, Any]:
    return {"expired": await expire_reservations(services.db, now)}


@MAINTENANCE.task("exchange_rates", order=30)
async def exchange_rates(services: LedgerContext, now: datetime) -> dict[str, Any]:
    settings = services.settings
    return (await update_rates(services.db, settings.rates_source, settings.system_currency)).as_json()


async def run_maintenance(services: LedgerContext, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Every registered task once; the caller invalidates the cache (the method does by
    its `invalidates`, the CLI itself)."""
    return await MAINTENANCE.run(services, now or utcnow())


class NoArgs(Params):
    pass


@REGISTRY.method("doMaintenance", level=90, params=NoArgs, returns="bool", invalidates=(NS_PROFILES, NS_RATING))
async def do_maintenance(ctx: CallContext[LedgerContext], p: NoArgs) -> DescribedAnswer:
    report = await run_maintenance(ctx.services)
    return DescribedAnswer(True, describe(report))
