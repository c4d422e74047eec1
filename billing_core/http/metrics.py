"""Prometheus metrics of the HTTP shim, and GET /metrics for the whole process.

Label values are bounded: `method` is a registered method name or "-" (unknown names
come from callers and would grow the series without limit), `result` is "ok",
"declined" or an E_* code. Nothing else about a request is recorded. The FastAGI server's
metrics (fastagi.metrics) are in the same exposition.

With several workers (`CALLGATE_WORKERS`), a scrape reaches whichever worker the kernel
picks, so each worker's own counters would be a different part of the truth every time.
`callgate serve` then runs prometheus-client in its multiprocess mode: every worker writes
its values to files in PROMETHEUS_MULTIPROC_DIR and a scrape adds up all workers' files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own setting

UNKNOWN_METHOD = "-"

REQUESTS = Counter(
    "callgate_http_requests",
    "Billing API requests answered over HTTP, by method and result",
    ["method", "result"],
)
DURATION = Histogram(
    "callgate_http_request_duration_seconds",
    "Time to answer a billing API request over HTTP, by method",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


# The labelled children by label values, as in fastagi.metrics: `.labels()` checks and locks
# on every call (observe() took 3.5 µs with it, 1.2 µs with this lookup). Both label sets
# are closed (see above), so this dict is bounded.
_children: dict[tuple[str, str], tuple[Any, Any]] = {}


def observe(method: str, result: str, duration_s: float) -> None:
    children = _children.get((method, result))
    if children is None:
        children = _children[(method, result)] = (
            REQUESTS.labels(method=method, result=result),
            DURATION.labels(method=method),
        )
    children[0].inc()
    children[1].observe(duration_s)


def exposition(live: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The text exposition of every metric and its content type: this process's, or with
    several workers every worker's, added up. `live` collectors read shared state at scrape
    time (the spool's directory), so they are the same from any worker and are not added up."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    scraped = CollectorRegistry()
    for collector in live:
        scraped.register(collector)
    return body + generate_latest(scraped), CONTENT_TYPE_LATEST
