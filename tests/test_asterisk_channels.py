"""The channel registry, fed with what a real Asterisk 22.10.1 sent (the recorded AMI session)."""

from __future__ import annotations

from panoramisk.message import Message

from billing_core.asterisk import channels
from billing_core.asterisk.channels import ChannelRegistry
from fastagi import contract
from tests.fake_ami import hangup, newchannel, read_transcript, transcript_events, var_set


def _registry() -> ChannelRegistry:
    return ChannelRegistry("pbx1", clock=lambda: 1795416600.0)


def _until_the_list() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The events before the session's CoreShowChannels answer, and that answer."""
    messages = read_transcript()
    start = next(i for i, m in enumerate(messages) if m.get("ActionID") == "csc-1")
    end = next(i for i, m in enumerate(messages) if m.get("Event") == "CoreShowChannelsComplete")
    events = [m for m in messages[:start] if "Event" in m]
    return events, messages[start : end + 1]


def test_events_alone_give_the_channels_asterisk_listed_at_that_moment() -> None:
    events, answer = _until_the_list()
    registry = _registry()
    for event in events:
        registry.apply(event["Event"], event)
    listed = {m["Uniqueid"]: m for m in answer if m.get("Event") == "CoreShowChannel"}
    assert len(listed) == 14
    assert {c.uniqueid: (c.name, c.linkedid) for c in registry.channels()} == {
        uid: (m["Channel"], m["Linkedid"]) for uid, m in listed.items()
    }
    up = {c.uniqueid for c in registry.channels() if c.state == channels.STATE_UP}
    assert up == {uid for uid, m in listed.items() if m["ChannelState"] == "6"}

    before = {c.uniqueid: c.created_at for c in registry.channels()}
    assert registry.replace([Message(m) for m in answer]) == []  # the list agrees: nothing vanished
    assert registry.synced and {c.uniqueid: c.created_at for c in registry.channels()} == before


def test_the_whole_session_ends_with_every_channel_gone_and_its_cdr_joined() -> None:
    events = transcript_events()
    registry = _registry()
    for event in events:
        registry.apply(event["Event"], event)
    assert len(registry) == 0 and registry.calls() == []
    hangups = [e for e in events if e["Event"] == "Hangup"]
    ended = [registry.ended(e["Uniqueid"]) for e in hangups]
    assert len(ended) == 24 and all(c is not None and c.ended_at is not None for c in ended)
    assert {c.cause for c in ended if c is not None} <= {e["Cause"] for e in hangups}
    # every Cdr joins its channel, even the one Asterisk sent before that channel's Newchannel
    cdr_rows = sum(len(c.cdrs) for c in ended if c is not None)
    assert cdr_rows == sum(1 for e in events if e["Event"] == "Cdr") == 24
    # the BUSY call of the session: its caller channel's DialEnd said so
    busy = [c for c in ended if c is not None and c.dial_status == "BUSY"]
    assert [c.name for c in busy] == ["Local/2000000@outbound-00000009;2"]
    assert busy[0].dialed and registry.ended(busy[0].dialed) is not None


def test_a_call_joins_the_channel_callprepare_allowed() -> None:
    registry = _registry()
    caller, callee = "Local/4915112345678@callgate-outbound-00000001;2", "PJSIP/carrier-a-00000002"
    for event in (
        newchannel("1795416507.0", "Local/4915112345678@callgate-outbound-00000001;1"),
        newchannel("1795416507.1", caller, linkedid="1795416507.0"),
        var_set("1795416507.1", caller, "CG_OPEN_PRIOR", "1", linkedid="1795416507.0"),
        var_set("1795416507.1", caller, "CALLGATE_RESULT", "Allowed", linkedid="1795416507.0"),
        var_set("1795416507.1", caller, "DIALSTATUS", "", linkedid="1795416507.0"),  # not the dialplan's own
        newchannel("1795416507.2", callee, linkedid="1795416507.0", state="6"),
    ):
        registry.apply(event["Event"], event)
    [call] = registry.calls()
    assert call.linkedid == "1795416507.0" and call.call_uid == "1795416507.1"
    assert [c.uniqueid for c in call.channels] == ["1795416507.0", "1795416507.1", "1795416507.2"]
    callee_channel = registry.channel("1795416507.2")
    assert callee_channel is not None and registry.call_uid(callee_channel) == "1795416507.1"
    assert registry.channel("1795416507.1").variables == {"CG_OPEN_PRIOR": "1", "CALLGATE_RESULT": "Allowed"}  # type: ignore[union-attr]

    event = hangup("1795416507.1", caller, linkedid="1795416507.0")
    registry.apply("Hangup", event)
    assert registry.call_uid(callee_channel) is None  # the held channel is gone
    assert registry.ended("1795416507.1").cause == "16"  # type: ignore[union-attr]


def test_a_rebuild_keeps_what_was_known_and_reports_what_vanished() -> None:
    registry = _registry()
    for event in (newchannel("a.1", "PJSIP/a-1"), newchannel("b.1", "PJSIP/b-1"),
                  var_set("b.1", "PJSIP/b-1", "CALLGATE_RESULT", "Allowed")):  # fmt: skip
        registry.apply(event["Event"], event)
    known_b = registry.channel("b.1")
    assert known_b is not None
    registry.mark_unsynced()
    answer = [
        Message({"Response": "Success", "EventList": "start"}),
        Message({"Event": "CoreShowChannel", "Channel": "PJSIP/b-1", "ChannelState": "6", "Uniqueid": "b.1",
                 "Linkedid": "b.1", "Duration": "00:00:09"}),
        Message({"Event": "CoreShowChannel", "Channel": "PJSIP/c-1", "ChannelState": "6", "Uniqueid": "c.1",
                 "Linkedid": "c.1", "Duration": "01:02:03"}),
        Message({"Event": "CoreShowChannelsComplete", "EventList": "Complete", "ListItems": "2"}),
    ]  # fmt: skip
    vanished = registry.replace(answer)
    assert [c.uniqueid for c in vanished] == ["a.1"] and vanished[0].vanished
    assert registry.ended("a.1") is vanished[0]
    b, c = registry.channel("b.1"), registry.channel("c.1")
    assert b is known_b and b.held and b.state == channels.STATE_UP
    assert c is not None and c.created_at == 1795416600.0 - 3723 and c.answered_at is None  # answered: unknown
    assert registry.synced and registry.vanished_total == 1


def test_the_dialplan_names_the_registry_reads_are_fastagis() -> None:
    assert channels.RESULT_VARIABLE == contract.VAR_RESULT
    assert channels.RESULT_ALLOWED == contract.RESULT_ALLOWED
    assert all(name.startswith(channels.VARIABLE_PREFIXES) for name in contract.all_variables())
