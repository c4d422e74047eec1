"""CLI writes reach a running `callgate serve`, and one bad key from the Asterisk host no
longer stops its calls: a real `callgate serve` on the embedded default (SQLite, the
in-process cache), with the CLI run as the separate processes an operator runs.

The embedded server used to keep a removed ban, a new key and imported directions out of
its in-process cache for as long as it ran. Each change is polled for up to a generous
DEADLINE_S; the requirement (within 2 s) is met by the 0.5 s poll of cache_generations.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.asterisk_sim import run_agi_session
from tests.ports import HOST, free_port

DEADLINE_S = 10.0
BAD_KEY = "0badc0de0badc0de0badc0de0badc0de"
CALL = "login=10001&destination=4915112345678&prior=1"


@dataclass
class Operator:
    cwd: Path
    env: dict[str, str]
    http_port: int
    agi_port: int

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "callgate.cli", *args], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"callgate {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    def http(self, key: str, method: str, query: str = "", *, source: str = HOST) -> tuple[int, str]:
        connection = http.client.HTTPConnection(HOST, self.http_port, timeout=10, source_address=(source, 0))
        try:
            connection.request("GET", f"/billing/api/2.2/{key}/{method}?{query}")
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def agi(self, *, source: str = HOST, uniqueid: str = "1795416507.1", query: str = CALL) -> dict[str, str]:
        result = asyncio.run(run_agi_session(HOST, self.agi_port, "callPrepare", query=query, uniqueid=uniqueid,
                                             local_addr=source))
        return result.variables


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"{what} did not reach callgate serve within {DEADLINE_S} s"
        time.sleep(0.1)


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[tuple[Operator, dict[str, str]]]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CALLGATE_")}
    agi_port, http_port = free_port(), free_port()
    env |= {
        "CALLGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'callgate.db'}",
        "CALLGATE_SECRET_FILE": str(tmp_path / "secret"),
        "CALLGATE_SPOOL_DIR": str(tmp_path / "spool"),
        "CALLGATE_AGI_LISTEN": f"{HOST}:{agi_port}",
        "CALLGATE_HTTP_LISTEN": f"{HOST}:{http_port}",
        "CALLGATE_LOG_LEVEL": "warning",
    }
    op = Operator(tmp_path, env, http_port, agi_port)
    out = op.cli("demo", "--quiet")
    keys = dict(re.findall(r"(portal|asterisk) key: ([0-9a-f]{32})", out))
    lan = op.cli("keys", "add", "lan-portal", "--level", "33", "--source", "127.0.0.2").split()[-1]
    serve = subprocess.Popen([sys.executable, "-m", "callgate.cli", "serve"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: _healthy(op, serve), "start-up")
        yield op, {**keys, "lan": lan}
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def _healthy(op: Operator, serve: subprocess.Popen[bytes]) -> bool:
    assert serve.poll() is None, "callgate serve exited"
    try:
        connection = http.client.HTTPConnection(HOST, op.http_port, timeout=1)
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False


def test_a_bad_key_from_the_asterisk_host_stops_nothing(operator: tuple[Operator, dict[str, str]]) -> None:
    op, keys = operator
    assert op.agi()["CALLGATE_RESULT"] == "Allowed"
    status, body = op.http(BAD_KEY, "getInfo", "login=admin")
    assert status == 401 and '"E_AUTH_FAILED"' in body
    # 127.0.0.1 is the demo's Asterisk key's address: on the whitelist, never banned
    assert op.cli("bans", "list") == ""
    second = op.agi(uniqueid="1795416507.2", query=CALL.replace("10001", "10002"))  # bob: alice's money is held
    assert second["CALLGATE_RESULT"] == "Allowed", second
    status, body = op.http(keys["portal"], "getInfo", "login=admin")
    assert status == 200 and '"result": true' in body


def test_bans_remove_reaches_a_running_server(operator: tuple[Operator, dict[str, str]]) -> None:
    op, keys = operator
    assert op.http(BAD_KEY, "getInfo", source="127.0.0.2")[0] == 401
    assert op.http(keys["lan"], "getCurrencies", source="127.0.0.2")[0] == 403
    assert '"127.0.0.2"' in op.cli("bans", "list")
    assert op.cli("bans", "remove", "127.0.0.2").strip() == "removed"
    eventually(lambda: op.http(keys["lan"], "getCurrencies", source="127.0.0.2")[0] == 200, "bans remove")


def test_directions_import_reaches_a_running_server(operator: tuple[Operator, dict[str, str]]) -> None:
    op, keys = operator
    before = op.http(keys["portal"], "resolveDirection", "number=99912345")[1]
    assert "Testland" not in before
    csv = op.cwd / "more.csv"
    csv.write_text("code,direction,min_len,max_len\n999,Testland,8,8\n")
    op.cli("directions", "import", str(csv))
    eventually(lambda: "Testland" in op.http(keys["portal"], "resolveDirection", "number=99912345")[1],
               "directions import")


def test_keys_add_reaches_a_running_server(operator: tuple[Operator, dict[str, str]]) -> None:
    op, _ = operator
    # no key admits 127.0.0.3 yet: its FastAGI is refused (and the server keys are cached)
    assert op.agi(source="127.0.0.3")["CALLGATE_RESULT"] == "Declined"
    op.cli("keys", "add", "pbx-3", "--level", "50", "--source", "127.0.0.3", "--auth-by", "sip_extension")
    eventually(lambda: op.agi(source="127.0.0.3", uniqueid=f"k{time.monotonic()}")["CALLGATE_RESULT"] == "Allowed",
               "keys add")
