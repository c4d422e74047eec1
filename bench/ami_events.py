"""The AMI client against the fake Asterisk: events/s it keeps up with, and reconnect time.

    python -m bench.ami_events [--events 200000] [--repeats 5] [--channels 0,1000,5000]
                               [--watchdog] [--json FILE]

The fake (tests/fake_ami.py) runs in a child process, so that the client's process spends
its CPU on the client alone. Three measurements, each repeated, medians reported:

1. **events/s**: the child writes a burst of events as fast as its socket takes them (the
   recorded session's 634 events, over and over, each copy with its own uniqueids), then
   one `UserEvent` marker; the client handles every event (the channel registry, plus the
   handlers of the case) and the time runs from asking for the burst to handling the
   marker. Cases: the registry alone; with one sync handler on every event; with one async
   handler on every event (queued and awaited one at a time). Client CPU per event is the
   process's user+sys time over the burst; the child's CPU is shown to say whether the
   sender was the limit.
2. **reconnect**: the child closes the connection (as a restarting Asterisk does) with N
   channels up; the time runs until the client is logged in again and its registry holds
   the N channels (`CoreShowChannels`). Once with the default back-off (the first retry
   after `reconnect_first_s` = 0.5 s, +0–10 % jitter), once with no back-off: the cost of
   connect + login + rebuild alone.
3. **parsing**: the same events fed to the client's protocol in-process, without a socket:
   CPU per event in all, and in panoramisk's part (framing and Message objects) alone.
4. with `--watchdog`: the child stops answering pings (the connection stays open); the time
   until the client has noticed (default ping every 5 s, Pong within 3 s) and reconnected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

from billing_core.asterisk.connection import AmiConnection, AmiTimings, Handlers
from billing_core.asterisk.servers import AmiTarget
from tests.fake_ami import SECRET, USER, FakeAmi, Message, Session, encode, transcript_events

_UID_FIELDS = ("Uniqueid", "Linkedid", "UniqueID", "DestUniqueid", "DestLinkedid")


# --- the child: a fake Asterisk with bench actions -------------------------------------------


def burst_bytes(count: int) -> list[bytes]:
    """`count` recorded events, each copy of the session with its own uniqueids."""
    events = transcript_events()
    out: list[bytes] = []
    copy = 0
    while len(out) < count:
        for event in events:
            if len(out) == count:
                break
            fields = {k: (f"{v}-{copy}" if k in _UID_FIELDS and v else v) for k, v in event.items()}
            out.append(encode(fields))
        copy += 1
    return out


def _run_loop(coro: Any, loop: str) -> Any:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def serve(loop_name: str) -> None:
    async def main() -> None:
        fake = await FakeAmi().start()
        prepared: list[bytes] = []

        def prepare(session: Session, action: Message) -> None:
            prepared[:] = burst_bytes(int(action.get("Count", "0")))
            session.reply(action, "Success", ("Message", f"{len(prepared)} events ready"))

        def burst(session: Session, action: Message) -> None:
            # all of it at once: the transport keeps what the socket has not taken yet, and the
            # client reads as fast as it can handle
            session.reply(action, "Success", ("Message", "burst follows"))
            marker = encode({"Event": "UserEvent", "UserEvent": "BenchDone", "Privilege": "user,all"})
            session.write(b"".join(prepared) + marker)

        def channels(session: Session, action: Message) -> None:
            fake.channels.clear()
            for n in range(int(action.get("Count", "0"))):
                fake.add_channel(f"bench.{n}", f"PJSIP/bench-{n:08x}")
            session.reply(action, "Success", ("Message", f"{len(fake.channels)} channels"))

        def kill(session: Session, action: Message) -> None:
            fake.kill()

        def mute(session: Session, action: Message) -> None:
            session.reply(action, "Success")
            fake.stop_pings()

        def cpu(session: Session, action: Message) -> None:
            times = os.times()
            session.reply(action, "Success", ("CPU", f"{times.user + times.system:.6f}"))

        fake.custom.update({"benchprepare": prepare, "benchburst": burst, "benchchannels": channels,
                            "benchkill": kill, "benchmute": mute, "benchcpu": cpu})  # fmt: skip
        print(fake.port, flush=True)
        await asyncio.Event().wait()

    _run_loop(main(), loop_name)


# --- the parent: the client ---------------------------------------------------------------


class Bench:
    def __init__(self, port: int, timings: AmiTimings) -> None:
        self.handlers = Handlers()
        self.done = asyncio.Event()
        self.handlers.on("UserEvent", lambda server, event: self.done.set())
        target = AmiTarget("bench", "127.0.0.1", port, USER, SECRET, ("bench",))
        self.conn = AmiConnection(target, timings, self.handlers)

    async def child_cpu(self) -> float:
        return float((await self.conn.action("BenchCPU"))["CPU"])

    async def burst(self, count: int) -> dict[str, float]:
        await self.conn.action("BenchPrepare", {"Count": count}, timeout_s=120)
        self.done.clear()
        events_before, child_before = self.conn.events, await self.child_cpu()
        cpu_before, started = time.process_time(), time.perf_counter()
        await self.conn.action("BenchBurst")
        await self.done.wait()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_before
        handled = self.conn.events - events_before - 1  # the marker
        assert handled == count, (handled, count)
        child = await self.child_cpu() - child_before
        return {"events_per_s": count / elapsed, "client_cpu_us_per_event": cpu / count * 1e6,
                "client_busy": cpu / elapsed, "child_busy": child / elapsed}  # fmt: skip

    async def reconnect(self, channels: int) -> float:
        await self.conn.action("BenchChannels", {"Count": channels}, timeout_s=60)
        logins = self.conn.logins
        started = time.perf_counter()
        try:
            await self.conn.action("BenchKill", timeout_s=0.5)
        except Exception:  # the connection dies before any answer: that is the point
            pass
        while not (self.conn.logins > logins and self.conn.registry.synced):  # noqa: ASYNC110 - polls the client
            await asyncio.sleep(0.0005)
        assert len(self.conn.registry) == channels, (len(self.conn.registry), channels)
        return time.perf_counter() - started

    async def watchdog(self) -> float:
        logins = self.conn.logins
        started = time.perf_counter()
        await self.conn.action("BenchMute")
        while self.conn.logins == logins:  # noqa: ASYNC110 - polls the client
            await asyncio.sleep(0.001)
        return time.perf_counter() - started


class _NoTransport:
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


async def parse_cost(count: int) -> dict[str, float]:
    """CPU µs per event through the protocol in-process: with the registry, and without
    anything after panoramisk's parsing."""
    from billing_core.asterisk.wire import AmiProtocol

    data = b"".join(burst_bytes(count))
    chunks = [data[at : at + 65536] for at in range(0, len(data), 65536)]
    out = {}
    for label, keep in (("all_us", True), ("panoramisk_us", False)):
        conn = AmiConnection(AmiTarget("p", "127.0.0.1", 1, USER, SECRET, ()), AmiTimings())
        if not keep:
            conn.dispatch = lambda message: None  # type: ignore[method-assign]
        proto = AmiProtocol(conn)
        proto.connection_made(_NoTransport())  # type: ignore[arg-type]
        proto.banner.set_result("bench")
        started = time.process_time()
        for chunk in chunks:
            proto.data_received(chunk)
        out[label] = (time.process_time() - started) / count * 1e6
    return out


