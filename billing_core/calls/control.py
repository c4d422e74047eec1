"""Call control: callPrepare (rate, then hold the money) and callFinish (charge, write the CDR).

Rating comes from billing_core.rating.engine (through the cache, never inside a
transaction); money moves only through the call ledger (billing_core.ledger.call_ledger),
whose every write is ONE atomic step under the account's row lock. The prices and the
plan (how long a call the money buys) are decided here. The rules are in docs/billing.md.
The arguments are checked and normalised by billing_core.calls.call_input (re-exported).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, Decimal

import structlog

from billing_core.calls.call_input import call_uid_for, is_answered, normalize_destination, reported_length
from billing_core.clock import utcnow
from billing_core.config import SYSTEM_CURRENCY
from billing_core.errors import ApiError, ErrorCode
from billing_core.ledger import book as ledger
from billing_core.ledger import slices
from billing_core.ledger.book import Hold, expire_reservations, run_expiry_loop
from billing_core.ledger.call_ledger import CallRecord, DuplicateCall, StoredAnswer
from billing_core.ledger.context import LedgerContext
from billing_core.money import ZERO, format_money, to_display
from billing_core.numbers import aliases
from billing_core.rating.engine import Rating, max_call_time, reserve_amount
from billing_core.records import ExtensionRecord, KeyRecord, UserRecord

log = structlog.get_logger(__name__)

__all__ = [
    "CallAnswer",
    "Caller",
    "Finish",
    "call_uid_for",  # the arguments are call_input's, re-exported
    "expire_reservations",  # the reservation sweeper lives with the ledger, re-exported
    "find_caller",
    "finish_call",
    "is_answered",
    "normalize_destination",
    "prepare_call",
    "reported_length",
    "run_expiry_loop",
]

Generations = dict[str, int] | None

ACTIVE = 1
EXTERNAL_BLOCKED = 2  # users.active = 2: internal calls only; every other value but 1 blocks all
NO_PITCH = -1
UNLIMITED = Decimal("Infinity")  # the first hold attempt plans for money without limit
MAX_HOLD_ATTEMPTS = 8
# Why a call cannot be rated now: callPrepare declines with it, callFinish prices at the hold.
NOT_RATED = (ErrorCode.E_UNROUTABLE, ErrorCode.E_HAS_NO_ONE_TOLD_YOU_SHE_IS_NOT_BREATHING)


# -- who calls ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    user: UserRecord
    extension: ExtensionRecord | None
    callerid: str

    @property
    def pitch(self) -> str:
        return str(self.extension.sip_pitch_shift if self.extension else NO_PITCH)


async def find_caller(
    services: LedgerContext, gens: Generations, *, key: KeyRecord, user: UserRecord, login: str, callerid: str | None
) -> Caller:
    """The extension (the key's login when it authorizes by sip_extension, else the user's
    first one) and the caller ID (argument, extension's, user's, then the login)."""
    if key.auth_by == "sip_extension" and login:
        extension = await services.profiles.extension(gens, login)
    else:
        extension = await services.profiles.first_extension_of(gens, user.id)
    chosen = callerid or (extension.sip_callerid if extension else "") or user.callerid or login or user.username
    return Caller(user, extension, chosen)


# -- answers -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallAnswer:
    """A text answer of the spec (the API layer turns it into its TextAnswer)."""

    text: str
    result: str
    ok: bool = True
    error: str = ""
    fields: dict[str, str] = field(default_factory=dict)


def _token(value: str) -> str:
    """A value inside a space-separated answer line: no whitespace, '-' when empty."""
    return "".join(value.split()) or "-"


def declined(code: ErrorCode) -> CallAnswer:
    return CallAnswer(text=f"Declined {code.value}", result="Declined", ok=False, error=code.value)


def allowed(caller: Caller, rating: Rating, max_time_s: int, *, ring_s: int) -> CallAnswer:
    """The spec's Allowed line; the fields add CALLGATE_RINGTIME (Dial's time-out, which the
    hold lasts for), which is callgate's own and so not in the text."""
    fields = {
        "CALLGATE_MAXTIME": str(max_time_s),
        "CALLGATE_DESTINATION": rating.destination,
        "CALLGATE_CALLERID": caller.callerid,
        "CALLGATE_DIRECTION": rating.direction,
        "CALLGATE_ROUTE_PREFIX": rating.prefix,
        "CALLGATE_ROUTE": rating.route,
        "CALLGATE_PITCH_RX": caller.pitch,
        "CALLGATE_PITCH_TX": caller.pitch,
    }
    text = " ".join(["Allowed", *(_token(v) for v in fields.values())])
    fields["CALLGATE_RINGTIME"] = str(ring_s)
    return CallAnswer(text=text, result="Allowed", fields=fields)


