"""What the HTTP app and its doors share: the app's keys and the per-request trace."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from billing_core.api.dispatch import Dispatcher
from billing_core.http import metrics
from billing_core.http.connections import HttpLimits
from billing_core.spool import SpoolBacklog

DISPATCHER = web.AppKey("dispatcher", Dispatcher)
SPOOL_BACKLOG = web.AppKey("spool_backlog", SpoolBacklog)
LIMITS = web.AppKey("limits", HttpLimits)


@dataclass(slots=True)
class Trace:
    """What the request log line and the metrics say about one API request."""

    method: str = metrics.UNKNOWN_METHOD
    result: str = "ok"


TRACE = web.RequestKey("trace", Trace)
