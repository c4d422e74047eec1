"""The ISPsystem BILLmanager door (/billmgr) as ISPsystem's own clients call it: form POSTs
and GETs with `authinfo=user:password`, `out=xml`, `func=…`, `sok=ok`, through `requests`
(the XML parsed with lxml) and aiohttp, over a served callgate on both backends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
import requests
from lxml import etree  # type: ignore[import-untyped]
from sqlalchemy import select

from billing_core.container import Services
from billing_core.directory.tables import users
from billing_core.numbers.tables import aliases
from billing_core.rating.tables import routes
from tests.doors_support import PASSWORD, Doors, open_doors
from tests.factories import make_key
from tests.http_support import serve, with_settings

T = TypeVar("T")
CORP1 = f"corp1:{PASSWORD}"


@pytest.fixture
async def doors(services: Services) -> AsyncIterator[Doors]:
    async with open_doors(services) as opened:
        yield opened


async def blocking(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


async def call(doors: Doors, verb: str = "POST", **fields: str) -> requests.Response:
    """One BILLmanager call: a form POST (the default) or a GET with the query string."""
    fields.setdefault("out", "xml")
    if verb == "POST":
        return await blocking(lambda: requests.post(doors.billmgr, data=fields, timeout=10))
    return await blocking(lambda: requests.get(doors.billmgr, params=fields, timeout=10))


def xml(reply: requests.Response) -> Any:
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/xml")
    root = etree.fromstring(reply.content)
    assert root.tag == "doc"
    return root


def error_of(reply: requests.Response) -> Any:
    root = xml(reply)
    error = root.find("error")
    assert error is not None, reply.text
    assert error.findtext("msg")
    return error


async def add_route(doors: Doors, name: str = "carrier-b", who: str = CORP1) -> int:
    reply = await call(
        doors, func="route.edit", sok="ok", authinfo=who, elname=name, type="sip", sip_server="sip.b", prefix="9"
    )
    assert xml(reply).find("ok") is not None, reply.text
    async with doors.services.db.begin() as conn:
        return int((await conn.execute(select(routes.c.id).where(routes.c.route == name))).scalar_one())


async def test_a_list_with_authinfo_by_get_and_by_post(doors: Doors) -> None:
    await add_route(doors)
    for verb in ("GET", "POST"):
        root = xml(await call(doors, verb, func="route", authinfo=CORP1))
        assert root.get("func") == "route" and root.get("lang") == "en"
        elems = root.findall("elem")
        assert [e.findtext("route") for e in elems] == ["carrier-b"]
        assert elems[0].findtext("owner") == "corp1"
    by_name = xml(await call(doors, func="getRoutes", authinfo=CORP1))
    assert [e.findtext("route") for e in by_name.findall("elem")] == ["carrier-b"]


async def test_edit_without_sok_changes_nothing_and_shows_a_new_form(doors: Doors) -> None:
    fields = {"type": "sip", "sip_server": "sip.c", "prefix": "5", "elname": "carrier-c"}
    root = xml(await call(doors, func="route.edit", authinfo=CORP1, **fields))
    assert root.find("error") is None
    assert root.find("route") is not None and root.findtext("callerid") == "2"  # the create method's fields
    async with doors.services.db.begin() as conn:
        assert (await conn.execute(select(routes.c.id))).first() is None
    devel = xml(await call(doors, func="route.edit", authinfo=CORP1, out="devel"))
    required = {f.get("name") for f in devel.iter("field") if f.get("required") == "yes"}
    assert {"route", "type", "sip_server", "prefix"} <= required


async def test_create_show_suspend_and_resume_a_route(doors: Doors) -> None:
    route_id = await add_route(doors)
    shown = xml(await call(doors, func="route.edit", elid=str(route_id), authinfo=CORP1))
    assert shown.findtext("route") == "carrier-b" and shown.findtext("id") == str(route_id)
    for func, enabled in (("route.suspend", False), ("route.resume", True)):
        assert xml(await call(doors, func=func, elid=str(route_id), authinfo=CORP1)).find("ok") is not None
        async with doors.services.db.begin() as conn:
            row = (await conn.execute(select(routes).where(routes.c.id == route_id))).one()
        assert bool(row.enabled) is enabled
    missing = error_of(await call(doors, func="route.edit", elid="999", authinfo=CORP1))
    assert missing.get("type") == "missing"


async def test_alias_create_update_delete_and_a_delete_of_nothing_is_ok(doors: Doors) -> None:
    created = xml(await call(doors, func="alias.edit", sok="ok", authinfo=CORP1, elname="77", destination="4915100"))
    assert created.find("ok") is not None
    async with doors.services.db.begin() as conn:
        alias_id = int((await conn.execute(select(aliases.c.id).where(aliases.c.alias == "77"))).scalar_one())
    elid = str(alias_id)
    assert xml(await call(doors, func="alias.edit", elid=elid, authinfo=CORP1)).findtext("destination") == "4915100"
    updated = await call(doors, func="alias.edit", elid=elid, sok="ok", authinfo=CORP1, destination="4915199")
    assert xml(updated).find("ok") is not None
    listed = xml(await call(doors, func="alias", authinfo=CORP1)).findall("elem")
    assert [e.findtext("destination") for e in listed] == ["4915199"]
    assert xml(await call(doors, func="alias.delete", elid=elid, authinfo=CORP1)).find("ok") is not None
    assert xml(await call(doors, func="alias.delete", elid=elid, authinfo=CORP1)).find("ok") is not None
    gone = error_of(await call(doors, func="alias.edit", elid=elid, authinfo=CORP1))
    assert gone.get("code") == "E_NOT_EXIST"
    assert xml(await call(doors, func="alias", authinfo=CORP1)).findall("elem") == []


async def test_func_auth_gives_a_session_and_logout_ends_it(doors: Doors) -> None:
    root = xml(await call(doors, func="auth", username="corp1", password=PASSWORD))
    session = root.findtext("auth")
    assert session and root.find("auth").get("id") == session
    info = await call(doors, func="getInfo", auth=session, out="JSONdata")
    assert info.json()["username"] == "corp1"
    assert xml(await call(doors, func="logout", auth=session)).find("ok") is not None
    refused = error_of(await call(doors, func="getInfo", auth=session))
    assert refused.get("type") == "auth" and refused.get("code") == "E_AUTH_FAILED"
    wrong = error_of(await call(doors, func="auth", username="corp1", password="nope"))
    assert wrong.get("type") == "auth"


async def test_su_acts_for_an_own_user_only(doors: Doors) -> None:
    own = xml(await call(doors, func="user.edit", elid="u1", authinfo=CORP1))
    assert own.findtext("username") == "u1"
    as_u1 = xml(await call(doors, func="getInfo", su="u1", authinfo=CORP1))
    assert as_u1.findtext("username") == "u1"
    refused = error_of(await call(doors, func="getInfo", su="u2", authinfo=CORP1))
    assert refused.get("type") == "access" and refused.get("code") == "E_DOES_NOT_BELONG_TO_YOU"
    plain_user = error_of(await call(doors, func="getInfo", su="corp1", authinfo=f"u1:{PASSWORD}"))
    assert plain_user.get("type") == "access"


async def test_a_reseller_suspends_its_own_user_not_another_resellers(doors: Doors) -> None:
    assert xml(await call(doors, func="user.suspend", elid="u1", authinfo=CORP1)).find("ok") is not None
    refused = error_of(await call(doors, func="user.suspend", elid="u2", authinfo=CORP1))
    assert refused.get("type") in ("access", "missing")
    async with doors.services.db.begin() as conn:
        states = dict((await conn.execute(select(users.c.username, users.c.active))).all())
    assert states["u1"] == -1 and states["u2"] == 1
    assert xml(await call(doors, func="user.resume", elid="u1", authinfo=CORP1)).find("ok") is not None


async def test_every_out_format(doors: Doors) -> None:
    await add_route(doors)
    as_json = (await call(doors, func="route", authinfo=CORP1, out="json")).json()
    assert as_json["doc"]["$lang"] == "en" and as_json["doc"]["elem"][0]["route"]["$"] == "carrier-b"
    data = (await call(doors, func="route", authinfo=CORP1, out="JSONdata")).json()
    assert data["elem"][0]["route"] == "carrier-b" and data["elem"][0]["owner"] == "corp1"
    text = (await call(doors, func="route", authinfo=CORP1, out="text")).text
    assert "route=carrier-b" in text and text.count("\n") == 1
    page = await call(doors, func="route", authinfo=CORP1, out="")
    assert page.headers["Content-Type"].startswith("text/html") and "<table>" in page.text
    assert "carrier-b" in page.text
    bad_json = (await call(doors, func="nothing.here", authinfo=CORP1, out="JSONdata")).json()
    assert bad_json["error"]["type"] == "missing" and bad_json["error"]["object"] == "func"
    assert (await call(doors, func="nothing.here", authinfo=CORP1, out="text")).text.startswith("ERROR missing(func)")
    unknown_out = error_of(await call(doors, func="route", authinfo=CORP1, out="yaml"))
    assert unknown_out.get("object") == "out"


async def test_lang_is_accepted_and_unknown_is_english(doors: Doors) -> None:
    assert xml(await call(doors, func="getInfo", authinfo=CORP1, lang="xx")).get("lang") == "en"
    assert xml(await call(doors, func="getInfo", authinfo=CORP1, lang="en")).get("lang") == "en"


@pytest.mark.parametrize(
    ("fields", "error_type", "code"),
    [
        ({"func": "nope"}, "missing", "E_UNKNOWN_METHOD"),
        ({"func": "route.edit", "sok": "ok", "elname": "x"}, "empty", "E_MISSING_ARGUMENT"),
        ({"func": "getRates", "id": "abc"}, "value", "E_INVALID_ARGUMENT"),
        ({"func": "getUsers", "authinfo": f"u1:{PASSWORD}"}, "access", "E_INSUFFICIENT_ACCESS"),
        ({"func": ""}, "empty", "E_MISSING_ARGUMENT"),
    ],
)
async def test_error_documents(doors: Doors, fields: dict[str, str], error_type: str, code: str) -> None:
    error = error_of(await call(doors, **{"authinfo": CORP1, **fields}))
    assert (error.get("type"), error.get("code")) == (error_type, code)


async def test_bad_input_never_5xx(doors: Doors) -> None:
    garbage = await doors.api.request("GET", f"{doors.billmgr}?func=route&out=xml&authinfo=%FF%FE")
    assert garbage.status == 200 and b"<error" in garbage.body
    huge = await doors.api.request("POST", f"{doors.billmgr}?out=xml", data={"func": "route", "x": "a" * 70_000})
    assert huge.status == 413 and b"<error" in huge.body
    no_colon = error_of(await call(doors, func="route", authinfo="corp1"))
    assert no_colon.get("type") == "auth"
    wrong_key_source = await doors.api.request(
        "GET", f"{doors.billmgr}?func=getInfo&out=xml&authinfo={CORP1}", source="127.0.0.2"
    )
    assert wrong_key_source.status == 200 and b'type="auth"' in wrong_key_source.body


async def test_wrong_password_then_lock_out(doors: Doors) -> None:
    for _ in range(doors.services.settings.login_max_failures):
        wrong = error_of(await call(doors, func="getInfo", authinfo="u1:not-it"))
        assert wrong.get("code") == "E_AUTH_FAILED"
    locked = error_of(await call(doors, func="getInfo", authinfo=f"u1:{PASSWORD}"))
    assert locked.get("type") == "auth" and locked.get("code") == "E_USER_LOCKED"


async def test_the_answer_is_the_same_data_as_the_narayana_door(doors: Doors) -> None:
    await add_route(doors)
    narayana = await doors.api.get(doors.key, "getRoutes", {"login": "corp1", "password": _md5(PASSWORD)})
    expected = narayana.json()["response"]
    data = (await call(doors, func="route", authinfo=CORP1, out="JSONdata")).json()["elem"]
    assert json.loads(json.dumps(data)) == json.loads(json.dumps(expected, default=str))


def _md5(text: str) -> str:
    from billing_core.auth.secrets_store import md5_hex

    return md5_hex(text)


async def test_a_session_is_accepted_only_with_the_key_it_was_opened_under(doors: Doors) -> None:
    login = {"method": "getInfo", "params": {"auth": {"login": "corp1", "password": PASSWORD}}, "id": 1}
    reply = await doors.api.request("POST", doors.jsonrpc, json=login)
    sid = json.loads(reply.body)["result"]["session_id"]
    same_key = xml(await call(doors, func="getInfo", auth=sid))  # the VCS session, the same key
    assert same_key.findtext("username") == "corp1"
    other_key = await make_key(doors.services, level=0, owner="admin", name="other-door")
    async with serve(with_settings(doors.services, billmgr_apikey=other_key), test_methods=False) as api:
        answer = await api.request("GET", f"http://127.0.0.1:{api.port}/billmgr?func=getInfo&out=xml&auth={sid}")
    root = etree.fromstring(answer.body)
    assert root.find("error").get("code") == "E_AUTH_FAILED"
