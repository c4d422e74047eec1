"""The OpenAPI 3.1 description of the Narayana door, generated from the method registry.

One operation per method (`GET /billing/api/2.2/{key}/{method}`; POST takes the same
arguments as a form), and one per file form (`…/getLogs.csv`). Each operation carries:
- its arguments: the method's Params model as query parameters (pydantic's JSON schema
  of each field: type, bounds, enum, default; required as the model says), plus the
  dispatcher's own `login`, `password` (the md5 hex of the password), `username`;
- `x-access-level` (the spec's level: 0 anonymous, 1 user, 22 reseller, 33 administrator,
  44 master, 50+ call control with a server key) and `x-return-kind`;
- `x-error-codes`: the codes the dispatcher gives this method by its definition (its level,
  its required arguments, `username=`, the store), the codes its own module names, and the
  error envelope whose `response` is any E_* code of the spec (billing_core.errors);
- the answers: the JSON envelope `{result, response, description}` with HTTP 200 (also
  for refusals such as E_AUTH_FAILED, per billing_core.http.answers), 400 for bad queries,
  401 for a bad key, 403 for a refused address, 503 while the store is down; a plain-text
  200 for keys that answer plain; the file itself for file forms.

`GET /openapi.json` serves it; `GET /docs` is a page made from the same dict
(billing_core.http.docs_page), with no script and no asset from elsewhere.
"""

from __future__ import annotations

import inspect
import json
import re
from functools import cache
from typing import Any

from billing_core.api.dispatch import CALL_CONTROL_LEVEL
from billing_core.catalog.registry import MethodDef, Registry
from billing_core.errors import DESCRIPTIONS, ErrorCode
from billing_core.http.form import MAX_VALUE_CHARS

API_VERSION = "2.2"
_JSON = "application/json"
_LEVELS = {0: "anonymous", 1: "user", 11: "user", 22: "reseller", 33: "administrator", 44: "master administrator"}
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
_CODE = re.compile(r"ErrorCode\.(E_[A-Z_]+)")
# What the door takes as text (billing_core.http.form): no C0 control but TAB, LF, CR, no DEL.
TEXT_PATTERN = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]*$"
_TEXT = {"type": "string", "pattern": TEXT_PATTERN, "maxLength": MAX_VALUE_CHARS}


def level_name(level: int) -> str:
    if level >= CALL_CONTROL_LEVEL:
        return "call control (server key)"
    return _LEVELS.get(level, f"level {level}")


