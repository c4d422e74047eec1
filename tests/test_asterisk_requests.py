"""asteriskRequest over a fake Asterisk (both backends): the allow-listed AMI actions and
their answers, everything else refused before anything is sent, who may ask which server,
a server that is down."""

from __future__ import annotations

from sqlalchemy import update

from billing_core.api.dispatch import Dispatcher, Outcome
from billing_core.asterisk.servers import add_server
from billing_core.container import Services
from billing_core.directory.tables import sip_extensions
from billing_core.errors import ErrorCode
from tests.factories import make_user
from tests.fake_ami import FakeAmi, Message, Session, encode, newchannel
from tests.rating_world import credentials, server_key
from tests.test_asterisk_ami import PATIENT, until
from tests.test_asterisk_live_calls import pbx


async def _ask(dispatcher: Dispatcher, key: str, login: str, **args: str) -> Outcome:
    query = {"login": login, "asterisk": "127.0.0.1", **args}
    return await dispatcher.call("asteriskRequest", query, credentials(key, None))


def _error(outcome: Outcome) -> ErrorCode | None:
    return outcome.error.code if outcome.error is not None else None


async def _up(services: Services, fake: FakeAmi) -> str:
    await make_user(services, "ops", accesslevel=33)
    await add_server(services.db, services.box, pbx(fake))
    await services.ami.refresh()
    assert await services.ami.connection("pbx1").wait_up(PATIENT)
    return await server_key(services)


def _endpoint(session: Session, action: Message) -> None:
    aid = action.get("ActionID", "")
    if action.get("Endpoint") != "1001":
        session.reply(action, "Error", ("Message", f"Unable to retrieve endpoint {action.get('Endpoint')}"))
        return
    session.write(
        encode([("Response", "Success"), ("ActionID", aid), ("EventList", "start"),
                ("Message", "Following are Events for each object associated with the Endpoint")])
        + encode([("Event", "EndpointDetail"), ("ActionID", aid), ("ObjectName", "1001"),
                  ("DeviceState", "Not in use")])
        + encode([("Event", "EndpointDetailComplete"), ("ActionID", aid), ("EventList", "Complete"),
                  ("ListItems", "1")])
    )  # fmt: skip


async def test_the_allowed_requests_and_their_answers(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi
) -> None:
    key = await _up(services, fake)
    # the spec's example: asterisk=127.0.0.1&destination=sipreload&process=sipreload -> ok
    reload = await _ask(dispatcher, key, "ops", destination="sipreload", process="sipreload")
    assert (reload.error, reload.value) == (None, "ok")
    assert fake.reloads == ["res_pjsip.so"]

    ping = await _ask(dispatcher, key, "ops", destination="ami", process="ping")
    assert ping.error is None and isinstance(ping.value, str)
    assert ping.value.splitlines()[:2] == ["Response: Success", "Ping: Pong"] and "ActionID" not in ping.value
    # panoramisk's empty "content" of a plain answer is no header of Asterisk's (seen on 22.10.1)
    assert not [line for line in ping.value.splitlines() if line.lower().startswith("content")], ping.value

    fake.emit(newchannel("1795416507.0", "PJSIP/1001-00000001"))
    await until(lambda: len(services.ami.registry("pbx1")) == 1, "one channel")
    channels = await _ask(dispatcher, key, "ops", destination="AMI", process="CoreShowChannels")
    assert channels.error is None and isinstance(channels.value, str)
    blocks = channels.value.split("\n\n")
    assert len(blocks) == 3 and "Channel: PJSIP/1001-00000001" in blocks[1].splitlines()
    assert blocks[2].splitlines()[:3] == ["Event: CoreShowChannelsComplete", "EventList: Complete", "ListItems: 1"]

    fake.custom["pjsipshowendpoint"] = _endpoint
    detail = await _ask(dispatcher, key, "ops", destination="ami", process="PJSIPShowEndpoint", params="endpoint=1001")
    assert detail.error is None and "ObjectName: 1001" in str(detail.value)
    assert fake.actions[-1]["Endpoint"] == "1001"
    unknown = await _ask(dispatcher, key, "ops", destination="ami", process="PJSIPShowEndpoint", params="Endpoint=9")
    assert _error(unknown) is ErrorCode.E_ASTERISK_QUERY_ERROR  # Asterisk's own Error, within the time-out
    assert unknown.error is not None and "Unable to retrieve endpoint 9" in unknown.error.detail


async def test_anything_else_is_refused_before_it_is_sent(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi
) -> None:
    key = await _up(services, fake)
    sent = len(fake.actions)
    for destination, process in (("ami", "Command"), ("ami", "Originate"), ("ami", "Hangup"), ("ami", "Redirect"),
                                 ("ami", "UpdateConfig"), ("ami", "Setvar"), ("shell", "ping"), ("ping", "ping"),
                                 ("sipreload", "ping"), ("ami", "core show channels")):  # fmt: skip
        outcome = await _ask(dispatcher, key, "ops", destination=destination, process=process)
        assert _error(outcome) is ErrorCode.E_UNDEFINED_INSTRUCTION, (destination, process)
    for params in ("Channel=PJSIP/1001", "Endpoint", "Endpoint=1001\r\nAction: Originate", "Endpoint=a b",
                   "Endpoint=1001,Action=Originate"):  # fmt: skip
        outcome = await _ask(dispatcher, key, "ops", destination="ami", process="PJSIPShowEndpoint", params=params)
        assert _error(outcome) is ErrorCode.E_INVALID_ARGUMENT, params
    assert len(fake.actions) == sent  # not one of them reached Asterisk


async def test_who_may_ask_which_server(services: Services, dispatcher: Dispatcher, fake: FakeAmi) -> None:
    key = await _up(services, fake)
    await make_user(services, "reseller", accesslevel=22, sip_extension="2001")
    await make_user(services, "client", accesslevel=11)
    assert _error(await _ask(dispatcher, key, "client", destination="ami", process="ping")) is (
        ErrorCode.E_INSUFFICIENT_ACCESS
    )
    mine = await _ask(dispatcher, key, "reseller", destination="ami", process="ping")
    assert _error(mine) is ErrorCode.E_DOES_NOT_BELONG_TO_YOU  # no SIP account of its on pbx1 yet
    async with services.db.begin() as conn:
        await conn.execute(
            update(sip_extensions).where(sip_extensions.c.sip_extension == "2001").values(sip_server="pbx1.example.net")
        )
    assert (await _ask(dispatcher, key, "reseller", destination="ami", process="ping")).error is None
    # by name and by sip_server name too; a name no server has
    assert (await _ask(dispatcher, key, "ops", destination="ami", process="ping", asterisk="pbx1")).error is None
    nowhere = await _ask(dispatcher, key, "ops", destination="ami", process="ping", asterisk="10.9.9.9")
    assert _error(nowhere) is ErrorCode.E_SIP_SERVER_NOT_EXIST


async def test_a_server_that_is_down(services: Services, dispatcher: Dispatcher, fake: FakeAmi) -> None:
    key = await _up(services, fake)
    local = await _ask(dispatcher, key, "ops", destination="ami", process="ping", asterisk="local")  # no AMI user
    assert _error(local) is ErrorCode.E_ASTERISK_QUERY_ERROR
    await fake.close()
    await until(lambda: services.ami.connection("pbx1").state.value != "up", "pbx1 down")
    down = await _ask(dispatcher, key, "ops", destination="sipreload", process="sipreload")
    assert _error(down) is ErrorCode.E_ASTERISK_QUERY_ERROR
