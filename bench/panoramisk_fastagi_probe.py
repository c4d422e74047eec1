"""Probe panoramisk's FastAGI server (``panoramisk.fast_agi.Application``) for three claimed defects.

    python -m bench.panoramisk_fastagi_probe [--loop uvloop|asyncio] [--json]

The panoramisk server runs in a child process (``--serve``), served the documented way
(``asyncio.start_server(app.handler, host, port)``), with a ticker task that prints a line
every 10 ms; this process plays Asterisk over loopback and watches the ticks, so a frozen
child loop is measured from outside. Each claim gets a fresh child, killed at the end.

(a) a peer that sends half an env block and disconnects: does the child's loop keep
    running (max gap between ticks, child CPU) and does the next normal session get its
    first command within 2 s?  (a') the same with a connect-and-close that sends nothing,
    as a TCP health check or a port scan does.
(b) ``agi_network_script: callPrepare?destination=...`` (what Asterisk sends for
    ``AGI(agi://host/callPrepare?destination=...)``): is the ``callPrepare`` route found?
(c) an out-of-band ``HANGUP`` line written before the reply to a command: what does
    the handler get back for each of its commands?

A claim is PASS when the defect is reproduced, FAIL when panoramisk behaves correctly.
Every wait has a time limit; the whole run ends within ~30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Final

HOST: Final = "127.0.0.1"
TICK_S: Final = 0.010
CHILD_MAX_S: Final = 25.0  # a child that is not frozen exits by itself after this
COMMAND_TIMEOUT_S: Final = 3.0
ANSWER_WITHIN_S: Final = 2.0
FREEZE_WATCH_S: Final = 3.0
FREEZE_GAP_MS: Final = 1000.0  # a tick gap this long means the loop is frozen
OVERALL_DEADLINE_S: Final = 30.0
PROJECT_ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUERY_SCRIPT: Final = "callPrepare?login=1001&destination=15551234567&callerid=1001&prior=1"


# ---------------------------------------------------------------------------------------------
# child: the panoramisk server
# ---------------------------------------------------------------------------------------------


def _emit(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **data}) + "\n")
    sys.stdout.flush()


class _JsonLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _emit("log", level=record.levelname, msg=record.getMessage())


async def _serve() -> None:
    from panoramisk.fast_agi import Application

    logging.getLogger("panoramisk").addHandler(_JsonLogHandler())
    logging.getLogger("panoramisk").setLevel(logging.INFO)

    app = Application()

    async def call_prepare(request: Any) -> None:
        script = request.headers.get("agi_network_script")
        _emit("handler", route="callPrepare", script=script)
        reply = await asyncio.wait_for(request.send_command("SET VARIABLE CALLGATE_RESULT Allowed"), COMMAND_TIMEOUT_S)
        _emit("handler_reply", route="callPrepare", command="SET VARIABLE CALLGATE_RESULT Allowed", reply=reply)

    async def hangup_probe(request: Any) -> None:
        _emit("handler", route="hangupProbe", script=request.headers.get("agi_network_script"))
        for name in ("A", "B", "C"):
            command = f"GET VARIABLE {name}"
            try:
                reply = await asyncio.wait_for(request.send_command(command), COMMAND_TIMEOUT_S)
            except TimeoutError:
                reply = {"probe": f"no reply within {COMMAND_TIMEOUT_S:.0f} s"}
            _emit("handler_reply", route="hangupProbe", command=command, reply=reply)

    app.add_route("callPrepare", call_prepare)
    app.add_route("hangupProbe", hangup_probe)

    server = await asyncio.start_server(app.handler, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    _emit("listening", port=port, pid=os.getpid())
    for n in range(int(CHILD_MAX_S / TICK_S)):  # bounded: ends after CHILD_MAX_S
        _emit("tick", n=n)
        await asyncio.sleep(TICK_S)
    server.close()


def serve_main(loop_name: str) -> None:
    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve())
    else:
        asyncio.run(_serve())


# ---------------------------------------------------------------------------------------------
# parent: plays Asterisk and watches the child
# ---------------------------------------------------------------------------------------------


@dataclass
class Child:
    proc: asyncio.subprocess.Process
    port: int = 0
    tick_times: list[float] = field(default_factory=list)  # parent's clock, when each tick arrived
    events: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:  # ends at the child's EOF (it exits or is killed)
            line = await self.proc.stdout.readline()
            if not line:
                return
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "tick":
                self.tick_times.append(time.monotonic())
            else:
                self.events.append(ev)

    def max_gap_ms(self, since: float, until: float) -> float:
        """Longest time without a tick in [since, until], as seen by the parent."""
        times = [t for t in self.tick_times if since <= t <= until]
        points = [since, *times, until]
        return max(b - a for a, b in itertools.pairwise(points)) * 1000.0

    def cpu_seconds(self) -> float | None:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == kind]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()  # our own child, by its handle
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


async def start_child(loop_name: str) -> Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.panoramisk_fastagi_probe",
        "--serve",
        "--loop",
        loop_name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=PROJECT_ROOT,
    )
    child = Child(proc)
    child.reader = asyncio.create_task(child._read())
    for _ in range(500):  # up to 5 s
        listening = child.of("listening")
        if listening:
            child.port = int(listening[0]["port"])
            return child
        await asyncio.sleep(0.01)
    await child.stop()
    raise RuntimeError("the panoramisk child did not start listening within 5 s")


def env_lines(script: str) -> list[str]:
    """The env block as res_agi.c writes it for AGI(agi://127.0.0.1/<script>), one line per write."""
    return [
        "agi_network: yes",
        f"agi_network_script: {script}",
        f"agi_request: agi://127.0.0.1/{script}",
        "agi_channel: PJSIP/1001-00000001",
        "agi_language: en",
        "agi_type: PJSIP",
        "agi_uniqueid: 1763888000.1",
        "agi_version: 22.0.0",
        "agi_callerid: 1001",
        "agi_calleridname: Alice",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: 15551234567",
        "agi_rdnis: unknown",
        "agi_context: callgate-outbound",
        "agi_extension: 15551234567",
        "agi_priority: 2",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140000000000000",
    ]


@dataclass
class SessionResult:
    commands: list[str] = field(default_factory=list)
    first_command_after_ms: float | None = None
    closed_by_server: bool = False
    error: str = ""


async def agi_session(
    port: int, script: str, replies: Sequence[str], *, within_s: float = ANSWER_WITHIN_S
) -> SessionResult:
    """Play Asterisk: send the env block, then answer each command with the next of *replies*
    (a reply may hold several lines, e.g. an out-of-band HANGUP first)."""
    out = SessionResult()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), within_s)
    except (OSError, TimeoutError) as exc:
        out.error = f"connect: {exc!r}"
        return out
    try:
        for line in env_lines(script):
            writer.write(line.encode() + b"\n")
        writer.write(b"\n")
        await writer.drain()
        sent = time.monotonic()
        for reply in [*replies, None]:  # bounded by the number of replies
            try:
                raw = await asyncio.wait_for(reader.readline(), within_s)
            except TimeoutError:
                out.error = f"no command (and no close) within {within_s:.0f} s"
                return out
            except ConnectionError as exc:  # a close with unread replies in its buffer is a reset
                out.closed_by_server = True
                out.error = f"connection reset by the server ({type(exc).__name__})"
                return out
            if not raw:
                out.closed_by_server = True
                return out
            if out.first_command_after_ms is None:
                out.first_command_after_ms = (time.monotonic() - sent) * 1000.0
            out.commands.append(raw.decode().rstrip("\n"))
            if reply is None:
                out.error = "more commands than scripted replies"
                return out
            try:
                writer.write(reply.encode())
                await writer.drain()
            except ConnectionError as exc:
                out.closed_by_server = True
                out.error = f"connection reset by the server ({type(exc).__name__})"
                return out
        return out
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)


