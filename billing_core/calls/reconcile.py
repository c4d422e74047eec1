"""`callgate reconcile`: close the holds of calls that Asterisk's own CDRs show as ended.

A call whose callFinish never reached callgate (callgate down, the dialplan's "NOT
billed") keeps its hold until it expires and is never charged. Asterisk wrote CDRs for it
anyway; this module reads them (billing_core.calls.asterisk_cdr) and finishes every
open (or expired) hold they cover through the ordinary callFinish path
(billing_core.calls.control.finish_call), so the charge is the one a callFinish would
have made, written once per (call_uid, prior): running it twice, or racing a late
callFinish, charges once. The matching and billing rules are in docs/billing.md,
"Reconciliation"; in short:

- a hold's call_uid is the caller channel's uniqueid; the CDR rows of that uniqueid with
  lastapp Dial are its attempts, in the order Asterisk wrote them;
- attempts are matched to priors in ascending order, each to the next Dial row whose
  dstchannel or dial string names the hold's route; when no Dial row of the call names
  any of its routes (an operator's own trunk naming), by position;
- talk time: the called party's own CDR row when Asterisk wrote one (a Local channel's
  `;2` half), else the Dial row's billsec; the hold's max time caps it (finish_call);
- rows for the uniqueid but no Dial row for a prior: the caller left before that Dial,
  the hold is released (status CANCEL, 0 s);
- no row at all: the call may still be up, the hold is left alone; older than
  `stale_after_s` it is reported as stale, never charged.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import structlog
from sqlalchemy import select

from billing_core.calls.asterisk_cdr import AsteriskCdr
from billing_core.calls.control import Caller, Finish, finish_call
from billing_core.clock import utcnow
from billing_core.config import SYSTEM_CURRENCY
from billing_core.directory.tables import users
from billing_core.ledger.book import EXPIRED, OPEN, Reservation
from billing_core.ledger.context import LedgerContext
from billing_core.ledger.tables import cdrs, reservations
from billing_core.money import ZERO
from billing_core.rating.engine import Rating
from billing_core.records import UserRecord

log = structlog.get_logger(__name__)

# How `callgate reconcile` gets rows: (column, values) → the rows whose column is one of them.
RowSource = Callable[[str, Sequence[str]], Awaitable[list[AsteriskCdr]]]
Action = Literal["charge", "release", "wait", "stale", "skip"]

DISPOSITION_STATUS = {
    "ANSWERED": "ANSWER", "NO ANSWER": "NOANSWER", "BUSY": "BUSY", "CONGESTION": "CONGESTION",
    "FAILED": "CHANUNAVAIL",
}  # fmt: skip
NO_DIAL_STATUS = "CANCEL"  # the caller hung up before this attempt's Dial
# A CDR that reconciliation wrote says so in its `cause` (a callFinish carries Asterisk's
# numeric HANGUPCAUSE there): written in the same transaction as the charge, so exact.
CLOSED_BY_FILE = "cdr"  # `callgate reconcile`, from Asterisk's CDR file or table
CLOSED_BY_AMI = "ami"  # billing_core.calls.orphans, from AMI Cdr events


@dataclass(frozen=True, slots=True)
class OpenHold:
    reservation: Reservation
    user_id: int
    username: str
    created_at: datetime

    @property
    def route(self) -> str:
        return str((self.reservation.rating or {}).get("route", ""))


@dataclass(frozen=True, slots=True)
class Decision:
    hold: OpenHold
    action: Action
    status: str = ""
    talk_s: int = 0
    billed_s: int = 0
    cost: Decimal = ZERO  # system currency, what a callFinish charges for it
    note: str = ""
    src: str = ""


@dataclass
class Report:
    dry_run: bool
    rows_read: int
    decisions: list[Decision] = field(default_factory=list)

    def of(self, action: Action) -> list[Decision]:
        return [d for d in self.decisions if d.action == action]

    def lines(self) -> list[str]:
        mode = "dry run: nothing written" if self.dry_run else "applied"
        out = [f"reconcile ({mode}): {len(self.decisions)} open holds, {self.rows_read} Asterisk CDR rows of theirs"]
        for d in self.decisions:
            r = d.hold.reservation
            what = f"{d.action:<7} {r.call_uid} prior {r.prior} user {d.hold.username} route {d.hold.route or '-'}"
            held = f"held {_eur(r.amount)} {SYSTEM_CURRENCY}"
            if d.action in ("charge", "release"):
                out.append(f"{what}: {d.status} talk {d.talk_s} s billed {d.billed_s} s "
                           f"cost {_eur(d.cost)} {SYSTEM_CURRENCY} ({held}){d.note}")  # fmt: skip
            else:
                out.append(f"{what}: {d.note} ({held})")
        charged, released = self.of("charge"), self.of("release")
        out.append(
            f"total: charge {len(charged)} for {_eur(sum((d.cost for d in charged), ZERO))} {SYSTEM_CURRENCY}; "
            f"release {len(released)}; holds freed "
            f"{_eur(sum((d.hold.reservation.amount for d in charged + released), ZERO))} {SYSTEM_CURRENCY}; "
            f"wait {len(self.of('wait'))}; stale {len(self.of('stale'))} "
            f"({_eur(sum((d.hold.reservation.amount for d in self.of('stale')), ZERO))} {SYSTEM_CURRENCY}); "
            f"skip {len(self.of('skip'))}"
        )
        return out


def _eur(value: Decimal) -> str:
    """Four decimals, like the ledger (0.0000, not 0)."""
    return format(value.quantize(Decimal("0.0001")), "f")


# -- which Dial row is which attempt ------------------------------------------------------


def names_route(row: AsteriskCdr, route: str) -> bool:
    """Whether the Dial row's dstchannel or dial string names `route`: `PJSIP/route-0000001a`,
    `…@route-00000001;1`, `PJSIP/4915…@route,,L(…)`, `IAX2/route-1234` — the name must end at
    the channel suffix or a separator, so `carrier` does not match `carrier-a-00000001`."""
    if not route:
        return False
    pattern = rf"(?:^|[/@&:]){re.escape(route)}(?:-(?:[0-9a-f]{{8}}|\d+))?(?=[;,/@&)]|$)"
    return re.search(pattern, row.dstchannel) is not None or re.search(pattern, row.lastdata) is not None


def assign_dials(attempts: Iterable[tuple[int, str]], dials: Sequence[AsteriskCdr]) -> dict[int, AsteriskCdr | None]:
    """prior → its Dial row (None: no Dial for it). `attempts` are (prior, route) of every
    attempt callgate knows of the call (open holds and written CDRs); `dials` in order."""
    ordered = sorted(set(attempts))
    by_route = any(names_route(d, route) for d in dials for _, route in ordered)
    found: dict[int, AsteriskCdr | None] = {}
    position = 0
    for prior, route in ordered:
        pick = next((j for j in range(position, len(dials)) if not by_route or names_route(dials[j], route)), None)
        found[prior] = None if pick is None else dials[pick]
        if pick is not None:
            position = pick + 1
    return found


def callee_channel(dial: AsteriskCdr) -> str:
    """The channel whose own CDR row carries the called party's talk time: the `;2` half of a
    Local dstchannel; otherwise the dstchannel itself (used if Asterisk wrote a row for it)."""
    if dial.dstchannel.startswith("Local/") and dial.dstchannel.endswith(";1"):
        return dial.dstchannel[:-1] + "2"
    return dial.dstchannel


def talk_time(dial: AsteriskCdr, by_channel: dict[str, AsteriskCdr]) -> tuple[int, str]:
    callee = by_channel.get(callee_channel(dial)) if dial.dstchannel else None
    if callee is not None:
        return callee.billsec, "callee row"
    return dial.billsec, "Dial row"


# -- the run ------------------------------------------------------------------------------


async def open_holds(services: LedgerContext, call_uids: Sequence[str] | None = None) -> list[OpenHold]:
    """Every open (or expired, never closed) hold; of these calls only, when given."""
    query = (
        select(reservations, users.c.username)
        .join(users, users.c.id == reservations.c.user_id, isouter=True)
        .where(reservations.c.state.in_((OPEN, EXPIRED)))
        .order_by(reservations.c.call_uid, reservations.c.prior)
    )
    rows: list[Any] = []
    async with services.db.begin() as conn:
        if call_uids is None:
            rows = list((await conn.execute(query)).all())
        else:
            uids = sorted(set(call_uids))
            for at in range(0, len(uids), 500):
                chunk = uids[at : at + 500]
                rows += (await conn.execute(query.where(reservations.c.call_uid.in_(chunk)))).all()
    return [OpenHold(Reservation.from_row(r), r.user_id, r.username or "?", _utc(r.created_at)) for r in rows]


async def _written_attempts(services: LedgerContext, call_uids: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = defaultdict(list)
    async with services.db.begin() as conn:
        for at in range(0, len(call_uids), 500):
            chunk = call_uids[at : at + 500]
            query = select(cdrs.c.call_uid, cdrs.c.prior, cdrs.c.route).where(cdrs.c.call_uid.in_(chunk))
            for r in await conn.execute(query):
                found[r.call_uid].append((r.prior, r.route))
    return found


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def decide(
    hold: OpenHold, dial: AsteriskCdr | None, call_rows: Sequence[AsteriskCdr], by_channel: dict[str, AsteriskCdr],
    *, now: datetime, stale_after_s: int,
) -> Decision:  # fmt: skip
    r = hold.reservation
    if r.rating is None:
        return Decision(hold, "skip", note="the hold has no stored rating: finish it by hand")
    if not call_rows:
        age = now - hold.created_at
        if age > timedelta(seconds=stale_after_s):
            return Decision(hold, "stale", note=f"no Asterisk CDR, held for {_age(age)}: check this call by hand")
        return Decision(hold, "wait", note=f"no Asterisk CDR yet (held for {_age(age)}): the call may still be up")
    rating = Rating.from_json(r.rating)
    if dial is None:
        return Decision(hold, "release", status=NO_DIAL_STATUS, src=call_rows[0].src,
                        note="; the call ended without this Dial")  # fmt: skip
    status = DISPOSITION_STATUS.get(dial.disposition.strip().upper(), "CHANUNAVAIL")
    talk_s, where = talk_time(dial, by_channel)
    billed_s = rating.billed(min(talk_s, r.max_time_s)) if status == "ANSWER" else 0
    cost = rating.cost(billed_s) if status == "ANSWER" else ZERO
    note = f"; talk from the {where}" + (f", capped at {r.max_time_s} s" if talk_s > r.max_time_s else "")
    action: Action = "charge" if cost > ZERO else "release"
    return Decision(hold, action, status=status, talk_s=talk_s, billed_s=billed_s, cost=cost, note=note, src=dial.src)


def _age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


async def reconcile(
    services: LedgerContext, read_rows: RowSource, *, dry_run: bool, stale_after_s: int, now: datetime | None = None,
    call_uids: Sequence[str] | None = None, closed_by: str = CLOSED_BY_FILE,
) -> Report:  # fmt: skip
    """Decide (and unless dry_run, apply) every open hold, or those of `call_uids` only.
    `closed_by` is written as the CDR's `cause`: who closed the call instead of a callFinish."""
    holds = await open_holds(services, call_uids)
    uids = sorted({h.reservation.call_uid for h in holds})
    rows = await read_rows("uniqueid", uids) if uids else []
    partners = sorted({callee_channel(r) for r in rows if r.lastapp.lower() == "dial" and r.dstchannel})
    callee_rows = await read_rows("channel", partners) if partners else []
    by_channel = {r.channel: r for r in callee_rows}
    rows_of: dict[str, list[AsteriskCdr]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r.start, r.order)):
        rows_of[row.uniqueid].append(row)
    written = await _written_attempts(services, uids)
    moment = now or utcnow()
    report = Report(dry_run=dry_run, rows_read=len(rows) + len(callee_rows))
    holds_of: dict[str, list[OpenHold]] = defaultdict(list)
    for hold in holds:
        holds_of[hold.reservation.call_uid].append(hold)
    for uid, call_holds in holds_of.items():
        dials = [r for r in rows_of[uid] if r.lastapp.lower() == "dial"]
        attempts = [(h.reservation.prior, h.route) for h in call_holds] + written.get(uid, [])
        matched = assign_dials(attempts, dials)
        for hold in call_holds:
            report.decisions.append(
                decide(hold, matched.get(hold.reservation.prior), rows_of[uid], by_channel,
                       now=moment, stale_after_s=stale_after_s)
            )  # fmt: skip
    if not dry_run:
        for decision in report.decisions:
            if decision.action in ("charge", "release"):
                await _finish(services, decision, closed_by)
    return report


