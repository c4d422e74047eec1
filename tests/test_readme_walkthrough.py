"""The README's provisioning walkthrough, run as written against a real `callgate serve` on
the embedded default, from the clone, in the fresh directory it makes itself.

The setup block's lines run one by one in bash, starting in the clone; each line starts
where the one before left off (its directory, what it exported, the plain variables it
set). The placeholders <PORTAL_KEY> and <AGI_KEY> become the keys `callgate keys add`
printed, and the walkthrough's ports 8081 and 4574 the test's own (free) ones: nothing
else is changed. `mktemp -d` makes its directory under the test's tmp_path. In the
session block, each `$ command` runs and the lines after it are what it must
print: a line without `…` must be a line of the output, a line with `…` must have each of
its pieces in the output; `# comments` are prose. So the README cannot drift from what
callgate does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.doc_sections import section
from tests.ports import HOST, free_port

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Provisioning walkthrough"
_COMMENT = re.compile(r"\s+#\s.*$")  # a `#` after whitespace starts prose; URLs have none
# Without curl (a bare laptop), the same GET through Python's urllib, printing the body.
_CURL_SHIM = (
    'curl() { "$CALLGATE_TEST_PYTHON" -c \'import sys, urllib.request; '
    'sys.stdout.write(urllib.request.urlopen(sys.argv[-1]).read().decode())\' "$@"; }\n'
)


def sh_blocks(markdown: str, heading: str) -> list[list[str]]:
    """The ```sh blocks of one `## ` section, as lists of lines."""
    return [block.splitlines() for block in re.findall(r"```sh\n(.*?)```", section(markdown, heading), re.DOTALL)]


def without_comment(line: str) -> str:
    return _COMMENT.sub("", line).rstrip()


README_HTTP, README_AGI = "127.0.0.1:8081", "127.0.0.1:4574"
_STATE = "__callgate_walkthrough_state__"


@dataclass
class Shell:
    """Runs README lines in bash one by one, each going on from the state the last one left:
    its working directory, its environment and the walkthrough's plain variables."""

    cwd: Path
    env: dict[str, str]
    agi_port: int
    http_port: int
    keys: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)

    def expand(self, line: str) -> str:
        for placeholder, key in self.keys.items():
            line = line.replace(placeholder, key)
        return line.replace(README_HTTP, f"{HOST}:{self.http_port}").replace(README_AGI, f"{HOST}:{self.agi_port}")

    def run(self, line: str) -> str:
        prelude = "".join(f"{name}={value!r}\n" for name, value in self.variables.items())
        if shutil.which("curl") is None:
            prelude += _CURL_SHIM
        # After the line: where it left off, and its environment, NUL-separated.
        epilogue = f'\n__status=$?; printf "\\n{_STATE}%s\\0" "$PWD"; env -0; exit $__status'
        done = subprocess.run(["bash", "-c", prelude + self.expand(line) + epilogue], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{line!r} exited {done.returncode}: {done.stderr[-2000:]}"
        out, state = done.stdout.rsplit(f"\n{_STATE}", 1)
        cwd, *environment = state.split("\0")
        self.cwd = Path(cwd)
        self.env = dict(item.split("=", 1) for item in environment if "=" in item)
        for internal in ("__status", "PWD", "OLDPWD", "SHLVL", "_"):
            self.env.pop(internal, None)
        return out


def _wait_healthy(port: int, serve: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert serve.poll() is None, "callgate serve exited"
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise AssertionError("callgate serve did not become healthy")


def _run_setup(shell: Shell, lines: list[str]) -> subprocess.Popen[bytes]:
    serve: subprocess.Popen[bytes] | None = None
    for raw in lines:
        line = without_comment(raw)
        if not line:
            continue
        if line == "callgate serve &":
            serve = subprocess.Popen(["bash", "-c", "exec callgate serve"], cwd=shell.cwd, env=shell.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait_healthy(shell.http_port, serve)
        elif match := re.fullmatch(r"(\w+)=(\S+)", line):
            shell.variables[match[1]] = shell.expand(match[2])
        else:
            out = shell.run(line)
            if line.startswith("callgate keys add"):
                placeholder = re.search(r"<\w+_KEY>", raw)
                assert placeholder, f"the README names no key for {raw!r}"
                shell.keys[placeholder[0]] = out.split()[-1]  # the key is printed last
            if line.startswith("curl "):
                assert '"result": true' in out, f"{line!r} answered {out!r}"
                promised = raw.split("# ", 1)[1] if "# {" in raw else ""
                for piece in _pieces(promised):
                    assert piece in out, f"{line!r}: {piece!r} not in {out!r}"
    assert serve is not None, "the walkthrough never starts callgate serve"
    return serve


def _pieces(expected: str) -> list[str]:
    """The parts of an expected line around each `…`, without the separators next to it."""
    return [piece.strip().strip(",").strip() for piece in expected.split("…") if piece.strip(" ,")]


def _transcript(lines: list[str]) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(without_comment(line))
    return steps


def _check_output(command: str, out: str, expected: list[str]) -> None:
    actual_lines = out.splitlines()
    for line in expected:
        if line.strip() in ("", "…"):
            continue
        if "…" in line:
            for piece in _pieces(line):
                assert piece in out, f"{command!r}: {piece!r} not in {out!r}"
        else:
            assert line in actual_lines, f"{command!r}: {line!r} not a line of {out!r}"


def test_the_readme_walkthrough_works_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(README.read_text(encoding="utf-8"), SECTION)
    assert len(blocks) == 2, "the walkthrough has a setup block and a session block"
    setup, session = blocks
    agi_port, http_port = free_port(), free_port()
    # A newcomer's shell: no callgate settings, callgate not on PATH (the README puts it there).
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CALLGATE_", "VIRTUAL_ENV"))}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep) if part != venv_bin)
    env |= {"CALLGATE_TEST_PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    shell = Shell(README.parent, env, agi_port, http_port)
    serve = _run_setup(shell, setup)
    try:
        steps = _transcript(session)
        assert [command.split()[1] for command, _ in steps[:2]] == ["agi", "agi"]
        for command, expected in steps:
            _check_output(command, shell.run(command), expected)

        # "Running the same callFinish again … answers the same line and charges nothing more."
        finish = next(command for command, _ in steps if "callFinish" in command)
        balance = next(command for command, _ in steps if "property=balance" in command)
        before = shell.run(balance)
        first_answer = [line for line in shell.run(finish).splitlines() if line.startswith("CALLGATE_ANSWER=")]
        assert first_answer and first_answer[0].startswith("CALLGATE_ANSWER=Saved ")
        assert shell.run(balance) == before
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    # The embedded default, in the fresh directory the walkthrough made (not the clone).
    assert shell.cwd.parent == tmp_path and (shell.cwd / "callgate.db").exists()


@pytest.mark.parametrize(("expected", "pieces"), [
    ('{"id": 1, …, "route": "a", …}], …}', ['{"id": 1', '"route": "a"', "}]", "}"]),
    ("…", []),
])  # fmt: skip
def test_pieces_split_on_the_ellipsis(expected: str, pieces: list[str]) -> None:
    assert _pieces(expected) == pieces