def _clean(schema: Any) -> Any:
    """pydantic's field schema as a query parameter's: no titles, no null (absent is
    null), Decimal's number-or-string as a number, pydantic's ge/le as JSON Schema's."""
    if isinstance(schema, list):
        return [_clean(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" or key == "max_digits":
            continue
        out[_BOUNDS.get(str(key), str(key))] = _clean(value)
    options = out.pop("anyOf", None)
    if options is not None:
        options = [o for o in options if o != {"type": "null"}]
        if {json_type(o) for o in options} == {"number", "string"} and len(options) == 2:
            options = [{"type": "number"}]
        if len(options) == 1:
            out = {**options[0], **out}
        else:
            out["anyOf"] = options
    if out.get("type") == "string" and "enum" not in out:
        out.setdefault("pattern", TEXT_PATTERN)  # a field's own pattern is narrower already
        out.setdefault("maxLength", MAX_VALUE_CHARS)
    return out


def json_type(schema: dict[str, Any]) -> str:
    return str(schema.get("type", ""))


def _parameters(method: MethodDef) -> list[dict[str, Any]]:
    schema = method.params.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
    params: list[dict[str, Any]] = [
        {"name": "key", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}},
        {"name": "login", "in": "query", "schema": _TEXT, "description": "the user (as the key's auth_by says)"},
        {"name": "password", "in": "query", "schema": _TEXT, "description": "md5 hex of the password"},
        {"name": "username", "in": "query", "schema": _TEXT, "description": "act for this user"},
    ]
    for name, field in schema.get("properties", {}).items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": _clean(field)}
        if "description" in field:
            param["description"] = field["description"]
        params.append(param)
    return params


def _module_codes(method: MethodDef) -> set[str]:
    module = inspect.getmodule(method.handler)
    try:
        source = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        source = ""
    return set(_CODE.findall(source))


def error_codes(method: MethodDef) -> list[str]:
    codes = {"E_INVALID_ARGUMENT", "E_SQL_ERROR", "E_LUA_EXCEPTION"}
    if method.access_level > 0:
        codes |= {"E_AUTH_FAILED", "E_INSUFFICIENT_ACCESS", "E_USER_LOCKED", "E_NOT_EXIST", "E_DOES_NOT_BELONG_TO_YOU"}
    if method.params.model_json_schema().get("required"):
        codes.add("E_MISSING_ARGUMENT")
    codes |= _module_codes(method) & set(ErrorCode.__members__)
    return sorted(codes)


def _components() -> dict[str, Any]:
    codes = [code.value for code in ErrorCode]
    return {
        "schemas": {
            "ErrorCode": {"type": "string", "enum": codes, "description": "billing_core.errors: the spec's E_* codes"},
            "Error": {
                "type": "object",
                "required": ["result", "response", "description"],
                "properties": {
                    "result": {"const": False},
                    "response": {"$ref": "#/components/schemas/ErrorCode"},
                    "description": {"type": "string"},
                },
            },
        },
        "responses": {
            status: {"description": text, "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for status, text in (
                ("400", "the query is incorrect: version, method, a missing or invalid argument, the body"),
                ("401", "the API key is incorrect or disabled (the source address is then banned)"),
                ("403", "access from this address is refused (banned, or outside the key's masks)"),
                ("503", "the database is unavailable: retry later"),
            )
        },
    }


def _success(method: MethodDef) -> dict[str, Any]:
    response: dict[str, Any] = {}
    if method.returns == "bool":
        response = {"type": "boolean"}
    elif method.returns == "text":
        response = {"type": "string", "description": "the spec's answer line (Allowed …, Declined E_…)"}
    return {
        "type": "object",
        "required": ["result", "response", "description"],
        "properties": {"result": {"type": "boolean"}, "response": response, "description": {"type": "string"}},
    }


def _ok_content(method: MethodDef) -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/Error"}
    if method.returns == "file":
        return {"text/csv": {"schema": {"type": "string"}}, _JSON: {"schema": error}}
    content: dict[str, Any] = {
        _JSON: {"schema": {"anyOf": [_success(method), error]}},
        "text/plain": {"schema": {"type": "string"}, "description": "keys whose auth_by answers plain"},
    }
    if method.returns in ("binary", "depends"):
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    return content


def _operation(method: MethodDef, tag: str) -> dict[str, Any]:
    name = f"{method.name}.{method.form}" if method.form else method.name
    codes = error_codes(method)
    summary = f"{method.name} as a {method.form.upper()} file" if method.form else method.name
    ok: dict[str, Any] = {"description": "the answer (refusals too: see x-error-codes)", "content": _ok_content(method)}
    if method.form:
        ok["headers"] = {
            "Content-Disposition": {"schema": {"type": "string"}, "description": 'attachment; filename="…"'},
        }
    doc = (method.handler.__doc__ or "").strip()
    return {
        "operationId": name,
        "summary": summary,
        "description": (doc + "\n\n" if doc else "")
        + f"Access: {level_name(method.access_level)} ({method.access_level}). "
        + "Errors: "
        + ", ".join(f"{c} ({DESCRIPTIONS.get(ErrorCode[c], c)})" for c in codes),
        "tags": [tag],
        "parameters": _parameters(method),
        "x-access-level": method.access_level,
        "x-return-kind": method.returns,
        "x-error-codes": codes,
        "responses": {
            "200": ok,
            **{status: {"$ref": f"#/components/responses/{status}"} for status in ("400", "401", "403", "503")},
        },
    }


def _tag(method: MethodDef) -> str:
    """The subsystem that defines the method (billing_core.<tag>.…_api)."""
    parts = method.handler.__module__.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "billing_core" else "methods"


def build(registry: Registry) -> dict[str, Any]:
    """The whole description of the registry's methods."""
    paths: dict[str, Any] = {}
    methods = [m for m in (registry.get(n) for n in registry.names()) if m is not None] + registry.file_forms()
    for method in methods:
        name = f"{method.name}.{method.form}" if method.form else method.name
        paths[f"/billing/api/{API_VERSION}/{{key}}/{name}"] = {"get": _operation(method, _tag(method))}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callgate: Narayana Billing API 2.2",
            "version": API_VERSION,
            "description": "GET with the arguments in the query, or POST them as a form or a JSON object of "
            "scalars. Generated from the method registry.",
        },
        "tags": [{"name": tag} for tag in sorted({_tag(m) for m in methods})],
        "paths": paths,
        "components": _components(),
    }


@cache
def spec_text(registry: Registry) -> str:
    """`build` as JSON text, made once per registry (complete once the methods are imported)."""
    return json.dumps(build(registry), ensure_ascii=False, indent=1)
