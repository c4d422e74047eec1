"""The `callgate` command line on the embedded default, as a newcomer runs it."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import socket
import sqlite3
from pathlib import Path

import pytest

from billing_core.api.dispatch import Credentials, Dispatcher
from billing_core.config import Settings
from billing_core.container import Services
from callgate.cli import main

KEY_AT_END = re.compile(r"([0-9a-f]{32})$")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLGATE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("CALLGATE_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.delenv("CALLGATE_REDIS_URL", raising=False)
    # The CLI configures structlog for a terminal; here it would bind (and cache) loggers
    # to pytest's captured stderr, which is closed after this test.
    monkeypatch.setattr("callgate.cli.configure_logging", lambda *a, **k: None)
    return tmp_path


def _call(method: str, key: str, **args: str) -> object:
    async def run() -> object:
        import billing_core.api.methods  # noqa: F401

        services = Services.build(Settings.from_env())
        try:
            outcome = await Dispatcher(services).call(
                method, args, Credentials(peer_ip="127.0.0.1", transport="test", apikey=key)
            )
        finally:
            await services.close()
        assert outcome.error is None, outcome.error
        return outcome.value

    return asyncio.run(run())


def test_migrate_then_keys_add_prints_a_working_key_last(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"]) == 0
    assert main(["keys", "add", "portal", "--level", "33", "--source", "127.0.0.1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    match = KEY_AT_END.search(line)
    assert match, line
    keys = _call("getKeys", match.group(1), login="admin")
    assert isinstance(keys, list) and [k["name"] for k in keys] == ["portal"]
    # the key is stored hashed: its text is nowhere in the database file
    assert match.group(1).encode() not in (workdir / "cli.db").read_bytes()


def test_keys_add_refuses_a_bad_mask(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "add", "pbx", "--level", "50", "--source", "300.1.1.*"]) == 2
    assert "E_INVALID_ARGUMENT" in capsys.readouterr().err


def test_directions_import(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = workdir / "d.csv"
    good.write_text("code,direction,min_len,max_len\n49,Germany,10,13\n4915,Germany Mobile,12,13\n")
    assert main(["directions", "import", str(good)]) == 0
    assert main(["keys", "add", "portal", "--level", "33", "--source", "127.0.0.1"]) == 0
    key = KEY_AT_END.search(capsys.readouterr().out.strip().splitlines()[-1])
    assert key
    answer = _call("resolveDirection", key.group(1), number="491512345678")
    assert getattr(answer, "text", None) == "Germany Mobile"
    bad = workdir / "bad.csv"
    bad.write_text("code,name\n49,Germany\n")
    assert main(["directions", "import", str(bad)]) == 2


def test_demo_provisions_a_callable_world(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    asterisk = re.search(r"asterisk key .*: ([0-9a-f]{32})", out)
    portal = re.search(r"portal key .*: ([0-9a-f]{32})", out)
    assert asterisk and portal
    assert "AGI(agi://127.0.0.1:4573/callPrepare?" in out and "curl 'http://127.0.0.1:8080/billing/api/2.2/" in out
    prepared = _call("callPrepare", asterisk.group(1), login="10001", destination="4915112345678", call_id="d1")
    assert getattr(prepared, "result", None) == "Allowed"
    info = _call("getInfo", portal.group(1), login="admin", username="alice")
    assert isinstance(info, dict) and info["username"] == "alice"
    # a second run keeps the data and issues new keys
    assert main(["demo", "--quiet"]) == 0
    assert "portal key" in capsys.readouterr().out


@pytest.mark.parametrize("which", ["CALLGATE_AGI_LISTEN", "CALLGATE_HTTP_LISTEN"])
def test_serve_on_a_port_in_use_says_so_in_one_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    from tests.ports import HOST, free_port

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("CALLGATE_AGI_LISTEN", f"{HOST}:{free_port()}")
        monkeypatch.setenv("CALLGATE_HTTP_LISTEN", f"{HOST}:{free_port()}")
        monkeypatch.setenv(which, f"{HOST}:{port}")
        assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot listen on {HOST}:{port}: address already in use (is another callgate serving?)\n"


def test_keys_seal_gives_an_old_key_its_ciphertext(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["migrate"]) == 0
    assert main(["keys", "add", "partner", "--level", "50", "--source", "127.0.0.1"]) == 0
    match = KEY_AT_END.search(capsys.readouterr().out.strip().splitlines()[-1])
    assert match
    key = match.group(1)
    with sqlite3.connect(workdir / "cli.db") as db:  # as a key made before migration 0018 is
        db.execute("UPDATE api_keys SET key_enc = NULL")
    auth = hashlib.md5(f"{key}127.0.0.1partner".encode()).hexdigest()
    assert _call("authorizeRealm", key, source="127.0.0.1", auth=auth) is False
    monkeypatch.setattr("sys.stdin", io.StringIO("0000000000000000ffffffffffffffff\n"))
    assert main(["keys", "seal"]) == 1
    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    assert main(["keys", "seal"]) == 0
    assert "key partner sealed" in capsys.readouterr().out
    assert _call("authorizeRealm", key, source="127.0.0.1", auth=auth) is True
    assert key.encode() not in (workdir / "cli.db").read_bytes()  # kept encrypted, never in clear