def saved(text: str, display_cost: Decimal, currency: str) -> CallAnswer:
    fields = {"CALLGATE_COST": format_money(display_cost), "CALLGATE_CURRENCY": currency}
    return CallAnswer(text=text, result="Saved", fields=fields)


# -- callPrepare -------------------------------------------------------------


def call_cap(services: LedgerContext, caller: Caller) -> int:
    """The shortest of the configured ceilings (0 = no cap for the user's and extension's)."""
    caps = [services.settings.max_call_s, caller.user.allowed_call_len]
    if caller.extension is not None:
        caps.append(caller.extension.sip_max_call_len)
    return min(c for c in caps if c > 0)


async def _rate(services: LedgerContext, gens: Generations, caller: Caller, dialled: str, prior: int) -> Rating:
    """Rate a call (cache only): a dialled alias as its destination (numbers.aliases); a
    local extension → internal (only prior 1 exists)."""
    ext = caller.extension
    try:
        number = await aliases.resolve(
            services, gens, sip_extension=ext.sip_extension if ext is not None else None,
            username=caller.user.username, number=dialled,
        )  # fmt: skip
    except aliases.AliasLoop as loop:
        raise ApiError(ErrorCode.E_HAS_NO_ONE_TOLD_YOU_SHE_IS_NOT_BREATHING, f"alias loop {loop}") from None
    if await services.profiles.local_extension(gens, number) is not None:
        if prior != 1:
            raise ApiError(ErrorCode.E_UNROUTABLE, "an internal call has one route")
        rating = Rating.for_internal(number)
    else:
        tariff_id = ext.sip_rates_id if ext is not None and ext.sip_rates_id is not None else caller.user.rates_id
        options = ext.option_ids if ext is not None else ()
        rating = await services.rating.rate(gens, tariff_id=tariff_id, option_ids=options, number=number, prior=prior)
    return rating if number == dialled else replace(rating, alias=dialled)


async def prepare_call(
    services: LedgerContext, gens: Generations, caller: Caller, *, destination: str, prior: int, call_uid: str,
    slice_s: int = 0,
) -> CallAnswer:  # fmt: skip
    """`slice_s` > 0: the call is supervised (billing_core.calls.supervision): it is allowed
    as long as the account's money lasts, but holds only its first `slice_s` seconds."""
    number = normalize_destination(destination)
    active = caller.user.active
    if active not in (ACTIVE, EXTERNAL_BLOCKED):
        return _log_decline(ErrorCode.E_USER_LOCKED, caller, call_uid, prior)
    try:
        rating = await _rate(services, gens, caller, number, prior)
    except ApiError as exc:
        if exc.code not in NOT_RATED:
            raise
        return _log_decline(exc.code, caller, call_uid, prior, exc.detail)
    if active == EXTERNAL_BLOCKED and not rating.internal:
        return _log_decline(ErrorCode.E_USER_LOCKED, caller, call_uid, prior)
    try:
        return await _hold(services, caller, rating, prior=prior, call_uid=call_uid, slice_s=slice_s)
    except DuplicateCall:
        # The same (call_uid, prior) was held concurrently (for another account).
        existing = await services.call_ledger.find_reservation(call_uid, prior)
        return _replay_hold(caller, existing, services.settings.ring_timeout_s)


def _plan(rating: Rating, cap_s: int, available: Decimal, slice_s: int = 0) -> tuple[int, Decimal] | None:
    """The longest call `available` pays for, and what to hold for it (None: not one step):
    all of it, or its first `slice_s` seconds for a supervised call."""
    if rating.internal:
        return cap_s, ZERO
    max_time_s = max_call_time(
        price_per_minute=rating.price_per_minute,
        connect_fee=rating.connect_fee,
        step=rating.step,
        free_threshold=rating.free_threshold,
        available=available,
        cap_s=cap_s,
    )
    if max_time_s is None:
        return None
    held_s = min(max_time_s, slice_s) if slice_s > 0 else max_time_s
    amount = reserve_amount(
        rating.billed(held_s), price_per_minute=rating.price_per_minute, connect_fee=rating.connect_fee
    )
    return max_time_s, amount


