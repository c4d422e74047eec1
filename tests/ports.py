"""Ports for servers a test starts in another process."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Final

HOST: Final = "127.0.0.1"


def free_port() -> int:
    """A port nobody listens on now (the kernel's pick), for a child process to bind."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def two_workers_env(
    database_url: str, redis_url: str, tmp_path: Path, agi_port: int, http_port: int, *, log_level: str
) -> dict[str, str]:
    """The environment of a `callgate serve` with two workers on the server backend: its own
    ports, secret, spool and metrics directory (tmp_path/metrics, which the caller makes)."""
    return os.environ | {
        "CALLGATE_DATABASE_URL": database_url,
        "CALLGATE_REDIS_URL": redis_url,
        "CALLGATE_WORKERS": "2",
        "CALLGATE_AGI_LISTEN": f"{HOST}:{agi_port}",
        "CALLGATE_HTTP_LISTEN": f"{HOST}:{http_port}",
        "CALLGATE_LOG_LEVEL": log_level,
        "CALLGATE_SECRET_FILE": str(tmp_path / "secret"),
        "CALLGATE_SPOOL_DIR": str(tmp_path / "spool"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
