"""A minimal FastAGI client that plays Asterisk: `callgate agi callPrepare 'login=…'`.

It lets an operator try callgate before pointing a dialplan at it: it sends the env
block a channel would send, answers every command like Asterisk does (one reply per
command), and returns the channel variables callgate set, decoded as Asterisk stores them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from fastagi.asterisk_parse import agi_shell_split, mset_decode

ENV_ORDER = (
    "agi_network", "agi_network_script", "agi_request", "agi_channel", "agi_language", "agi_type",
    "agi_uniqueid", "agi_version", "agi_callerid", "agi_calleridname", "agi_callingpres",
    "agi_callingani2", "agi_callington", "agi_callingtns", "agi_dnid", "agi_rdnis", "agi_context",
    "agi_extension", "agi_priority", "agi_enhanced", "agi_accountcode", "agi_threadid",
)  # fmt: skip


@dataclass
class ProbeResult:
    variables: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


def env_block(host: str, port: int, script_and_query: str, *, uniqueid: str, channel: str) -> bytes:
    values = {
        "agi_network": "yes",
        "agi_network_script": script_and_query,
        "agi_request": f"agi://{host}:{port}/{script_and_query}",
        "agi_channel": channel,
        "agi_language": "en",
        "agi_type": channel.split("/", 1)[0],
        "agi_uniqueid": uniqueid,
        "agi_version": "22.0.0",
        "agi_callerid": "unknown",
        "agi_calleridname": "unknown",
        "agi_callingpres": "67",
        "agi_callingani2": "0",
        "agi_callington": "0",
        "agi_callingtns": "0",
        "agi_dnid": "unknown",
        "agi_rdnis": "unknown",
        "agi_context": "callgate-probe",
        "agi_extension": "s",
        "agi_priority": "1",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "1",
    }
    return "".join(f"{name}: {values[name]}\n" for name in ENV_ORDER).encode() + b"\n"


def _apply(command: str, variables: dict[str, str]) -> str:
    words = agi_shell_split(command)
    upper = [w.upper() for w in words[:2]]
    if upper[:1] == ["EXEC"] and len(words) >= 2 and words[1].lower() == "mset":
        variables.update(mset_decode(words[2] if len(words) > 2 else ""))
        return "200 result=0"
    if upper == ["SET", "VARIABLE"] and len(words) >= 4:
        variables[words[2]] = words[3]
        return "200 result=1"
    return "510 Invalid or unknown command"


async def probe(
    host: str,
    port: int,
    script_and_query: str,
    *,
    uniqueid: str | None = None,
    channel: str = "PJSIP/probe-00000001",
    timeout_s: float = 10.0,
) -> ProbeResult:
    result = ProbeResult()
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            uid = uniqueid or f"{time.time():.6f}"
            writer.write(env_block(host, port, script_and_query, uniqueid=uid, channel=channel))
            await writer.drain()
            while line := await reader.readline():
                command = line.decode("utf-8", "replace").rstrip("\n")
                result.commands.append(command)
                writer.write((_apply(command, result.variables) + "\n").encode())
                await writer.drain()
        finally:
            writer.close()
    return result