def _case_handlers(bench: Bench, case: str) -> None:
    if case == "sync":
        seen = [0]

        def count(server: str, event: Any) -> None:
            seen[0] += 1

        bench.handlers.on("*", count)
    elif case == "async":

        async def count_async(server: str, event: Any) -> None:
            return None

        bench.handlers.on_async("*", count_async)


async def run(args: argparse.Namespace, port: int) -> dict[str, Any]:
    stable = replace(AmiTimings(), stable_after_s=0.0, action_timeout_s=30.0)  # each kill starts from the first delay
    results: dict[str, Any] = {"events": {}, "reconnect_s": {}, "watchdog_s": [], "parse": []}
    for case in ("registry", "sync", "async"):
        bench = Bench(port, stable)
        _case_handlers(bench, case)
        bench.conn.start()
        assert await bench.conn.wait_up(10)
        runs = [await bench.burst(args.events) for _ in range(args.repeats)]
        await bench.conn.close()
        results["events"][case] = runs
    for label, timings in (("default back-off", stable), ("no back-off", replace(stable, reconnect_first_s=0.0))):
        bench = Bench(port, timings)
        bench.conn.start()
        assert await bench.conn.wait_up(10)
        for channels in args.channels:
            key = f"{label}, {channels} channels"
            results["reconnect_s"][key] = [await bench.reconnect(channels) for _ in range(args.repeats)]
        await bench.conn.close()
    results["parse"] = [await parse_cost(min(args.events, 50_000)) for _ in range(args.repeats)]
    if args.watchdog:
        bench = Bench(port, AmiTimings())
        bench.conn.start()
        assert await bench.conn.wait_up(10)
        await bench.conn.action("BenchChannels", {"Count": 0})
        results["watchdog_s"] = [await bench.watchdog() for _ in range(2)]
        await bench.conn.close()
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"{platform.node()} Python {platform.python_version()}, {args.loop}, loadavg {os.getloadavg()[0]:.2f}; "
          f"{args.events} events per burst, {args.repeats} repeats, medians")  # fmt: skip
    print("| handlers | events/s (each run) | client CPU µs/event | client busy | child busy |")
    print("|---|---|---:|---:|---:|")
    for case, runs in results["events"].items():
        rates = ", ".join(f"{r['events_per_s']:,.0f}" for r in runs)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {case} | {med['events_per_s']:,.0f} ({rates}) | {med['client_cpu_us_per_event']:.1f} | "
              f"{med['client_busy']:.0%} | {med['child_busy']:.0%} |")  # fmt: skip
    print("| reconnect | median ms | each run ms |")
    print("|---|---:|---|")
    for key, runs in results["reconnect_s"].items():
        each = ", ".join(f"{r * 1000:.1f}" for r in runs)
        print(f"| {key} | {statistics.median(runs) * 1000:.1f} | {each} |")
    parse = {k: statistics.median(r[k] for r in results["parse"]) for k in results["parse"][0]}
    print(f"in-process, no socket: {parse['all_us']:.1f} µs/event, of which panoramisk's parsing "
          f"{parse['panoramisk_us']:.1f}")  # fmt: skip
    if results["watchdog_s"]:
        print("watchdog (pings unanswered -> reconnected), s: " + ", ".join(f"{s:.2f}" for s in results["watchdog_s"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1000, 5000])
    parser.add_argument("--watchdog", action="store_true", help="also time the ping watchdog (about 20 s)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="as `callgate serve` runs")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.serve:
        serve(args.loop)
        return 0
    command = [sys.executable, "-m", "bench.ami_events", "--serve", "--loop", args.loop]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        results = _run_loop(run(args, port), args.loop)
    finally:
        child.terminate()
        child.wait(10)
    report(results, args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "results": results, "loadavg": os.getloadavg()}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
