"""closeChannels over AMI (fake Asterisk, both backends): every live channel of the user
on every server is hung up, found by its hold or by its SIP account's channel name; other
users' channels stay; a server that cannot be seen is E_ASTERISK_QUERY_ERROR."""

from __future__ import annotations

from decimal import Decimal

from billing_core.api.dispatch import Dispatcher, Outcome
from billing_core.asterisk.channels_close import peer_of
from billing_core.asterisk.servers import add_server
from billing_core.container import Services
from billing_core.errors import ErrorCode
from tests.factories import make_user
from tests.fake_ami import FakeAmi, newchannel
from tests.rating_world import credentials, prepare, server_key, standard_world, text_of
from tests.test_asterisk_ami import PATIENT, until
from tests.test_asterisk_live_calls import held_call_events, pbx


async def _close(dispatcher: Dispatcher, key: str, login: str) -> Outcome:
    return await dispatcher.call("closeChannels", {"login": login}, credentials(key, None))


def test_the_peer_of_a_channel_name() -> None:
    assert peer_of("PJSIP/10001-0000002a") == "10001"
    assert peer_of("SIP/10001-0000002a") == "10001"
    assert peer_of("Local/74951234567@callgate-outbound-00000001;2") == "74951234567"
    assert peer_of("PJSIP/route1-cli-00000002") == "route1-cli"


async def test_close_channels_hangs_up_the_users_calls_only(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi
) -> None:
    std = await standard_world(services)
    await make_user(services, "alice", balance=Decimal("10"), rates_id=std.base, sip_extension="1001")
    await make_user(services, "bob", balance=Decimal("10"), rates_id=std.base, sip_extension="1002")
    text_of(await prepare(dispatcher, std.key, "alice", "74951234567", call_uid="1795416507.1", prior="1"))
    await add_server(services.db, services.box, pbx(fake))
    await services.ami.refresh()
    conn = services.ami.connection("pbx1")
    assert await conn.wait_up(PATIENT)
    fake.emit(
        *held_call_events(),
        newchannel("1795416600.3", "PJSIP/1002-00000003"),  # bob ringing in: no hold yet
        newchannel("1795416601.4", "PJSIP/9999-00000004"),  # nobody's
    )
    await until(lambda: len(conn.registry) == 5, "five channels")

    alice = await _close(dispatcher, std.key, "alice")
    assert (alice.error, alice.value) == (None, True)
    assert sorted(c.uniqueid for c in conn.registry.channels()) == ["1795416600.3", "1795416601.4"]
    assert sorted(fake.channels) == ["1795416600.3", "1795416601.4"]  # Asterisk itself hung them up

    bob = await _close(dispatcher, std.key, "bob")
    assert (bob.error, bob.value) == (None, True)
    assert [c.uniqueid for c in conn.registry.channels()] == ["1795416601.4"]
    again = await _close(dispatcher, std.key, "bob")  # nothing left of bob's: still true
    assert (again.error, again.value) == (None, True)


async def test_close_channels_needs_every_server(services: Services, dispatcher: Dispatcher, fake: FakeAmi) -> None:
    await make_user(services, "carol", sip_extension="1003")
    key = await server_key(services)
    none = await _close(dispatcher, key, "carol")  # only `local`, which has no AMI
    assert none.error is not None and none.error.code is ErrorCode.E_ASTERISK_QUERY_ERROR
    await add_server(services.db, services.box, pbx(fake))
    await services.ami.refresh()
    assert await services.ami.connection("pbx1").wait_up(PATIENT)
    assert (await _close(dispatcher, key, "carol")).value is True
    await fake.close()  # the server goes away: its channels cannot be known
    await until(lambda: services.ami.connection("pbx1").state.value != "up", "pbx1 down")
    down = await _close(dispatcher, key, "carol")
    assert down.error is not None and down.error.code is ErrorCode.E_ASTERISK_QUERY_ERROR
