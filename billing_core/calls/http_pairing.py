"""HTTP call pairs without `call_id`: which hold a callFinish closes.

The spec's examples send callPrepare and then callFinish over HTTP with no identity of
the call (no Asterisk uniqueid, no `call_id`). Such a callPrepare gets a call identity of
the form `http:<uuid>`; such a callFinish closes the OLDEST open hold of the same user,
destination (or alias dialled) and prior (docs/billing.md, "HTTP calls without call_id").

Taking a hold is a compare-and-set on its call identity: `UPDATE … SET call_uid = <new>
WHERE id = … AND call_uid = <old>` succeeds for exactly one finish, so two finishes at
once never close the same hold; the loser takes the next one. The finish is then charged
under the new identity, through the ordinary ledger path (exactly once per identity).
"""

from __future__ import annotations

import json
import uuid

import structlog
from sqlalchemy import select, update

from billing_core.db.engine import Database
from billing_core.ledger.tables import reservations

log = structlog.get_logger(__name__)

HTTP_PREFIX = "http:"  # a hold callPrepare made over HTTP without call_id
TAKEN_PREFIX = "http-finished:"  # the same hold, taken by one callFinish
CANDIDATES = 32  # holds read per try: more than one user has calls in flight at once
MAX_TRIES = 8


def new_http_call_uid() -> str:
    return f"{HTTP_PREFIX}{uuid.uuid4().hex}"


def _numbers(rating: str | None) -> tuple[object, ...]:
    """What a finish may name the held call by: its destination, or the alias dialled for it."""
    if not rating:
        return ()
    locked = json.loads(rating)
    return locked.get("destination"), locked.get("alias")


async def take_oldest_hold(db: Database, *, user_id: int, destination: str, prior: int) -> str | None:
    """The call identity to finish under: the oldest open HTTP hold of this user,
    destination and prior, taken atomically; None when there is none."""
    for _ in range(MAX_TRIES):
        async with db.begin() as conn:
            rows = (
                await conn.execute(
                    select(reservations.c.id, reservations.c.call_uid, reservations.c.rating)
                    .where(
                        reservations.c.user_id == user_id,
                        reservations.c.prior == prior,
                        reservations.c.state == "open",
                        reservations.c.call_uid.startswith(HTTP_PREFIX, autoescape=True),
                    )
                    .order_by(reservations.c.created_at, reservations.c.id)
                    .limit(CANDIDATES)
                )
            ).all()
            oldest = next((r for r in rows if destination in _numbers(r.rating)), None)
            if oldest is None:
                return None
            taken = f"{TAKEN_PREFIX}{uuid.uuid4().hex}"
            result = await conn.execute(
                update(reservations)
                .where(reservations.c.id == oldest.id, reservations.c.call_uid == oldest.call_uid)
                .values(call_uid=taken)
            )
            if result.rowcount == 1:
                log.info("call.http_hold_taken", reservation=oldest.id, user_id=user_id, prior=prior)
                return taken
    log.warning("call.http_hold_contended", user_id=user_id, prior=prior)
    return None
