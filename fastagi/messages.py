"""What the FastAGI wire layer hands to the dispatcher, and what it gets back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AGIRequest:
    """One decoded FastAGI session start.

    script: agi_network_script before '?'; args: the query string merged with
    `key=value` agi_arg_N arguments (agi_arg_N wins); env: the whole env block.
    """

    script: str
    args: dict[str, str]
    env: dict[str, str]
    peer_ip: str

    @property
    def uniqueid(self) -> str:
        return self.env.get("agi_uniqueid", "")


@dataclass(slots=True)
class AGIAnswer:
    """Channel variables to set, in order. Must contain CALLGATE_RESULT."""

    variables: dict[str, str] = field(default_factory=dict)


AGIDispatcher = Callable[[AGIRequest], Awaitable[AGIAnswer]]
