"""File answers over HTTP: a method's file form (`…/{key}/getLogs.csv`) or a binary method.

The body is the file itself, never base64 in JSON: `FileAnswer.chunks` is sent as it is
produced (chunked transfer encoding, so memory stays one chunk whatever the file's size),
with `Content-Type` and `Content-Disposition: attachment; filename="…"`. The headers go out
with the first chunk; a failure after that can only cut the body short (the connection
closes without the last chunk, which HTTP clients report as an incomplete body), so the
handler does its checks and its first read before it answers. Errors before the file
(bad arguments, access, an unknown form) are the door's usual JSON envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from billing_core.catalog.registry import FileAnswer

log = structlog.get_logger(__name__)


def disposition(filename: str) -> str:
    """`attachment; filename="…"`: the name reduced to printable ASCII without quotes."""
    safe = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename) or "file"
    return f'attachment; filename="{safe}"'


async def _logged(answer: FileAnswer) -> AsyncIterator[bytes]:
    sent = 0
    try:
        async for chunk in answer.chunks:
            sent += len(chunk)
            yield chunk
    except Exception as exc:  # the headers are gone: the client sees a cut body
        log.error("http.file_cut", file=answer.filename, bytes=sent, error=type(exc).__name__)
        raise
    log.info("http.file_sent", file=answer.filename, bytes=sent)


def file_response(answer: FileAnswer) -> web.Response:
    """The streamed HTTP answer of a file (aiohttp sends an async iterable body chunked)."""
    response = web.Response(status=200, body=_logged(answer))
    response.headers["Content-Type"] = answer.content_type
    response.headers["Content-Disposition"] = disposition(answer.filename)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
