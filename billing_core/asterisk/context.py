"""The asterisk subsystem's part of the process context: the AMI service (one connection
per server, the live channel registries)."""

from __future__ import annotations

from typing import Protocol

from billing_core.asterisk.service import AmiService
from billing_core.directory.context import DirectoryContext


class AsteriskContext(DirectoryContext, Protocol):
    ami: AmiService
