"""The FastAGI server's time and size limits."""

from __future__ import annotations

from dataclasses import dataclass

from fastagi import wire


@dataclass(frozen=True, slots=True)
class ServerConfig:
    env_timeout_s: float = 5.0
    reply_timeout_s: float = 5.0
    dispatch_timeout_s: float = 3.0
    max_env_bytes: int = 65536
    max_line_bytes: int = wire.MAX_LINE_BYTES
