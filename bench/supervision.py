"""Holds in slices: how long after a call's money ends its AMI Hangup leaves callgate.

    .venv/bin/python -m bench.supervision [--calls 50] [--database-url URL] [--json FILE]

N supervised calls, each on its own account, allowed for 20 s, whose balance then drops to
3 to 8 s of talk (money spent elsewhere), answered at
random moments over 2 s, against the fake AMI server (tests/fake_ami.py, in this process)
and the real supervisor task (`HoldSupervisor.start()`, one-second ticks, 2 s slices asked
for 1 s ahead). For each call: the moment its held time is talked (answer + what its hold
pays for, as the supervisor decided) against the moment the fake server read its Hangup
action. Embedded SQLite by default; `--database-url` takes a PostgreSQL URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import update

import billing_core.api.methods  # noqa: F401 - registers every method
from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.asterisk.servers import add_server
from billing_core.bootstrap import bootstrap
from billing_core.calls.supervision import HoldSupervisor
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.ledger.tables import accounts
from tests.factories import make_key, make_user
from tests.fake_ami import FakeAmi, Message, Session
from tests.rating_world import RatingWorld
from tests.test_asterisk_live_calls import pbx
from tests.test_hold_slices import NUMBER, _answered_call


async def _calls(services: Services, dispatcher: Dispatcher, count: int, rng: random.Random) -> list[str]:
    w = RatingWorld(services)
    germany = await w.direction("49", "Germany", min_len=5, max_len=15)
    carrier = await w.route("carrier-a", prefix="8")
    tariff = await w.tariff("de", bill_type=await w.bill_type("persecond", free_threshold=0, step=1))
    await w.entry(tariff, germany, "0.60", carrier, priority=1)
    await make_key(services, level=50, source="127.0.0.1", auth_by="sip_extension", owner="admin", name="asterisk")
    uids = []
    for n in range(count):
        ext = str(20000 + n)
        user = await make_user(services, f"u{n}", balance=Decimal("0.20"), sip_extension=ext, sip_rates_id=tariff)
        uid = f"s{n}"
        outcome = await dispatcher.call(
            "callPrepare", {"login": ext, "destination": NUMBER, "prior": "1"},
            Credentials(peer_ip="127.0.0.1", transport="agi", call_uid=uid),
        )  # fmt: skip
        assert outcome.error is None and outcome.value.result == "Allowed", outcome
        # allowed for 20 s; then the balance drops to 3-8 s of talk (spent elsewhere)
        async with services.db.begin() as conn:
            left = Decimal(rng.randint(3, 8)) / 100
            await conn.execute(update(accounts).where(accounts.c.id == user.account_id).values(balance=left))
        uids.append(uid)
    return uids


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    settings = Settings(
        database_url=args.database_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}", redis_url=args.redis_url,
        secret_file=str(workdir / "secret"), spool_dir=str(workdir / "spool"), hold_slice_s=2, hold_slice_lead_s=1,
    )  # fmt: skip
    services = Services.build(settings)
    fake = await FakeAmi().start()
    received: dict[str, float] = {}

    answer_hangup = Session._hangup

    def on_hangup(session: Session, action: Message) -> None:  # when the fake server reads it
        received.setdefault(action.get("Channel", ""), time.time())
        answer_hangup(session, action)

    Session._hangup = on_hangup  # type: ignore[method-assign,assignment]
    supervisor = HoldSupervisor(services)
    try:
        await bootstrap(services.db)
        await add_server(services.db, services.box, pbx(fake))
        await services.ami.refresh()
        assert await services.ami.connection("pbx1").wait_up(5.0)
        uids = await _calls(services, Dispatcher(services), args.calls, random.Random(3))  # supervised: AMI is up
        supervisor.start()
        rng = random.Random(5)
        for uid in uids:
            await asyncio.sleep(rng.uniform(0, 2.0 / len(uids)))
            fake.emit(*_answered_call(uid, time.time()))
        deadline = time.time() + 20
        dues: dict[tuple[str, int], float] = {}  # copied while they exist: a hung-up call is forgotten
        while len(received) < len(uids) and time.time() < deadline:
            dues.update(supervisor.hangups)
            await asyncio.sleep(0.005)
        delays_ms = []
        for uid in uids:
            channel = f"Local/{NUMBER}@callgate-outbound-{uid};2"
            due = dues.get((uid, 1))
            if due is not None and channel in received:
                delays_ms.append((received[channel] - due) * 1000)
    finally:
        await supervisor.close()
        await fake.close()
        await services.close()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "calls": args.calls, "hung_up": len(delays_ms),
        "money_out_to_hangup_ms": {
            "median": round(statistics.median(delays_ms), 2),
            "p90": round(sorted(delays_ms)[int(0.9 * len(delays_ms))], 2),
            "max": round(max(delays_ms), 2), "min": round(min(delays_ms), 2),
        },
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="callgate-bench-supervision-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(result))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