async def _hold(
    services: LedgerContext, caller: Caller, rating: Rating, *, prior: int, call_uid: str, slice_s: int = 0
) -> CallAnswer:
    """Hold the longest call the account affords. The first attempt asks for the longest call
    allowed at all (one round trip when the money is there); a `short` answer says what is
    available, and the hold is planned again for that, until it fits or not one step does."""
    cap_s = call_cap(services, caller)
    settings = services.settings
    locked_in = rating.to_json()
    available = UNLIMITED
    if slice_s > 0 and not rating.internal:  # its slice is checked atomically, its length is planned on this
        available = await slices.spendable(services.db, caller.user.account_id, utcnow())
    for _ in range(MAX_HOLD_ATTEMPTS):
        plan = _plan(rating, cap_s, available, slice_s)
        if plan is None:
            return _log_decline(ErrorCode.E_INSUFFICIENT_MONEY, caller, call_uid, prior)
        max_time_s, amount = plan
        now = utcnow()
        attempt = await services.call_ledger.try_hold(
            Hold(
                call_uid=call_uid, prior=prior, account_id=caller.user.account_id, user_id=caller.user.id,
                amount=amount, max_time_s=max_time_s, now=now,
                expires_at=ledger.expiry_for(
                    now, ring_s=settings.ring_timeout_s, max_time_s=max_time_s, grace_s=settings.reservation_grace_s
                ),
                rating=locked_in,
            )
        )  # fmt: skip
        if attempt.outcome == "exists":
            return _replay_hold(caller, attempt.reservation, settings.ring_timeout_s)
        if attempt.outcome == "finished":
            raise ApiError(ErrorCode.E_DATA_ABORT, "this call attempt is finished already")
        if attempt.outcome == "held":
            log.info(
                "call.prepared", call_uid=call_uid, prior=prior, user=caller.user.username,
                direction=rating.direction, route=rating.route, max_time_s=max_time_s, reserved=str(amount),
            )  # fmt: skip
            return allowed(caller, rating, max_time_s, ring_s=settings.ring_timeout_s)
        assert attempt.available is not None
        available = attempt.available
    # Other calls of this account kept taking the money between our attempts.
    log.warning("call.hold_contended", call_uid=call_uid, user=caller.user.username)
    return _log_decline(ErrorCode.E_INSUFFICIENT_MONEY, caller, call_uid, prior)


def _replay_hold(caller: Caller, existing: ledger.Reservation | None, ring_s: int) -> CallAnswer:
    if existing is None or existing.rating is None or existing.account_id != caller.user.account_id:
        raise ApiError(ErrorCode.E_DATA_ABORT, "this call id is already in use")
    return allowed(caller, Rating.from_json(existing.rating), existing.max_time_s, ring_s=ring_s)


def _log_decline(code: ErrorCode, caller: Caller, call_uid: str, prior: int, detail: str = "") -> CallAnswer:
    log.info("call.declined", code=code.value, user=caller.user.username, call_uid=call_uid, prior=prior, detail=detail)
    return declined(code)


# -- callFinish --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finish:
    """What the dialplan reports about one attempt."""

    destination: str
    prior: int
    call_uid: str
    length_s: Decimal
    answered_ms: int | None
    status: str
    cause: str
    is_did: str


