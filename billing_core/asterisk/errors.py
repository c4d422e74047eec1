"""What a method that needs an Asterisk gets when that Asterisk cannot do it.

All three are E_ASTERISK_QUERY_ERROR ("Asterisk query execution error", the spec's code
for an Asterisk that did not execute a query): the server is not connected (down, never
reached, refusing the login, no AMI configured), it did not answer in time, or it answered
`Response: Error`. The detail names the server and why, never a secret. Only the methods
that need that server fail; nothing else waits for it.
"""

from __future__ import annotations

from typing import Any

from billing_core.errors import ApiError, ErrorCode


class AsteriskUnavailable(ApiError):
    """No working AMI connection to the server right now."""

    def __init__(self, server: str, reason: str) -> None:
        self.server = server
        self.reason = reason
        super().__init__(ErrorCode.E_ASTERISK_QUERY_ERROR, f"asterisk server {server!r} is not connected: {reason}")


class AsteriskTimeout(ApiError):
    """The action was sent; no complete answer came within its time-out."""

    def __init__(self, server: str, action: str, timeout_s: float) -> None:
        self.server = server
        self.action = action
        detail = f"asterisk server {server!r} did not answer {action} within {timeout_s:g} s"
        super().__init__(ErrorCode.E_ASTERISK_QUERY_ERROR, detail)


class AsteriskRefused(ApiError):
    """Asterisk answered the action with `Response: Error` (its Message is kept)."""

    def __init__(self, server: str, action: str, message: str, response: Any = None) -> None:
        self.server = server
        self.action = action
        self.message = message
        self.response = response
        super().__init__(ErrorCode.E_ASTERISK_QUERY_ERROR, f"asterisk server {server!r} refused {action}: {message}")


class NotAnAmiServer(ConnectionError):
    """The peer's first line was not `Asterisk Call Manager/…`."""