@dataclass
class Verdict:
    claim: str
    reproduced: bool
    evidence: dict[str, Any]

    def line(self) -> str:
        return f"{'PASS' if self.reproduced else 'FAIL'}  {self.claim}"


async def probe_freeze(loop_name: str, half_env: bool) -> Verdict:
    child = await start_child(loop_name)
    try:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        baseline_gap = child.max_gap_ms(now - 1.0, now)
        control = await agi_session(child.port, "callPrepare", ["200 result=1\n"])

        cpu0, t0 = child.cpu_seconds(), time.monotonic()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, child.port), 2)
        if half_env:
            for line in env_lines("callPrepare")[:8]:  # 8 of 22 lines, no blank line
                writer.write(line.encode() + b"\n")
            await writer.drain()
        writer.close()  # FIN, no RST
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)
        del reader
        await asyncio.sleep(FREEZE_WATCH_S)
        cpu1, t1 = child.cpu_seconds(), time.monotonic()
        gap = child.max_gap_ms(t0, t1)
        ticks_during = len([t for t in child.tick_times if t0 <= t <= t1])

        after = await agi_session(child.port, "callPrepare", ["200 result=1\n"])
        answered = after.first_command_after_ms is not None and after.first_command_after_ms <= ANSWER_WITHIN_S * 1000
        cpu_pct = None if cpu0 is None or cpu1 is None else round(100.0 * (cpu1 - cpu0) / (t1 - t0))
        if half_env:
            what = "(a) peer sends half an env block (8 of 22 lines) then closes"
        else:
            what = "(a') peer connects and closes, no bytes"
        return Verdict(
            claim=f"{what}: the whole event loop freezes",
            reproduced=gap >= FREEZE_GAP_MS and not answered,
            evidence={
                "tick_max_gap_ms_before": round(baseline_gap, 1),
                "control_session_first_command_ms": _r(control.first_command_after_ms),
                "control_session_commands": control.commands,
                "tick_max_gap_ms_after_disconnect": round(gap, 1),
                "watch_window_s": FREEZE_WATCH_S,
                "ticks_in_window": ticks_during,
                "ticks_expected_in_window": int(FREEZE_WATCH_S / TICK_S),
                "child_cpu_percent_in_window": cpu_pct,
                "next_session_first_command_ms": _r(after.first_command_after_ms),
                "next_session_error": after.error,
                "next_session_answered_within_2s": answered,
            },
        )
    finally:
        await child.stop()