async def finish_call(services: LedgerContext, gens: Generations, caller: Caller, report: Finish) -> CallAnswer:
    """Price the call at the rating a hold would get now and charge it in one round trip;
    the store hands the call's hold back instead when that hold was priced otherwise (a
    tariff or alias edit mid-call, a call longer than its hold), and the call is priced at it."""
    number = normalize_destination(report.destination)
    ledger_ = services.call_ledger
    try:
        rating_now: Rating | None = await _rate(services, gens, caller, number, report.prior)
    except ApiError as exc:
        if exc.code not in NOT_RATED:
            raise
        rating_now = None  # unroutable now: only the call's hold can price it
    if rating_now is not None:
        record = await _call_record(services, gens, caller, report, rating_now, max_time_s=None)
        attempt = await ledger_.charge_at_hold(record, rating=rating_now.to_json())
        if attempt.outcome == "stored":
            assert attempt.stored is not None
            return _replayed(attempt.stored)  # written before (a retry, or a concurrent duplicate)
        if attempt.outcome == "written":
            return _finished(caller, report, record, held=None)
        held = attempt.reservation
    else:
        stored, held = await ledger_.call_record(report.call_uid, report.prior)
        if stored is not None:
            return _replayed(stored)
    rating = _locked_rating(held, caller.user.account_id, number)
    if held is not None and rating is None:
        log.warning("call.reservation_mismatch", call_uid=report.call_uid, prior=report.prior)
        held = None
    if rating is None:
        if rating_now is None:
            raise ApiError(ErrorCode.E_UNROUTABLE, "no route and no hold for this call")
        rating = rating_now
    record = await _call_record(
        services, gens, caller, report, rating, max_time_s=held.max_time_s if held is not None else None
    )
    stored = await ledger_.record_call(record, reservation_id=held.id if held is not None else None)
    if stored is not None:
        return _replayed(stored)
    return _finished(caller, report, record, held=held)


async def _call_record(
    services: LedgerContext, gens: Generations, caller: Caller, report: Finish, rating: Rating,
    *, max_time_s: int | None,
) -> CallRecord:  # fmt: skip
    """The CDR of the call priced at `rating` (its destination: the number it was rated and
    dialled as, an alias's destination when the caller dialled an alias), its length capped at the hold's max time
    and, held or not, at the caps callPrepare applies (call_cap): a finish without a hold
    is never billed for longer than a prepared call could have lasted."""
    currency, course = await _display_currency(services, gens, caller.user.currency)
    length_s = min(
        reported_length(report.length_s, report.answered_ms, services.settings.billsec_rounding),
        call_cap(services, caller),
    )
    if max_time_s is not None:
        length_s = min(length_s, max_time_s)  # the dialplan's L() enforces it too
    answered = is_answered(report.status)
    billed_s = rating.billed(length_s) if answered else 0
    cost = rating.cost(billed_s) if answered else ZERO
    display = to_display(cost, course)
    text = (
        f"Saved {_token(rating.direction)} [{_token(caller.callerid)}/{rating.destination}] "
        f"via [{_token(rating.route)}] {billed_s} {format_money(display)} {currency} {report.status}"
    )
    return CallRecord(
        call_uid=report.call_uid, prior=report.prior, user_id=caller.user.id, account_id=caller.user.account_id,
        sip_extension=caller.extension.sip_extension if caller.extension else "",
        callerid=caller.callerid[:64], destination=rating.destination, direction_id=rating.direction_id,
        direction=rating.direction, route_id=rating.route_id, route=rating.route,
        length_s=int(report.length_s.to_integral_value(rounding=ROUND_CEILING)),
        answered_ms=report.answered_ms, billed_s=billed_s, status=report.status, cause=report.cause,
        cost=cost, display_cost=display, display_currency=currency, is_did=report.is_did,
        answer=text, created_at=utcnow(),
    )  # fmt: skip


def _finished(caller: Caller, report: Finish, record: CallRecord, *, held: ledger.Reservation | None) -> CallAnswer:
    log.info(
        "call.finished", call_uid=report.call_uid, prior=report.prior, user=caller.user.username,
        status=report.status, billed_s=record.billed_s, cost=str(record.cost), repriced=held is not None,
    )  # fmt: skip
    return saved(record.answer, record.display_cost, record.display_currency)


async def _display_currency(services: LedgerContext, gens: Generations, currency: str) -> tuple[str, Decimal]:
    course = await services.rating.eur_course(gens, currency)
    if course is None:
        log.warning("call.unknown_currency", currency=currency)
        return SYSTEM_CURRENCY, Decimal(1)
    return currency, course


def _replayed(stored: StoredAnswer) -> CallAnswer:
    return saved(stored.text, stored.display_cost, stored.display_currency)


def _locked_rating(held: ledger.Reservation | None, account_id: int, number: str) -> Rating | None:
    """The rating a reservation locked in, if it is this account's and this number's: the
    destination it was rated as, or the alias the caller dialled for it."""
    if held is None or held.rating is None or held.account_id != account_id:
        return None
    rating = Rating.from_json(held.rating)
    return rating if number in (rating.destination, rating.alias) else None
