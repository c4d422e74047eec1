"""API methods: administering tariffs, their entries and bill types (spec section
"Directions and tarification"): getRatesInfo, updateRates, deleteRates, updateDirections,
updateMarkup, copyDirections, getBillType, updateBillType, deleteBillType. Logic in
billing_core.rating.tariffs, .tariff_admin, .entry_batch and .bill_types; the choices
where the spec is silent are in docs/decisions.md ("Routing and tarification
administration")."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import StringConstraints

from billing_core.cache.keys import NS_RATING
from billing_core.catalog.params import Amount, Bool, Int, Num, Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext
from billing_core.rating import bill_types, entry_batch, tariff_admin, tariffs
from billing_core.rating.context import RatingContext
from billing_core.rating.tariffs_api import current_tariff_id, eur_course_for

# updateDirections' JSON array: the method takes up to 64 KiB (the HTTP body's limit);
# the HTTP door's own per-value limit applies before it.
JsonText = Annotated[str, StringConstraints(max_length=64 * 1024)]


class TariffIdParams(Params):
    id: Int


@REGISTRY.method("getRatesInfo", level=22, params=TariffIdParams, returns="json")
async def get_rates_info(ctx: CallContext[RatingContext], p: TariffIdParams) -> dict[str, Any]:
    """One tariff, fields as getRatesList (the spec's example, then connect_fee);
    display_switch_price in the acting user's currency. Readable as getRates is."""
    actor = ctx.require_actor()
    course = await eur_course_for(ctx, actor.currency)
    return await tariffs.tariff_info(ctx.services.db, actor, p.id, eur_course=course)


class UpdateRatesParams(Params):
    id: Int
    name: Str | None = None
    bill_type: Str | None = None
    is_option: Bool | None = None
    is_public: Bool | None = None
    switch_price: Amount | None = None
    connect_fee: Amount | None = None  # callgate's own, as addRates has it
    multiplier: Num | None = None
    did_multiplier: Num | None = None
    description: Str | None = None


@REGISTRY.method("updateRates", level=22, params=UpdateRatesParams, returns="bool", invalidates=(NS_RATING,))
async def update_rates(ctx: CallContext[RatingContext], p: UpdateRatesParams) -> bool:
    changes = tariff_admin.TariffChanges(
        name=p.name,
        bill_type=p.bill_type,
        is_option=p.is_option,
        is_public=p.is_public,
        switch_price=p.switch_price,
        connect_fee=p.connect_fee,
        multiplier=p.multiplier,
        did_multiplier=p.did_multiplier,
        description=p.description,
    )
    await tariff_admin.update_tariff(ctx.services.db, ctx.require_actor(), p.id, changes)
    return True


@REGISTRY.method("deleteRates", level=22, params=TariffIdParams, returns="bool", invalidates=(NS_RATING,))
async def delete_rates(ctx: CallContext[RatingContext], p: TariffIdParams) -> bool:
    """Refused (E_DATA_ABORT) while a user, a SIP account or an active option is on it."""
    await tariff_admin.delete_tariff(ctx.services.db, ctx.require_actor(), p.id)
    return True


class UpdateDirectionsParams(Params):
    rates: Int
    directions: JsonText


@REGISTRY.method("updateDirections", level=22, params=UpdateDirectionsParams, returns="bool", invalidates=(NS_RATING,))
async def update_directions(ctx: CallContext[RatingContext], p: UpdateDirectionsParams) -> bool:
    """`directions`: a JSON array of updateDirection's arguments
    (`[{"direction": 600, "prior": 1, "cost": "0.18", "route": 11, "priority": 2}, …]`),
    applied all or nothing."""
    changes = entry_batch.parse_changes(p.directions, p.rates)
    await entry_batch.update_entries(ctx.services.db, ctx.require_actor(), p.rates, changes)
    return True


class UpdateMarkupParams(Params):
    rates: Int
    markup: Num


@REGISTRY.method("updateMarkup", level=22, params=UpdateMarkupParams, returns="bool", invalidates=(NS_RATING,))
async def update_markup(ctx: CallContext[RatingContext], p: UpdateMarkupParams) -> bool:
    await entry_batch.apply_markup(ctx.services.db, ctx.require_actor(), p.rates, p.markup)
    return True


class CopyDirectionsParams(Params):
    rates: Int


@REGISTRY.method("copyDirections", level=22, params=CopyDirectionsParams, returns="bool", invalidates=(NS_RATING,))
async def copy_directions(ctx: CallContext[RatingContext], p: CopyDirectionsParams) -> bool:
    """The acting user's current tariff (the one getCurrentRates shows it) is copied into
    `rates`, whose entries it replaces."""
    source = await current_tariff_id(ctx)
    await entry_batch.copy_entries(ctx.services.db, ctx.require_actor(), source_id=source, target_id=p.rates)
    return True


class BillTypeParams(Params):
    bill_type: Str


@REGISTRY.method("getBillType", level=33, params=BillTypeParams, returns="json")
async def get_bill_type(ctx: CallContext[RatingContext], p: BillTypeParams) -> dict[str, Any]:
    return await bill_types.get_bill_type(ctx.services.db, p.bill_type)


class UpdateBillTypeParams(Params):
    bill_type: Str
    free_threshold: Int | None = None
    step: Int | None = None


@REGISTRY.method("updateBillType", level=33, params=UpdateBillTypeParams, returns="bool", invalidates=(NS_RATING,))
async def update_bill_type(ctx: CallContext[RatingContext], p: UpdateBillTypeParams) -> bool:
    await bill_types.update_bill_type(ctx.services.db, name=p.bill_type, free_threshold=p.free_threshold, step=p.step)
    return True


@REGISTRY.method("deleteBillType", level=33, params=BillTypeParams, returns="bool", invalidates=(NS_RATING,))
async def delete_bill_type(ctx: CallContext[RatingContext], p: BillTypeParams) -> bool:
    """Refused (E_DATA_ABORT) while a tariff uses it."""
    await bill_types.delete_bill_type(ctx.services.db, p.bill_type)
    return True
