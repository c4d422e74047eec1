"""Percent-decoding of a query or form field: one rule for both doors (HTTP and FastAGI).

`%` followed by two hex digits is the byte they name; any other `%` is itself, as
browsers (URLSearchParams) and PHP's urldecode take it. So the spec's own examples work
as printed: `addDIDRule?…&pattern=%&…` is the match-all pattern `%`, `100%` is `100%`,
`%zz` is `%zz`, and `%%41` is `%A`. (This is what `urllib.parse.unquote_to_bytes` does.)

The doors differ only where their callers do: over HTTP `+` is a space (the form
encoding) and bytes that are not text in the declared charset are refused; over FastAGI a
`+` is a `+` (the dialplan writes raw values such as `callerid=+7495…`) and bytes that are
not UTF-8 become U+FFFD, as everywhere else in an AGI env block.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote_to_bytes


def unquote(
    text: str, *, plus_is_space: bool, charset: str = "utf-8", errors: Literal["strict", "replace"] = "strict"
) -> str:
    """One field's text, decoded. UnicodeDecodeError (errors="strict") when the escapes
    spell bytes that are not `charset` text."""
    if plus_is_space:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode(charset, errors)