async def probe_query_string(loop_name: str) -> Verdict:
    child = await start_child(loop_name)
    try:
        plain = await agi_session(child.port, "callPrepare", ["200 result=1\n"])
        await asyncio.sleep(0.2)
        handled_plain = [e["script"] for e in child.of("handler")]
        with_query = await agi_session(child.port, QUERY_SCRIPT, ["200 result=1\n"])
        await asyncio.sleep(0.2)
        handled = [e["script"] for e in child.of("handler")]
        routed = QUERY_SCRIPT in handled
        logs = [e["msg"] for e in child.of("log") if e.get("level") in ("ERROR", "WARNING")]
        return Verdict(
            claim="(b) agi_network_script with a query string is not routed to its script",
            reproduced=("callPrepare" in handled_plain) and not routed,
            evidence={
                "control_script": "callPrepare",
                "control_routed": "callPrepare" in handled_plain,
                "control_commands_received": plain.commands,
                "script": QUERY_SCRIPT,
                "routed": routed,
                "commands_received": with_query.commands,
                "socket_closed_without_a_command": with_query.closed_by_server and not with_query.commands,
                "server_log": logs,
            },
        )
    finally:
        await child.stop()


async def probe_hangup(loop_name: str) -> Verdict:
    child = await start_child(loop_name)
    try:
        # Asterisk: the caller hangs up while "GET VARIABLE A" is pending -> it writes the
        # out-of-band "HANGUP\n" (AGISIGHUP) and then the reply to A.
        replies = ["HANGUP\n200 result=1 (value-of-A)\n", "200 result=1 (value-of-B)\n", "200 result=1 (value-of-C)\n"]
        session = await agi_session(child.port, "hangupProbe", replies)
        await asyncio.sleep(0.3)
        got = [(e["command"], e["reply"]) for e in child.of("handler_reply") if e.get("route") == "hangupProbe"]

        def shown(reply: dict[str, Any]) -> str:
            if "error" in reply:
                return f"{reply['error']} ({reply.get('msg', '')})"
            if "probe" in reply:
                return str(reply["probe"])
            result = reply.get("result") or ["", ""]
            return f"{reply.get('status_code')} result={result[0]} ({result[1]})"

        received = {command: shown(reply) for command, reply in got}
        off_by_one = (
            len(got) == 3
            and "HANGUP" in received.get("GET VARIABLE A", "").upper()
            and "value-of-A" in received.get("GET VARIABLE B", "")
            and "value-of-B" in received.get("GET VARIABLE C", "")
        )
        return Verdict(
            claim="(c) an out-of-band HANGUP before a reply puts every later reply off by one",
            reproduced=off_by_one,
            evidence={
                "asterisk_wrote": {
                    "GET VARIABLE A": "HANGUP, then 200 result=1 (value-of-A)",
                    "GET VARIABLE B": "200 result=1 (value-of-B)",
                    "GET VARIABLE C": "200 result=1 (value-of-C)",
                },
                "handler_received": received,
                "commands_seen_by_client": session.commands,
                "client_session_end": session.error or ("closed by server" if session.closed_by_server else ""),
            },
        )
    finally:
        await child.stop()


def probe_sync_route() -> dict[str, Any]:
    """Side finding: add_route() wraps a plain function with asyncio.coroutine, gone in 3.11."""
    from panoramisk.fast_agi import Application

    loop = asyncio.new_event_loop()
    try:
        app = Application(loop=loop)
        try:
            app.add_route("plain", lambda request: None)
        except Exception as exc:
            return {"add_route_with_plain_function": f"{type(exc).__name__}: {exc}"}
        return {"add_route_with_plain_function": "accepted"}
    finally:
        loop.close()


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


async def run_all(loop_name: str) -> list[Verdict]:
    verdicts = [await probe_query_string(loop_name), await probe_hangup(loop_name)]
    verdicts.append(await probe_freeze(loop_name, half_env=True))
    verdicts.append(await probe_freeze(loop_name, half_env=False))
    return verdicts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the child's event loop")
    p.add_argument("--json", action="store_true")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve_main(args.loop)
        return 0

    async def bounded() -> list[Verdict]:
        return await asyncio.wait_for(run_all(args.loop), OVERALL_DEADLINE_S)

    started = time.monotonic()
    verdicts = asyncio.run(bounded())
    env = {
        "python": platform.python_version(),
        "panoramisk": _version("panoramisk"),
        "uvloop": _version("uvloop"),
        "child_event_loop": args.loop,
        "cpus": os.cpu_count(),
        "run_seconds": round(time.monotonic() - started, 1),
        **probe_sync_route(),
    }
    if args.json:
        print(json.dumps({"environment": env, "claims": [v.__dict__ for v in verdicts]}, indent=2))
    else:
        print(json.dumps(env))
        for v in verdicts:
            print(v.line())
            for key, value in v.evidence.items():
                print(f"      {key}: {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
