"""API methods: directions, tariffs, tariff entries, bill types (spec section
"Directions and tarification"); logic in billing_core.rating.tariffs, .tariff_entries,
.prices, .bill_types and .directions."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from billing_core.cache.keys import NS_RATING
from billing_core.catalog.params import Amount, Bool, Int, NoParams, Num, Params, Str
from billing_core.catalog.registry import REGISTRY, Aliases, CallContext, TextAnswer
from billing_core.errors import ApiError, ErrorCode
from billing_core.rating import bill_types, directions, prices, tariff_entries, tariffs
from billing_core.rating.context import RatingContext

_CURRENCY = re.compile(r"[A-Z]{3}")


async def eur_course_for(ctx: CallContext[RatingContext], currency: str) -> Decimal:
    """Units of `currency` per EUR; E_NOT_EXIST for a currency the billing does not keep."""
    code = currency.strip().upper()
    if not _CURRENCY.fullmatch(code):
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "currency must be a 3-letter code such as EUR")
    course = await ctx.services.rating.eur_course(ctx.generations, code)
    if course is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, f"unknown currency {code}")
    return course


# --- directions --------------------------------------------------------------------------


class ResolveDirectionParams(Params):
    number: Str
    select: Literal["id", "code", "direction"] = "direction"


@REGISTRY.method("resolveDirection", level=0, params=ResolveDirectionParams, returns="text")
async def resolve_direction(ctx: CallContext[RatingContext], p: ResolveDirectionParams) -> TextAnswer:
    """The direction of `number` by the rating rule (directions.longest_prefix): the longest
    code whose min_len ≤ len(number) ≤ max_len. A leading '+' is dropped; anything but
    digits is E_INVALID_ARGUMENT; a number no direction covers is E_UNROUTABLE
    ("Direction is not serviced") rather than E_NOT_EXIST, because that is what a call
    to it would get. The text is the selected field; `fields` carry all three."""
    found = await directions.resolve(ctx.services.db, ctx.services.cache, ctx.generations, p.number)
    values = {"id": str(found.id), "code": found.code, "direction": found.direction}
    return TextAnswer(text=values[p.select], result="OK", fields=values)


class GetDirectionsParams(Params):
    distinct: Bool = True


@REGISTRY.method(
    "getDirections",
    level=0, params=GetDirectionsParams, returns="json",
    aliases=Aliases(vcs=("directions.list",), billmgr=("direction",), elid="id"),
)
async def get_directions(ctx: CallContext[RatingContext], p: GetDirectionsParams) -> list[dict[str, Any]]:
    """Every direction as {"code", "id", "direction", "min_len", "max_len"}, by code.

    `distinct` is accepted for compatibility and changes nothing: codes are unique here,
    so each row is already one distinct code of one direction."""
    index = await directions.direction_index(ctx.services.db, ctx.services.cache, ctx.generations)
    return index.to_json()


# --- tariffs -----------------------------------------------------------------------------


class AddRatesParams(Params):
    table: Str
    name: Str
    bill_type: Str = "byminute"
    is_option: Bool = False
    is_public: Bool = False
    switch_price: Amount = Decimal("0.00")  # charged once, when switchRates connects it
    connect_fee: Amount = Decimal("0.00")  # callgate's own: EUR per billed call (docs/billing.md)
    multiplier: Num = Decimal("1.00")
    did_multiplier: Num = Decimal("1.00")
    description: Str = ""


@REGISTRY.method(
    "addRates",
    level=22, params=AddRatesParams, returns="bool", invalidates=(NS_RATING,),
    aliases=Aliases(vcs=("tariffs.add",), billmgr=("tariff.edit#create",), elname="name"),
)
async def add_rates(ctx: CallContext[RatingContext], p: AddRatesParams) -> bool:
    new = tariffs.NewTariff(
        table=p.table,
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
    await tariffs.add_tariff(ctx.services.db, ctx.require_actor(), new)
    return True


class GetRatesListParams(Params):
    all: Bool = False
    is_public: Bool = False
    is_option: Bool | None = None  # unset: tariffs and options


@REGISTRY.method(
    "getRatesList",
    level=1, params=GetRatesListParams, returns="json",
    aliases=Aliases(vcs=("tariffs.list",), billmgr=("tariff",), elid="id"),
)
async def get_rates_list(ctx: CallContext[RatingContext], p: GetRatesListParams) -> list[dict[str, Any]]:
    """Tariffs the acting user may see (tariff_access.tariff_list_filter), fields as the spec's
    example; display_switch_price is in the acting user's currency."""
    actor = ctx.require_actor()
    course = await eur_course_for(ctx, actor.currency)
    return await tariffs.list_tariffs(
        ctx.services.db,
        actor,
        eur_course=course,
        include_managed=p.all,
        public_only=p.is_public,
        is_option=p.is_option,
    )


class GetRatesParams(Params):
    id: Int


@REGISTRY.method(
    "getRates",
    level=1, params=GetRatesParams, returns="json",
    aliases=Aliases(vcs=("tariffs.editForm",), billmgr=("tariff.edit#show",), elid="id"),
)
async def get_rates(ctx: CallContext[RatingContext], p: GetRatesParams) -> list[dict[str, Any]]:
    """A tariff's entries, one object per direction (shape: prices.render_prices),
    displaycost in the acting user's currency. Entries on disabled routes are listed
    too: this is the tariff as configured."""
    actor = ctx.require_actor()
    await tariffs.readable_tariff(ctx.services.db, actor, p.id)
    course = await eur_course_for(ctx, actor.currency)
    priced = await prices.tariff_prices(ctx.services, ctx.generations, p.id)
    if priced is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, f"no tariff {p.id}")
    return prices.render_prices(priced, course)


