"""BILLmanager answers: one `Doc`, written in the `out=` format asked for.

- xml: `<doc lang func>`; a list's rows as `<elem>` with a child per field, an object's
  fields as children of `<doc>`, `<ok/>` for a change, `<auth id>sid</auth>` for a login,
  `<error type code object lang><msg>…</msg></error>` for a failure.
- devel: the xml document plus `<metadata>` naming a form's fields (name, required, default).
- json: that document as JSON, the way BILLmanager maps XML: {"doc": {"$lang": …,
  "elem": [{"id": {"$": "1"}}]}} (attributes "$name", text "$"; `elem` always a list).
- JSONdata: the data only, with JSON types: {"elem": [...]}, an object's fields,
  {"ok": true}, {"auth": sid}, {"error": {"type", "code", "object", "msg"}}.
- text: one line per row (or field) of `name=value` pairs; `OK`; `auth=<sid>`;
  `ERROR type(object): message`.
- no out, or print: a small HTML page (a table for a list).
Every answer is HTTP 200 (errors too, as BILLmanager answers them), but a body over the
size limit (413) or too slow (408).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal
from xml.etree import ElementTree as ET

from aiohttp import web

from billing_core.http.answers import dumps

OUT_FORMATS = frozenset({"xml", "devel", "json", "JSONdata", "text", "print", ""})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")

DocKind = Literal["list", "object", "ok", "auth", "error", "form"]


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    required: bool
    default: Any = None


@dataclass(slots=True)
class Doc:
    func: str
    lang: str
    kind: DocKind
    rows: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    error_type: str = ""
    error_code: str = ""
    error_object: str = ""
    message: str = ""
    session: str = ""
    form: list[FormField] = field(default_factory=list)


def scalar_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, dict | list):
        return dumps(value)
    return str(value)


def _child(parent: ET.Element, name: str, value: Any) -> None:
    """A field as an element (or `<field name>` when the name is no XML name); a dict
    nests, a list repeats the element."""
    if isinstance(value, list):
        for item in value:
            _child(parent, name, item)
        return
    node = ET.SubElement(parent, name) if _NAME.match(name) else ET.SubElement(parent, "field", name=name)
    if isinstance(value, dict):
        for key, item in value.items():
            _child(node, str(key), item)
    else:
        node.text = scalar_text(value)


def _tree(doc: Doc, devel: bool) -> ET.Element:
    root = ET.Element("doc", lang=doc.lang, func=doc.func)
    if doc.kind == "list":
        for row in doc.rows:
            elem = ET.SubElement(root, "elem")
            for key, value in row.items():
                _child(elem, key, value)
    elif doc.kind in ("object", "form"):
        for key, value in doc.fields.items():
            _child(root, key, value)
    elif doc.kind == "ok":
        ET.SubElement(root, "ok")
    elif doc.kind == "auth":
        ET.SubElement(root, "auth", id=doc.session).text = doc.session
    else:
        attrs = {"type": doc.error_type, "code": doc.error_code, "lang": doc.lang}
        if doc.error_object:
            attrs["object"] = doc.error_object
        ET.SubElement(ET.SubElement(root, "error", attrs), "msg").text = doc.message
    if devel and doc.form:
        meta = ET.SubElement(root, "metadata", name=doc.func, type="form")
        form = ET.SubElement(meta, "form")
        for item in doc.form:
            attrs = {"name": item.name, "required": "yes" if item.required else "no"}
            if item.default is not None:
                attrs["default"] = scalar_text(item.default)
            ET.SubElement(form, "field", attrs)
    return root


def xml_text(doc: Doc, *, devel: bool = False) -> str:
    body = ET.tostring(_tree(doc, devel), encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body


def _element_json(node: ET.Element) -> dict[str, Any]:
    out: dict[str, Any] = {f"${k}": v for k, v in node.attrib.items()}
    if node.text:
        out["$"] = node.text
    for child in node:
        value = _element_json(child)
        if child.tag in out or child.tag == "elem":
            previous = out.setdefault(child.tag, [])
            if not isinstance(previous, list):
                out[child.tag] = [previous]
            out[child.tag].append(value)
        else:
            out[child.tag] = value
    return out


def json_text(doc: Doc) -> str:
    root = _tree(doc, devel=False)
    return dumps({"doc": _element_json(root)})


def jsondata(doc: Doc) -> Any:
    if doc.kind == "list":
        return {"elem": doc.rows}
    if doc.kind in ("object", "form"):
        return doc.fields
    if doc.kind == "ok":
        return {"ok": True}
    if doc.kind == "auth":
        return {"auth": doc.session}
    error = {"type": doc.error_type, "code": doc.error_code, "object": doc.error_object, "msg": doc.message}
    return {"error": error}


def _pairs(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={scalar_text(value)}".replace("\n", " ") for key, value in values.items())


def text(doc: Doc) -> str:
    if doc.kind == "list":
        return "".join(_pairs(row) + "\n" for row in doc.rows)
    if doc.kind in ("object", "form"):
        return "".join(_pairs({key: value}) + "\n" for key, value in doc.fields.items())
    if doc.kind == "ok":
        return "OK\n"
    if doc.kind == "auth":
        return f"auth={doc.session}\n"
    return f"ERROR {doc.error_type}({doc.error_object}): {doc.message}\n"


def _cells(values: list[Any], tag: str) -> str:
    return "".join(f"<{tag}>{html.escape(scalar_text(v))}</{tag}>" for v in values)


def html_page(doc: Doc) -> str:
    title = html.escape(doc.func or "billmgr")
    if doc.kind == "list":
        names = list(dict.fromkeys(key for row in doc.rows for key in row))
        rows = "".join(f"<tr>{_cells([row.get(n) for n in names], 'td')}</tr>" for row in doc.rows)
        body = f"<table><tr>{_cells(names, 'th')}</tr>{rows}</table>"
    elif doc.kind in ("object", "form"):
        items = "".join(
            f"<dt>{html.escape(k)}</dt><dd>{html.escape(scalar_text(v))}</dd>" for k, v in doc.fields.items()
        )
        body = f"<dl>{items}</dl>"
    elif doc.kind == "ok":
        body = "<p class='ok'>OK</p>"
    elif doc.kind == "auth":
        body = f"<p class='auth'>{html.escape(doc.session)}</p>"
    else:
        body = f"<p class='error {html.escape(doc.error_type)}'>{html.escape(doc.message)}</p>"
    lang = html.escape(doc.lang)
    head = f"<head><meta charset='utf-8'><title>{title}</title></head>"
    return f"<!DOCTYPE html>\n<html lang='{lang}'>{head}<body>{body}</body></html>\n"


def render(doc: Doc, out: str, status: int = 200) -> web.Response:
    if out in ("xml", "devel"):
        body, content_type = xml_text(doc, devel=out == "devel"), "text/xml"
    elif out == "json":
        body, content_type = json_text(doc), "application/json"
    elif out == "JSONdata":
        body, content_type = dumps(jsondata(doc)), "application/json"
    elif out == "text":
        body, content_type = text(doc), "text/plain"
    else:
        body, content_type = html_page(doc), "text/html"
    return web.Response(status=status, text=body, content_type=content_type, charset="utf-8")
