"""Asterisk servers: the table, `callgate asterisk add|list|remove`, the `local` server of a
fresh install, and E_SIP_SERVER_NOT_EXIST where SIP accounts name a server."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from billing_core.api.dispatch import Dispatcher
from billing_core.asterisk.servers import ServerSpec, add_server, ami_targets, list_servers, remove_server
from billing_core.asterisk.tables import asterisk_servers, asterisk_sip_servers
from billing_core.auth.secrets_store import md5_hex
from billing_core.bootstrap import seed_base_data
from billing_core.container import Services
from billing_core.directory.tables import sip_extensions, users
from billing_core.errors import ApiError
from callgate.cli import main
from tests.factories import make_user
from tests.test_api_extensions import extension_row
from tests.test_api_users import Keys, call, code, login, make_keys

SECRET = "ami-s3cret-Zq9"


def pbx(name: str = "pbx1", *names: str, secret: str | None = SECRET, user: str = "callgate") -> ServerSpec:
    return ServerSpec(name, "10.0.0.5", "10.0.0.5", 5038, user, secret, names or (f"{name}.example.net",))


@pytest.fixture
async def keys(services: Services) -> Keys:
    return await make_keys(services)


async def _count(services: Services, table: Any) -> int:
    async with services.db.begin() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def _register(user: str, sip_server: str, extension: str) -> dict[str, str]:
    return {
        "login": "admin", "user": user, "web_password": md5_hex("pw"), "accesslevel": "11",
        "sip_server": sip_server, "sip_extension": extension, "sip_password": "sip-pw",
    }  # fmt: skip


async def test_a_fresh_install_has_the_server_local_named_by_the_walkthroughs_sip_server(services: Services) -> None:
    servers = await list_servers(services.db)
    assert servers == [
        {
            "name": "local", "address": "127.0.0.1", "ami_host": "127.0.0.1", "ami_port": 5038, "ami_user": "",
            "ami_secret": "", "sip_servers": ["127.0.0.1", "localhost"], "enabled": True,
        }
    ]  # fmt: skip
    assert await ami_targets(services.db, services.box) == []  # no AMI user: nothing to connect to
    await seed_base_data(services.db)  # a second `callgate migrate` adds nothing
    assert await _count(services, asterisk_servers) == 1


async def test_register_user_with_an_unknown_sip_server_is_refused_and_writes_nothing(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    before = (await _count(services, users), await _count(services, sip_extensions))
    refused = await call(dispatcher, keys.server, "registerUser", _register("bob", "sip.nowhere.example", "40001"))
    assert code(refused) == "E_SIP_SERVER_NOT_EXIST"
    assert (await _count(services, users), await _count(services, sip_extensions)) == before

    ok = await call(dispatcher, keys.server, "registerUser", _register("bob", "LocalHost", "40001"))
    assert ok.ok, ok.error
    assert (await extension_row(services, "40001")).sip_server == "LocalHost"  # stored as given


async def test_create_and_update_extension_check_the_sip_server(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    alice = await make_user(services, "alice", sip_extension="70001")
    create = await call(
        dispatcher, keys.client, "createExtension",
        login(alice, sip_extension="70002", sip_password="pw", sip_server="pbx1.example.net"),
    )  # fmt: skip
    assert code(create) == "E_SIP_SERVER_NOT_EXIST" and await extension_row(services, "70002") is None
    unnamed_args = login(alice, sip_extension="70003", sip_password="pw")
    unnamed = await call(dispatcher, keys.client, "createExtension", unnamed_args)
    assert unnamed.ok and (await extension_row(services, "70003")).sip_server == ""  # optional: names no server

    move = login(alice, sip_extension="70001", sip_server="pbx1.example.net")
    assert code(await call(dispatcher, keys.client, "updateExtension", move)) == "E_SIP_SERVER_NOT_EXIST"
    assert (await extension_row(services, "70001")).sip_server == ""

    await add_server(services.db, services.box, pbx("pbx1"))
    assert (await call(dispatcher, keys.client, "updateExtension", move)).ok
    assert (await extension_row(services, "70001")).sip_server == "pbx1.example.net"
    create_again = login(alice, sip_extension="70002", sip_password="pw", sip_server="PBX1.example.NET")
    assert (await call(dispatcher, keys.client, "createExtension", create_again)).ok


async def test_the_ami_secret_is_stored_encrypted_and_never_listed(services: Services) -> None:
    await add_server(services.db, services.box, pbx("pbx1", "pbx1.example.net", "10.0.0.5"))
    async with services.db.begin() as conn:
        row = (await conn.execute(select(asterisk_servers).where(asterisk_servers.c.name == "pbx1"))).one()
    assert SECRET not in row.ami_secret_enc and services.box.decrypt(row.ami_secret_enc) == SECRET
    listed = await list_servers(services.db)
    assert SECRET not in json.dumps(listed)
    assert [(s["name"], s["ami_secret"], s["sip_servers"]) for s in listed] == [
        ("local", "", ["127.0.0.1", "localhost"]),
        ("pbx1", "set", ["10.0.0.5", "pbx1.example.net"]),
    ]
    [target] = await ami_targets(services.db, services.box)
    assert (target.name, target.host, target.port, target.user, target.secret) == (
        "pbx1", "10.0.0.5", 5038, "callgate", SECRET
    )  # fmt: skip


async def test_a_sip_server_name_belongs_to_one_server(services: Services) -> None:
    await add_server(services.db, services.box, pbx("pbx1", "shared.example.net"))
    for spec in (pbx("pbx2", "Shared.example.net"), pbx("pbx3", "127.0.0.1")):
        with pytest.raises(ApiError) as refused:
            await add_server(services.db, services.box, spec)
        assert refused.value.code.value == "E_DATA_ABORT"
    with pytest.raises(ApiError) as taken:
        await add_server(services.db, services.box, pbx("pbx1", "other.example.net"))
    assert taken.value.code.value == "E_DATA_ABORT"
    with pytest.raises(ApiError) as no_secret:
        await add_server(services.db, services.box, pbx("pbx4", "pbx4.example.net", secret=None))
    assert no_secret.value.code.value == "E_MISSING_ARGUMENT"
    assert [s["name"] for s in await list_servers(services.db)] == ["local", "pbx1"]


async def test_replace_keeps_the_secret_and_remove_frees_the_names(
    services: Services, dispatcher: Dispatcher, keys: Keys
) -> None:
    await add_server(services.db, services.box, pbx("pbx1", "old.example.net"))
    await add_server(services.db, services.box, pbx("pbx1", "new.example.net", secret=None), replace=True)
    [target] = await ami_targets(services.db, services.box)
    assert (target.sip_servers, target.secret) == (("new.example.net",), SECRET)
    assert (await call(dispatcher, keys.server, "registerUser", _register("carol", "new.example.net", "40002"))).ok

    assert await remove_server(services.db, "pbx1") == 1  # carol's SIP account still names it
    assert await _count(services, asterisk_sip_servers) == 2  # local's two names only
    again = await call(dispatcher, keys.server, "registerUser", _register("dave", "new.example.net", "40003"))
    assert code(again) == "E_SIP_SERVER_NOT_EXIST"
    assert (await extension_row(services, "40002")).sip_server == "new.example.net"  # kept as it was


async def test_an_upgraded_install_keeps_the_sip_servers_its_accounts_already_give(services: Services) -> None:
    await make_user(services, "erin", sip_extension="70010")
    async with services.db.begin() as conn:
        await conn.execute(update(sip_extensions).values(sip_server="PBX.Old.example"))
        await conn.execute(delete(asterisk_sip_servers))
        await conn.execute(delete(asterisk_servers))  # as before migration 0009
    await seed_base_data(services.db)
    [local] = await list_servers(services.db)
    assert local["sip_servers"] == ["127.0.0.1", "localhost", "pbx.old.example"]


def test_cli_add_list_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLGATE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("CALLGATE_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.delenv("CALLGATE_REDIS_URL", raising=False)
    monkeypatch.setattr("callgate.cli.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))

    assert main(["migrate"]) == 0
    add = ["asterisk", "add", "pbx1", "--address", "10.0.0.5", "--sip-server", "pbx1.example.net,10.0.0.5",
           "--ami-user", "callgate", "--ami-secret-stdin"]  # fmt: skip
    assert main(add) == 0
    assert main(["asterisk", "add", "pbx2", "--address", "10.0.0.6", "--sip-server", "10.0.0.5"]) == 2
    capsys.readouterr()
    assert main(["asterisk", "list"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["name"], r["ami_host"], r["ami_user"], r["ami_secret"], r["sip_servers"]) for r in rows] == [
        ("local", "127.0.0.1", "", "", ["127.0.0.1", "localhost"]),
        ("pbx1", "10.0.0.5", "callgate", "set", ["10.0.0.5", "pbx1.example.net"]),
    ]
    assert SECRET.encode() not in (tmp_path / "cli.db").read_bytes()
    assert main(["asterisk", "remove", "pbx1"]) == 0
    assert main(["asterisk", "remove", "pbx1"]) == 2
    assert "no server 'pbx1'" in capsys.readouterr().err


def test_the_readme_section_works_as_written(tmp_path: Path) -> None:
    """README "Asterisk servers and AMI": each `$ command` runs in bash as written (from a
    newcomer's shell, callgate on PATH) and prints what the README shows after it."""
    import os
    import sys

    from tests.test_readme_walkthrough import README, Shell, _check_output, _transcript, sh_blocks

    [block] = sh_blocks(README.read_text(encoding="utf-8"), "## Asterisk servers and AMI")
    env = {name: value for name, value in os.environ.items() if not name.startswith("CALLGATE_")}
    env |= {"TMPDIR": str(tmp_path), "PATH": os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])}
    shell = Shell(tmp_path, env, agi_port=0, http_port=0)
    steps = _transcript(block)
    assert [command.split()[0] for command, _ in steps[:2]] == ["cd", "callgate"]
    for command, expected in steps:
        _check_output(command, shell.run(command), expected)
    assert shell.cwd.parent == tmp_path and "my-ami-secret" not in (shell.cwd / "callgate.db").read_text("latin-1")
