"""Request arguments: the query string and the body, decoded strictly and bounded.

Narayana arguments are query or form fields (`application/x-www-form-urlencoded` or
`multipart/form-data`); a JSON object of scalars is accepted too. Everything becomes
one flat `dict[str, str]` for the dispatcher, which alone validates and types them.

Strict means: bytes that are not UTF-8 (or the declared charset), NUL and other control
characters, file uploads, nested JSON, more than MAX_FIELDS fields or a value longer than
MAX_VALUE_CHARS are a `BadInput` (400 E_INVALID_ARGUMENT), a body over MAX_BODY_BYTES is
a `BadInput` with status 413. A lenient decoder would turn `%FF` into U+FFFD and let a
mangled value reach a handler. A `%` not followed by two hex digits is not an error: it
is a literal `%` (billing_core/percent.py, the rule FastAGI queries follow too), so the
spec's `addDIDRule?…&pattern=%&…` works as printed.
"""

from __future__ import annotations

import json
import re

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from billing_core.percent import unquote

MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 100
MAX_VALUE_CHARS = 4096
MAX_NAME_CHARS = 128

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"

# C0 controls but TAB, LF, CR, and DEL: never part of a name, number or address, and NUL
# is refused by PostgreSQL text columns (it would surface as a database error).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Content-Transfer-Encodings that leave the bytes as sent (no base64 or gzip in a form field).
_PLAIN_TRANSFER = frozenset({"", "7bit", "8bit", "binary"})


class BadInput(Exception):
    """The request cannot be turned into arguments. `detail` never quotes a value."""

    def __init__(self, detail: str, *, status: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


def _decode(text: str, charset: str = "utf-8") -> str:
    try:
        return unquote(text, plus_is_space=True, charset=charset)
    except UnicodeDecodeError:
        raise BadInput(f"arguments must be {charset} text") from None


def parse_urlencoded(text: str, charset: str = "utf-8") -> list[tuple[str, str]]:
    """`a=1&b=x%20y&c=%` → [("a", "1"), ("b", "x y"), ("c", "%")], refusing bad bytes."""
    pairs: list[tuple[str, str]] = []
    for chunk in text.split("&"):
        if not chunk:
            continue
        name, _, value = chunk.partition("=")
        pairs.append((_decode(name, charset), _decode(value, charset)))
        if len(pairs) > MAX_FIELDS:
            raise BadInput(f"more than {MAX_FIELDS} fields")
    return pairs


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def parse_json_object(body: bytes) -> list[tuple[str, str]]:
    """A JSON object of scalars → pairs; numbers keep their exact text (no float)."""
    try:
        data = json.loads(body.decode("utf-8"), parse_float=str, parse_int=str, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: deeply nested arrays/objects exhaust the C decoder's depth guard.
        raise BadInput("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadInput("a JSON body must be an object of arguments")
    pairs: list[tuple[str, str]] = []
    for name, value in data.items():
        if value is None:
            continue  # null = argument absent
        if isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        elif isinstance(value, str):
            pairs.append((name, value))
        else:
            raise BadInput(f"argument {name[:64]!r} must be a string, number or boolean")
        if len(pairs) > MAX_FIELDS:
            raise BadInput(f"more than {MAX_FIELDS} fields")
    return pairs


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadInput(f"the body exceeds {MAX_BODY_BYTES} bytes", status=413) from None


async def _multipart_fields(request: web.Request) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise BadInput("nested multipart bodies are not accepted")
        if part.filename is not None:
            raise BadInput("file uploads are not accepted")
        if part.name is None:
            raise BadInput("a multipart field has no name")
        transfer = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "").lower()
        if hdrs.CONTENT_ENCODING in part.headers or transfer not in _PLAIN_TRANSFER:
            raise BadInput("encoded multipart fields are not accepted")
        data = bytearray()
        while chunk := await part.read_chunk():
            data.extend(chunk)
            if request.content.total_bytes > MAX_BODY_BYTES:
                raise BadInput(f"the body exceeds {MAX_BODY_BYTES} bytes", status=413)
        charset = part.get_charset(default="utf-8")
        try:
            pairs.append((part.name, bytes(data).decode(charset)))
        except UnicodeDecodeError:
            raise BadInput(f"arguments must be {charset} text") from None
        if len(pairs) > MAX_FIELDS:
            raise BadInput(f"more than {MAX_FIELDS} fields")
    return pairs


async def body_fields(request: web.Request) -> list[tuple[str, str]]:
    """The POST body's fields; GET bodies are ignored (the spec puts GET arguments in the query)."""
    if request.method != hdrs.METH_POST or not request.body_exists:
        return []
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadInput(f"the body exceeds {MAX_BODY_BYTES} bytes", status=413)
    # No Content-Type at all: what curl and most HTTP libraries mean is a form.
    content_type = request.content_type if hdrs.CONTENT_TYPE in request.headers else FORM
    try:
        if content_type == MULTIPART:
            return await _multipart_fields(request)
        body = await _read_body(request)
        if not body.strip():
            return []
        if content_type == FORM:
            charset = request.charset or "utf-8"
            return parse_urlencoded(body.decode(charset).rstrip(), charset)
        if content_type == JSON:
            return parse_json_object(body)
    except (UnicodeDecodeError, LookupError):
        raise BadInput("the body is not text in its declared charset") from None
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        # aiohttp's multipart reader signals malformed bodies (bad boundary, truncated
        # headers) with ValueError/AssertionError/RuntimeError, and a part's malformed or
        # over-long header line with its HTTP parser's errors (InvalidHeader, LineTooLong),
        # which were a 500.
        raise BadInput("malformed multipart body") from exc
    raise BadInput(f"unsupported Content-Type {content_type[:64]!r}")


def check_field(name: str, value: str) -> None:
    if len(name) > MAX_NAME_CHARS:
        raise BadInput(f"an argument name is longer than {MAX_NAME_CHARS} characters")
    if len(value) > MAX_VALUE_CHARS:
        raise BadInput(f"argument {name[:64]!r} is longer than {MAX_VALUE_CHARS} characters")
    if _CONTROL.search(name) or _CONTROL.search(value):
        raise BadInput("arguments must not contain control characters")


async def request_arguments(request: web.Request) -> dict[str, str]:
    """Query and body fields merged: body wins over query, and the last of repeated fields wins."""
    query = parse_urlencoded(request.rel_url.raw_query_string)
    body = await body_fields(request)
    if len(query) + len(body) > MAX_FIELDS:
        raise BadInput(f"more than {MAX_FIELDS} fields")
    raw: dict[str, str] = {}
    for name, value in [*query, *body]:
        check_field(name, value)
        if name:
            raw[name] = value
    return raw