async def _finish(services: LedgerContext, decision: Decision, closed_by: str) -> None:
    """The callFinish Asterisk would have sent, through the ordinary path (exactly once)."""
    hold = decision.hold
    r = hold.reservation
    async with services.db.begin() as conn:
        row = (await conn.execute(select(users).where(users.c.id == hold.user_id))).first()
    if row is None:
        log.error("reconcile.no_user", call_uid=r.call_uid, prior=r.prior, user_id=hold.user_id)
        return
    user = UserRecord.from_row(row)
    gens = await services.cache.generations()
    extension = await services.profiles.first_extension_of(gens, user.id)
    callerid = decision.src or (extension.sip_callerid if extension else "") or user.callerid or user.username
    rating: dict[str, Any] = r.rating or {}
    report = Finish(
        destination=str(rating.get("destination", "")), prior=r.prior, call_uid=r.call_uid,
        length_s=Decimal(decision.talk_s), answered_ms=None, status=decision.status, cause=closed_by, is_did="",
    )  # fmt: skip
    answer = await finish_call(services, gens, Caller(user, extension, callerid), report)
    log.info(
        "reconcile.finished", call_uid=r.call_uid, prior=r.prior, action=decision.action, status=decision.status,
        talk_s=decision.talk_s, answer=answer.result,
    )  # fmt: skip
