"""The HTTP shim: Narayana Billing API 2.2 over aiohttp (see billing_core.http.app)."""

from billing_core.http.app import API_VERSION, bound_port, build_app, start_http

__all__ = ["API_VERSION", "bound_port", "build_app", "start_http"]
