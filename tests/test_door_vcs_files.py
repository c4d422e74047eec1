"""VCS "work with files" (GET|POST /admin/): a file as the HTTP body, with login and
password or the SID of a JSON-RPC session, through the VCS door's key; both backends."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import pytest
from jsonrpclib import ServerProxy  # type: ignore[import-untyped]
from sqlalchemy import select

from billing_core.container import Services
from billing_core.directory.tables import users
from tests.doors_support import PASSWORD, Doors, open_doors
from tests.factories import MadeUser
from tests.http_support import Reply
from tests.test_api_keys_currencies_logs import add_cdr
from tests.test_door_vcs import blocking


@pytest.fixture
async def doors(services: Services) -> AsyncIterator[Doors]:
    async with open_doors(services) as opened:
        for name, calls in (("u1", 2), ("u2", 1)):
            async with services.db.begin() as conn:
                row = (await conn.execute(select(users).where(users.c.username == name))).one()
            user = MadeUser(row.id, name, row.account_id, PASSWORD, None)
            for n in range(calls):
                await add_cdr(services, user, n, "ANSWER")
        yield opened


def rows(reply: Reply) -> list[dict[str, str]]:
    assert reply.status == 200 and reply.content_type == "text/csv", reply.body[:300]
    return list(csv.DictReader(io.StringIO(reply.body.decode(), newline="")))


async def test_the_log_as_a_file_by_password_or_by_session(doors: Doors) -> None:
    files = f"{doors.base}/admin/"
    by_password = await doors.api.request(
        "GET", files, params={"method": "xdrs.list", "login": "u1", "password": PASSWORD}
    )
    assert [r["username"] for r in rows(by_password)] == ["u1", "u1"]
    assert by_password.headers["Content-Disposition"].startswith('attachment; filename="cdrs-u1-')

    login = await blocking(lambda: ServerProxy(doors.jsonrpc).getInfo(auth={"login": "corp1", "password": PASSWORD}))
    sid = login["session_id"]
    for_customer = await doors.api.request("POST", files, data={"method": "xdrs.list", "SID": sid, "user": "u1"})
    assert [r["username"] for r in rows(for_customer)] == ["u1", "u1"]
    # another reseller's customer: refused, as by getLogs, and no file
    foreign = await doors.api.request("POST", files, data={"method": "getLogs", "SID": sid, "user": "u2"})
    assert foreign.content_type == "application/json" and b"E_DOES_NOT_BELONG_TO_YOU" in foreign.body


async def test_bad_credentials_unknown_methods_and_forms_get_no_file(doors: Doors) -> None:
    files = f"{doors.base}/admin/"
    wrong = await doors.api.request("GET", files, params={"method": "xdrs.list", "login": "u1", "password": "nope"})
    stale = await doors.api.request("GET", files, params={"method": "xdrs.list", "SID": "0" * 32})
    u1 = {"login": "u1", "password": PASSWORD}
    unknown = await doors.api.request("GET", files, params={"method": "nothing.here", **u1})
    no_file = await doors.api.request("GET", files, params={"method": "getInfo", **u1})
    for reply in (wrong, stale, unknown, no_file):
        assert reply.status < 500 and reply.content_type == "application/json", reply.body[:200]
        assert b'"result": false' in reply.body and b"u1,u1" not in reply.body
    assert b"E_UNKNOWN_METHOD" in unknown.body and b"E_UNKNOWN_METHOD" in no_file.body
