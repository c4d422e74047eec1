"""How a FastAGI session's answer is decided: the dispatcher's call under its time limit,
its failures and malformed answers turned into Declined, and the answer encoded as commands.

A base class of fastagi.session._Session rather than functions: these are the session's
own methods, moved here (inherited, so called as before) to keep the session module
readable in one sitting. The slots of what they write are declared here (mypy checks writes
against a class's own __slots__); the other attributes are the session's, typed for mypy.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from billing_core.errors import ErrorCode
from fastagi import wire
from fastagi.config import ServerConfig
from fastagi.contract import VAR_ERROR, VAR_RESULT
from fastagi.messages import AGIDispatcher, AGIRequest
from fastagi.session_util import declined, redacted, well_formed


class _Dispatching:
    __slots__ = ("_error", "_overdue", "_sent")  # those it writes; the rest are _Session's

    _config: ServerConfig
    _dispatch: AGIDispatcher
    _loop: asyncio.AbstractEventLoop
    _log: Any
    _task: asyncio.Task[None] | None
    _overdue: bool
    _debug: bool
    _sent: dict[str, str] | None
    _error: str
    context: dict[str, object]

    if TYPE_CHECKING:  # _Session's
        def _answer(self, variables: dict[str, str]) -> None: ...
        def _cancel(self) -> None: ...

    async def _run_dispatch(self, request: AGIRequest) -> None:
        try:
            variables = await self._dispatch_bounded(request)
        except asyncio.CancelledError:
            self._cancel()
            raise
        self._answer(variables)

    async def _dispatch_bounded(self, request: AGIRequest) -> dict[str, str]:
        # A timer handle rather than asyncio.timeout(): the same, for half the CPU.
        timer = self._loop.call_later(self._config.dispatch_timeout_s, self._dispatch_overdue)
        try:
            answer = await self._dispatch(request)
        except asyncio.CancelledError:
            # The time limit's, unless the task was cancelled from outside as well.
            if not self._overdue or self._uncancel() > 0:
                raise
            return self._dispatch_timed_out()
        except TimeoutError:  # the dispatcher's own
            return self._dispatch_timed_out()
        except Exception:
            self._log.exception("agi_dispatch_failed", **self.context)
            return declined(ErrorCode.E_LUA_EXCEPTION)
        finally:
            timer.cancel()
        if not well_formed(answer):
            self._log.error("agi_answer_invalid", answer_type=type(answer).__name__, **self.context)
            return declined(ErrorCode.E_LUA_EXCEPTION)
        return dict(answer.variables)

    def _dispatch_overdue(self) -> None:
        assert self._task is not None
        self._overdue = True
        self._task.cancel()

    def _uncancel(self) -> int:
        assert self._task is not None
        return self._task.uncancel()

    def _dispatch_timed_out(self) -> dict[str, str]:
        # The dispatcher waits on the backend (database, cache): it did not answer in time.
        self._log.error("agi_dispatch_timeout", timeout_s=self._config.dispatch_timeout_s, **self.context)
        return declined(ErrorCode.E_SQL_ERROR)

    def _encode(self, variables: dict[str, str]) -> wire.EncodedAnswer:
        try:
            encoded = wire.encode_answer(variables, max_line_bytes=self._config.max_line_bytes)
        except ValueError as error:
            self._log.error("agi_answer_unencodable", error=str(error), **self.context)
            variables = declined(ErrorCode.E_LUA_EXCEPTION)
            encoded = wire.encode_answer(variables, max_line_bytes=self._config.max_line_bytes)
        if encoded.truncated:
            self._log.warning("agi_answer_truncated", names=list(encoded.truncated), **self.context)
        self._sent = variables
        self.context["result"] = variables.get(VAR_RESULT, "")
        self._error = variables.get(VAR_ERROR, "")
        if self._debug:
            self._log.debug("agi_answer", variables=redacted(variables), **self.context)
        return encoded