class GetCurrentRatesParams(Params):
    currency: Str = "EUR"


async def current_tariff_id(ctx: CallContext[RatingContext]) -> int:
    """Which tariff getCurrentRates shows.

    - Anonymous (no user): the operator's public price list, i.e. the lowest-id public
      tariff (not an option) owned by an administrator.
    - A user: the sip_rates_id of the extension it logged in with (keys that authorize by
      sip_extension), else of its first extension; else its own rates_id — the order the
      rating engine uses for a call. Tariff options are not merged in.
    None of these → E_NOT_EXIST.
    """
    actor = ctx.actor
    if actor is None:
        public = await tariffs.public_price_list(ctx.services.db)
        if public is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, "there is no public tariff")
        return public
    profiles = ctx.services.profiles
    extension = None
    if ctx.user is not None and ctx.user.id == actor.id and ctx.key.auth_by == "sip_extension":
        login = ctx.key.default_user if not ctx.key.is_server_key and ctx.key.default_user else ctx.raw.get("login", "")
        extension = await profiles.extension(ctx.generations, login) if login else None
        if extension is not None and extension.user_id != actor.id:
            extension = None
    if extension is None:
        extension = await profiles.first_extension_of(ctx.generations, actor.id)
    if extension is not None and extension.sip_rates_id is not None:
        return extension.sip_rates_id
    if actor.rates_id is not None:
        return actor.rates_id
    raise ApiError(ErrorCode.E_NOT_EXIST, "no tariff is assigned to you")


@REGISTRY.method("getCurrentRates", level=0, params=GetCurrentRatesParams, returns="json")
async def get_current_rates(ctx: CallContext[RatingContext], p: GetCurrentRatesParams) -> list[dict[str, Any]]:
    """The prices the current user calls at (see current_tariff_id), displaycost in
    `currency` (E_NOT_EXIST if unknown). Same shape as getRates, but only entries on
    enabled routes: what a call can actually use."""
    course = await eur_course_for(ctx, p.currency)
    tariff_id = await current_tariff_id(ctx)
    priced = await prices.tariff_prices(ctx.services, ctx.generations, tariff_id)
    if priced is None:
        raise ApiError(ErrorCode.E_NOT_EXIST, "your tariff does not exist any more")
    return prices.render_prices(priced, course, serviced_only=True)


# --- tariff entries ----------------------------------------------------------------------


class AddDirectionParams(Params):
    rates: Int
    direction: Int
    cost: Amount
    route: Int
    priority: Int = 1


@REGISTRY.method(
    "addDirection",
    level=22, params=AddDirectionParams, returns="bool", invalidates=(NS_RATING,),
    aliases=Aliases(vcs=("rates.add",), billmgr=("rate.edit#create",), plid="rates"),
)
async def add_direction(ctx: CallContext[RatingContext], p: AddDirectionParams) -> bool:
    await tariff_entries.add_entry(
        ctx.services.db,
        ctx.require_actor(),
        tariff_id=p.rates,
        direction_id=p.direction,
        cost=p.cost,
        route_id=p.route,
        priority=p.priority,
    )
    return True


class UpdateDirectionParams(Params):
    rates: Int
    direction: Int
    prior: Int = 1  # selects the entry
    cost: Amount | None = None
    route: Int | None = None
    priority: Int | None = None  # moves the entry


@REGISTRY.method(
    "updateDirection",
    level=22, params=UpdateDirectionParams, returns="bool", invalidates=(NS_RATING,),
    aliases=Aliases(vcs=("rates.edit",), billmgr=("rate.edit#update",), plid="rates", elid="direction"),
)
async def update_direction(ctx: CallContext[RatingContext], p: UpdateDirectionParams) -> bool:
    await tariff_entries.update_entry(
        ctx.services.db,
        ctx.require_actor(),
        tariff_id=p.rates,
        direction_id=p.direction,
        prior=p.prior,
        cost=p.cost,
        route_id=p.route,
        priority=p.priority,
    )
    return True


class DeleteDirectionParams(Params):
    rates: Int
    direction: Int
    prior: Int = 1


@REGISTRY.method(
    "deleteDirection",
    level=22, params=DeleteDirectionParams, returns="bool", invalidates=(NS_RATING,),
    aliases=Aliases(vcs=("rates.delete",), billmgr=("rate.delete",), plid="rates", elid="direction"),
)
async def delete_direction(ctx: CallContext[RatingContext], p: DeleteDirectionParams) -> bool:
    await tariff_entries.delete_entry(
        ctx.services.db, ctx.require_actor(), tariff_id=p.rates, direction_id=p.direction, prior=p.prior
    )
    return True


# --- bill types --------------------------------------------------------------------------


class AddBillTypeParams(Params):
    bill_type: Str
    free_threshold: Int
    step: Int


@REGISTRY.method("addBillType", level=33, params=AddBillTypeParams, returns="bool", invalidates=(NS_RATING,))
async def add_bill_type(ctx: CallContext[RatingContext], p: AddBillTypeParams) -> bool:
    await bill_types.add_bill_type(ctx.services.db, name=p.bill_type, free_threshold=p.free_threshold, step=p.step)
    return True


@REGISTRY.method("getBillTypes", level=22, params=NoParams, returns="json")
async def get_bill_types(ctx: CallContext[RatingContext], p: NoParams) -> list[dict[str, Any]]:
    """[{"type", "free_threshold", "step"}] by type name (the spec's example opens with a
    stray '[[': this is the flat list it describes)."""
    return await bill_types.list_bill_types(ctx.services, ctx.generations)
