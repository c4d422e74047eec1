"""`GET /docs`: the OpenAPI description as one HTML page, made here from the same dict
(billing_core.http.openapi): no script, no stylesheet or font from elsewhere, nothing to
fetch but the page. One section per subsystem, one entry per operation: its access level,
its arguments (type, required, default, enum, bounds), its return kind and error codes."""

from __future__ import annotations

import json
from functools import cache
from html import escape
from typing import Any

from billing_core.catalog.registry import Registry
from billing_core.http import openapi

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2em} h3{margin-bottom:.2em;font-family:monospace}
table{border-collapse:collapse;margin:.4em 0 1em} td,th{border:1px solid #ddd;padding:.2em .5em;
text-align:left;vertical-align:top;font-size:.92em} code{background:#f4f4f4;padding:0 .2em}
.meta{color:#555;font-size:.9em} nav a{margin-right:.8em}
"""


def _type(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    text = str(schema.get("type", "any"))
    if "enum" in schema:
        text += " one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    bounds = [f"{k} {schema[k]}" for k in ("minimum", "maximum", "minLength", "maxLength") if k in schema]
    if "pattern" in schema:
        bounds.append(f"pattern {schema['pattern']}")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _arguments(params: list[dict[str, Any]]) -> str:
    rows = []
    for p in params:
        if p["in"] != "query":
            continue
        schema = p["schema"]
        default = json.dumps(schema["default"]) if "default" in schema else ""
        rows.append(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(_type(schema))}</td>"
            f"<td>{'yes' if p.get('required') else ''}</td><td>{escape(default)}</td>"
            f"<td>{escape(p.get('description', ''))}</td></tr>"
        )
    head = "<tr><th>argument</th><th>type</th><th>required</th><th>default</th><th></th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def render(spec: dict[str, Any]) -> str:
    by_tag: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path, item in spec["paths"].items():
        op = item["get"]
        by_tag.setdefault(op["tags"][0], []).append((path, op))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(spec['info']['title'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(spec['info']['title'])}</h1><p>{escape(spec['info']['description'])} "
        'The machine-readable form: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>',
        "<nav>" + "".join(f'<a href="#{escape(t)}">{escape(t)}</a>' for t in sorted(by_tag)) + "</nav>",
    ]
    for tag in sorted(by_tag):
        parts.append(f'<h2 id="{escape(tag)}">{escape(tag)}</h2>')
        for path, op in by_tag[tag]:
            name = escape(op["operationId"])
            level = op["x-access-level"]
            parts.append(
                f'<h3 id="{name}">{name}</h3><p class=meta><code>GET|POST {escape(path)}</code> · access '
                f"{escape(openapi.level_name(level))} ({level}) · returns {escape(op['x-return-kind'])}</p>"
            )
            parts.append(_arguments(op["parameters"]))
            codes = ", ".join(f"<code>{escape(c)}</code>" for c in op["x-error-codes"])
            parts.append(f"<p class=meta>errors: {codes}</p>")
    parts.append("</body></html>")
    return "".join(parts)


@cache
def page(registry: Registry) -> str:
    return render(openapi.build(registry))
