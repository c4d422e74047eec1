"""Stateless helpers of the FastAGI session (fastagi.session), kept apart so the session stays readable."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Mapping
from itertools import repeat
from typing import Any, Final

from billing_core.errors import ErrorCode
from fastagi.contract import RESULT_DECLINED, VAR_ANSWER, VAR_ERROR, VAR_RESULT
from fastagi.messages import AGIAnswer

_SECRET_MARKERS: Final = ("PASSWORD", "PIN", "AUTH")


def declined(code: ErrorCode) -> dict[str, str]:
    """The answer for a session we cannot serve: the dialplan sees Declined and why."""
    return {VAR_RESULT: RESULT_DECLINED, VAR_ERROR: code.value, VAR_ANSWER: f"{RESULT_DECLINED} {code.value}"}


def redacted(values: Mapping[str, str]) -> dict[str, str]:
    """Values safe to log: those of *PASSWORD*, *PIN* and *AUTH* keys are masked."""
    return {key: "***" if any(m in key.upper() for m in _SECRET_MARKERS) else value for key, value in values.items()}


def peer_ip_of(connection: asyncio.BaseTransport | asyncio.StreamWriter) -> str:
    """The peer's address (of a transport or a StreamWriter); an IPv4-mapped IPv6 address is
    given as plain IPv4 for allow-lists."""
    peer = connection.get_extra_info("peername")
    if not isinstance(peer, tuple) or not peer:
        return ""
    host = str(peer[0])
    if ":" not in host:  # IPv4 (or a name): nothing to unmap, no need to parse it
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return host


def well_formed(answer: object) -> bool:
    """An AGIAnswer of str -> str with CALLGATE_RESULT: anything else fails closed (Declined)."""
    if not isinstance(answer, AGIAnswer) or not isinstance(answer.variables, dict):
        return False
    # typed, but not checked at run time
    names: Iterable[object] = answer.variables.keys()
    values: Iterable[object] = answer.variables.values()
    return (VAR_RESULT in answer.variables and all(map(isinstance, names, repeat(str)))
            and all(map(isinstance, values, repeat(str))))


def env_end(buffer: bytes) -> tuple[int, int]:
    """Where the env block's lines end and where what follows starts: at the first empty line
    ("\n" or "\r\n"); (-1, -1) when it has not come yet. `buffer` starts at a line."""
    if buffer.startswith(b"\n"):
        return 0, 1
    if buffer.startswith(b"\r\n"):
        return 0, 2
    lf = buffer.find(b"\n\n")
    crlf = buffer.find(b"\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, crlf + 3
    if lf >= 0:
        return lf, lf + 2
    return -1, -1


def enabled(logger: Any, level: int) -> bool:
    """Whether the logger emits `level`; true when it cannot tell (then it filters itself)."""
    is_enabled_for = getattr(logger, "is_enabled_for", None)
    return is_enabled_for is None or bool(is_enabled_for(level))


def has_hangup_line(buffer: bytes) -> bool:
    """Whether bytes held while no reply is awaited hold Asterisk's out-of-band HANGUP line."""
    if b"HANGUP" not in buffer:
        return False
    return any(line.removesuffix(b"\r") == b"HANGUP" for line in buffer.split(b"\n")[:-1])
