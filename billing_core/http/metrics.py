"""Prometheus metrics of the HTTP shim, exposed on GET /metrics.

Label values are bounded: `method` is a registered method name or "-" (unknown names
come from callers and would grow the series without limit), `result` is "ok",
"declined" or an E_* code. Nothing else about a request is recorded.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

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


def observe(method: str, result: str, duration_s: float) -> None:
    REQUESTS.labels(method=method, result=result).inc()
    DURATION.labels(method=method).observe(duration_s)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric of this process and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
