"""getLogs.csv, the call log as a streamed CSV file, over the real HTTP door: the rows
getLogs shows (same filters, same ownership), parsed with the csv module; the headers;
paging across many pages; bad input answered in the JSON envelope, never a cut file."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update

from billing_core.cache.keys import NAMESPACES
from billing_core.calls import cdr_export
from billing_core.catalog.params import NoParams
from billing_core.catalog.registry import Registry
from billing_core.container import Services
from billing_core.directory.tables import users
from billing_core.rating.tables import currencies
from tests.factories import MadeUser, make_key, make_user
from tests.http_support import Api, Reply, serve
from tests.test_api_keys_currencies_logs import add_cdr
from tests.test_api_users import Keys, login, make_keys


@pytest.fixture
async def keys(services: Services) -> Keys:
    return await make_keys(services)


@pytest.fixture
async def api(services: Services) -> Any:
    async with serve(services, test_methods=False) as running:
        yield running


def rows_of(reply: Reply) -> list[dict[str, str]]:
    assert reply.status == 200, reply.body[:300]
    return list(csv.DictReader(io.StringIO(reply.body.decode("utf-8"), newline="")))


def as_text(value: Any) -> str:
    return f"{value:f}" if isinstance(value, Decimal) else str(value)


async def world(services: Services) -> tuple[MadeUser, MadeUser]:
    async with services.db.begin() as conn:
        await conn.execute(currencies.insert().values(currency="RUB", eur_course=Decimal(100), displayname="rub."))
    alice = await make_user(services, "alice", currency="RUB", sip_extension="10001")
    bob = await make_user(services, "bob", sip_extension="20002")
    async with services.db.begin() as conn:
        await conn.execute(update(users).where(users.c.id == alice.id).values(timezone=Decimal("3")))
    await services.cache.invalidate(*NAMESPACES)
    await add_cdr(services, alice, 1, "ANSWER", destination="20002")
    await add_cdr(services, alice, 2, "0NOANSWER")
    await add_cdr(services, alice, 3, "16ANSWER", destination='7,"quoted"\n')
    await add_cdr(services, alice, 4, "0CANCEL")
    await add_cdr(services, bob, 5, "ANSWER")
    return alice, bob


@pytest.mark.parametrize(
    "filters",
    [{}, {"limit": "2"}, {"only_completed": "true"}, {"resolve_info": "true"}, {"only_completed": "1", "limit": "1"}],
)
async def test_the_file_holds_exactly_what_get_logs_shows_for_the_same_filters(
    services: Services, api: Api, keys: Keys, filters: dict[str, str]
) -> None:
    alice, _ = await world(services)

    reply = await api.get(keys.client, "getLogs.csv", login(alice, **filters))
    shown = (await api.get(keys.client, "getLogs", login(alice, **filters))).json()["response"]

    rows = rows_of(reply)
    assert rows == [{k: as_text(v) for k, v in entry.items()} for entry in shown]
    assert rows and all(r["username"] == "alice" for r in rows)
    expected_header = cdr_export.RESOLVED_COLUMNS if "resolve_info" in filters else cdr_export.COLUMNS
    assert reply.body.decode().split("\r\n", 1)[0] == ",".join(expected_header)


async def test_the_file_comes_as_a_csv_attachment_in_chunks_get_or_post(
    services: Services, api: Api, keys: Keys
) -> None:
    alice, _ = await world(services)

    got = await api.get(keys.client, "getLogs.csv", login(alice))
    posted = await api.post(keys.client, "getLogs.csv", data=login(alice, only_completed="true"))

    assert got.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert got.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in got.headers
    assert got.headers["Content-Disposition"].startswith('attachment; filename="cdrs-alice-')
    assert got.headers["Content-Disposition"].endswith('.csv"')
    cost = {r["id"]: (r["cost"], r["displaycost"], r["displaycurrency"], r["clientdate"]) for r in rows_of(got)}
    assert cost[min(cost, key=int)] == ("0.1234", "12.34", "rub.", "2024-05-01 15:01:00")
    assert [r["status"] for r in rows_of(posted)] == ["16ANSWER", "ANSWER"]
    assert rows_of(posted)[0]["destination"] == '7,"quoted"\n'  # quoted as RFC 4180 says


async def test_a_log_of_many_pages_comes_whole_in_order_and_limit_spans_pages(
    services: Services, api: Api, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cdr_export, "PAGE_ROWS", 3)
    alice = await make_user(services, "alice")
    for n in range(1, 12):
        await add_cdr(services, alice, n, "ANSWER" if n % 2 else "0BUSY")

    every = rows_of(await api.get(keys.client, "getLogs.csv", login(alice)))
    seven = rows_of(await api.get(keys.client, "getLogs.csv", login(alice, limit="7")))
    answered = rows_of(await api.get(keys.client, "getLogs.csv", login(alice, only_completed="true")))
    exactly_three = rows_of(await api.get(keys.client, "getLogs.csv", login(alice, limit="3")))

    ids = [int(r["id"]) for r in every]
    assert len(ids) == 11 and ids == sorted(ids, reverse=True)
    assert [r["id"] for r in seven] == [r["id"] for r in every[:7]]
    assert [r["time"] for r in answered] == [str(60 + n) for n in (11, 9, 7, 5, 3, 1)]
    assert [r["id"] for r in exactly_three] == [r["id"] for r in every[:3]]


async def test_an_empty_log_is_a_file_with_its_header_only(services: Services, api: Api, keys: Keys) -> None:
    alice = await make_user(services, "alice")

    reply = await api.get(keys.client, "getLogs.csv", login(alice))

    assert reply.status == 200 and rows_of(reply) == []
    assert reply.body.decode() == ",".join(cdr_export.COLUMNS) + "\r\n"


async def test_ownership_is_get_logs_own_a_reseller_exports_only_its_users(
    services: Services, api: Api, keys: Keys
) -> None:
    res1 = await make_user(services, "res1", accesslevel=22)
    await make_user(services, "res2", accesslevel=22)
    carol = await make_user(services, "carol", manager="res1")
    dave = await make_user(services, "dave", manager="res2")
    await add_cdr(services, carol, 1, "ANSWER")
    await add_cdr(services, dave, 2, "ANSWER")

    own_customer = await api.get(keys.client, "getLogs.csv", login(res1, user="carol"))
    acting_for = await api.get(keys.client, "getLogs.csv", login(res1, username="carol"))
    foreign = await api.get(keys.client, "getLogs.csv", login(res1, user="dave"))
    foreign_acting = await api.get(keys.client, "getLogs.csv", login(res1, username="dave"))
    upward = await api.get(keys.client, "getLogs.csv", login(carol, user="res1"))
    ghost = await api.get(keys.client, "getLogs.csv", login(res1, user="ghost"))
    by_admin = await api.get(keys.server, "getLogs.csv", {"login": "admin", "user": "dave"})

    assert [r["username"] for r in rows_of(own_customer)] == ["carol"]
    assert [r["username"] for r in rows_of(acting_for)] == ["carol"]
    for refused in (foreign, foreign_acting, upward):
        assert (refused.status, refused.content_type, refused.code) == (
            200, "application/json", "E_DOES_NOT_BELONG_TO_YOU",
        )  # fmt: skip
        assert b"dave" not in refused.body or refused is upward
    assert ghost.code == "E_NOT_EXIST"
    assert [r["username"] for r in rows_of(by_admin)] == ["dave"]


async def test_credentials_and_key_rules_are_the_doors_own(services: Services, api: Api, keys: Keys) -> None:
    alice = await make_user(services, "alice")
    await add_cdr(services, alice, 1, "ANSWER")
    info_only = await make_key(services, level=0, name="info-only", allowed_methods="getInfo")
    logs_only = await make_key(services, level=0, name="logs-only", allowed_methods="getLogs")

    wrong = await api.get(keys.client, "getLogs.csv", {"login": "alice", "password": "0" * 32})
    anonymous = await api.get(keys.client, "getLogs.csv")
    not_allowed = await api.get(info_only, "getLogs.csv", login(alice))
    allowed = await api.get(logs_only, "getLogs.csv", login(alice))
    bad_key = await api.get("no-such-key-000000", "getLogs.csv", login(alice))

    assert (wrong.content_type, wrong.code) == ("application/json", "E_AUTH_FAILED")
    assert anonymous.code == "E_AUTH_FAILED"
    assert not_allowed.code == "E_INSUFFICIENT_ACCESS"
    assert len(rows_of(allowed)) == 1
    assert bad_key.status == 401


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("getLogs.csv", {"limit": "0"}, "E_INVALID_ARGUMENT"),
        ("getLogs.csv", {"limit": "many"}, "E_INVALID_ARGUMENT"),
        ("getLogs.csv", {"limit": "99999999999"}, "E_INVALID_ARGUMENT"),
        ("getLogs.csv", {"only_completed": "perhaps"}, "E_INVALID_ARGUMENT"),
        ("getLogs.xml", {}, "E_UNKNOWN_METHOD"),
        ("getInfo.csv", {}, "E_UNKNOWN_METHOD"),
        ("getLogs.", {}, "E_UNKNOWN_METHOD"),
        ("getLogs.csv.gz", {}, "E_UNKNOWN_METHOD"),
        ("noSuchMethod.csv", {}, "E_UNKNOWN_METHOD"),
    ],
)
async def test_bad_input_is_a_json_error_never_a_file(
    services: Services, api: Api, keys: Keys, method: str, args: dict[str, str], expected: str
) -> None:
    alice = await make_user(services, "alice")
    await add_cdr(services, alice, 1, "ANSWER")

    reply = await api.get(keys.client, method, login(alice, **args))

    assert (reply.status, reply.content_type, reply.code) == (400, "application/json", expected)
    assert "Content-Disposition" not in reply.headers


async def test_a_file_form_needs_its_method_and_a_plain_format_name() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="unknown method"):
        registry.file_form("nothing", "csv", params=NoParams)

    @registry.method("thing", level=7, params=NoParams, returns="json")
    async def thing(ctx: Any, p: NoParams) -> None: ...

    for bad in ("CSV", "c.sv", ""):
        with pytest.raises(ValueError, match="lower-case word"):
            registry.file_form("thing", bad, params=NoParams)
    registry.file_form("thing", "csv", params=NoParams)(thing)  # type: ignore[arg-type]
    form = registry.get_file("thing", "csv")
    assert form is not None and (form.name, form.access_level, form.returns, form.form) == ("thing", 7, "file", "csv")
    assert registry.names() == ["thing"]  # a file form is no method of its own


async def test_what_delete_logs_hid_is_not_exported(services: Services, api: Api, keys: Keys) -> None:
    carol = await make_user(services, "carol")
    await add_cdr(services, carol, 1, "ANSWER")
    assert len(rows_of(await api.get(keys.server, "getLogs.csv", {"login": "admin", "user": "carol"}))) == 1
    hidden = await api.get(keys.server, "deleteLogs", {"login": "admin", "user": "carol"})
    assert hidden.status == 200 and b'"response": true' in hidden.body
    assert rows_of(await api.get(keys.server, "getLogs.csv", {"login": "admin", "user": "carol"})) == []
