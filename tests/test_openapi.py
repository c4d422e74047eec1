"""GET /openapi.json and GET /docs over the real registry; schemathesis against the served
description (bounded: EXAMPLES per operation and a time budget for the whole run): no 5xx,
no traceback, every answer's status, content type and body as the description says."""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import billing_core.api.methods  # noqa: F401 - registers every method
from billing_core.catalog.registry import REGISTRY
from billing_core.container import Services
from billing_core.http import openapi
from tests.factories import make_key
from tests.http_support import HOST, Api, serve, with_settings

# per operation, and the time after which the run stops taking new operations (per backend);
# CALLGATE_FUZZ_EXAMPLES / CALLGATE_FUZZ_BUDGET_S raise them for a longer hunt by hand
EXAMPLES = int(os.environ.get("CALLGATE_FUZZ_EXAMPLES", "6"))
BUDGET_S = float(os.environ.get("CALLGATE_FUZZ_BUDGET_S", "25"))


@pytest.fixture
async def api(services: Services) -> Any:
    async with serve(services, test_methods=False) as running:
        yield running


async def _spec(api: Api) -> dict[str, Any]:
    reply = await api.request("GET", f"http://{HOST}:{api.port}/openapi.json")
    assert reply.status == 200 and reply.content_type == "application/json"
    spec: dict[str, Any] = reply.json()
    return spec


def _operation(spec: dict[str, Any], name: str) -> dict[str, Any]:
    op: dict[str, Any] = spec["paths"][f"/billing/api/2.2/{{key}}/{name}"]["get"]
    return op


def _param(op: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in op["parameters"] if p["name"] == name)


async def test_the_description_has_one_operation_per_method_with_its_level_and_arguments(api: Api) -> None:
    spec = await _spec(api)

    assert spec["openapi"] == "3.1.0"
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert sorted(ids) == sorted([*REGISTRY.names(), "getLogs.csv"]) and len(ids) == len(set(ids))
    for name in REGISTRY.names():
        method = REGISTRY.get(name)
        assert method is not None
        op = _operation(spec, name)
        assert (op["x-access-level"], op["x-return-kind"]) == (method.access_level, method.returns), name
        required = {p["name"] for p in op["parameters"] if p.get("required") and p["in"] == "query"}
        assert required == {n for n, f in method.params.model_fields.items() if f.is_required()}, name
    logs = _operation(spec, "getLogs")
    assert _param(logs, "limit")["schema"] == {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}
    assert _param(logs, "only_completed")["schema"] == {"type": "boolean", "default": False}
    routes = _operation(spec, "getRoutes")
    assert _param(routes, "type")["schema"]["enum"] == ["all", "sip", "sms", "default"]
    assert {"E_AUTH_FAILED", "E_INVALID_ARGUMENT"} <= set(logs["x-error-codes"])
    assert "E_MISSING_ARGUMENT" not in logs["x-error-codes"]  # getLogs has no required argument
    assert "E_MISSING_ARGUMENT" in _operation(spec, "addRoute")["x-error-codes"]
    assert "E_AUTH_FAILED" not in _operation(spec, "getCurrencies")["x-error-codes"]  # level 0
    export = _operation(spec, "getLogs.csv")
    assert "text/csv" in export["responses"]["200"]["content"]
    assert "Content-Disposition" in export["responses"]["200"]["headers"]
    assert "limit" in {p["name"] for p in export["parameters"]} and _param(export, "limit")["schema"]["minimum"] == 1
    codes = spec["components"]["schemas"]["ErrorCode"]["enum"]
    assert "E_DOES_NOT_BELONG_TO_YOU" in codes and "E_SQL_ERROR" in codes


async def test_the_docs_page_lists_every_method_and_fetches_nothing_from_elsewhere(api: Api) -> None:
    reply = await api.request("GET", f"http://{HOST}:{api.port}/docs")

    assert reply.status == 200 and reply.content_type == "text/html"
    page = reply.text
    for name in [*REGISTRY.names(), "getLogs.csv"]:
        assert f'<h3 id="{name}">{name}</h3>' in page, name
    assert "<script" not in page.lower() and "@import" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
    assert 'href="/openapi.json"' in page
    assert "call control (server key) (50)" in page  # callPrepare's access level, spelt out


def test_an_argument_schema_becomes_a_query_parameters_schema() -> None:
    decimal_or_null = {
        "anyOf": [{"anyOf": [{"type": "number"}, {"type": "string"}], "max_digits": 24}, {"type": "null"}]
    }
    bounded_optional = {"anyOf": [{"type": "integer"}, {"type": "null"}], "ge": 0, "le": 86400, "title": "T"}

    assert openapi._clean(decimal_or_null) == {"type": "number"}
    assert openapi._clean(bounded_optional) == {"type": "integer", "minimum": 0, "maximum": 86400}


def _fuzz(base_url: str, spec: dict[str, Any], keys: dict[str, str], deadline: float) -> list[str]:
    """schemathesis over every operation; returns the operations it ran. Synchronous
    (requests), so it runs in a thread while the server answers on the test's loop."""
    schema = schemathesis.openapi.from_dict(spec)
    checks = [
        schemathesis.checks.not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    ran: list[str] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        if time.monotonic() > deadline:
            break
        level = int(operation.definition.raw["x-access-level"])
        key = keys["call"] if level >= 50 else keys["admin"]
        strategy = operation.as_strategy(path_parameters={"key": key}, query={"login": "admin"})

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            # act as admin itself: a random `username=` or password would end most cases at E_NOT_EXIST
            case.query = {k: v for k, v in (case.query or {}).items() if k not in ("username", "password")}
            case.query["login"] = "admin"
            response = case.call(base_url=base_url, session=session, timeout=10)
            assert "Traceback" not in response.text
            case.validate_response(response, checks=checks)

        run()
        ran.append(operation.label)
    return ran


async def test_schemathesis_finds_no_server_error_and_no_answer_off_the_description(services: Services) -> None:
    keys = {
        "admin": await make_key(services, level=44, name="fuzz-admin"),  # acts for login=admin
        "call": await make_key(services, level=95, name="fuzz-call"),
    }
    # banIP may be handed the client's own address: keep the run from locking itself out
    async with serve(with_settings(services, ban_whitelist=(HOST,)), test_methods=False) as api:
        spec = await _spec(api)
        base_url = f"http://{HOST}:{api.port}"
        started = time.monotonic()

        ran = await asyncio.to_thread(_fuzz, base_url, spec, keys, started + BUDGET_S)

    assert len(ran) >= len(spec["paths"]) // 2, f"only {len(ran)} operations within {BUDGET_S} s"
