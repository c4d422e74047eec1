"""Every method in REGISTRY against the spec (narayana-2.2.json): name, access level,
return kind, argument names, required-ness, defaults and enums.

One test per (method, check), so a failure names the method, the argument and the spec
line. Rules:
- `updateUser` is documented twice: the arguments of both entries count (union); an
  argument is required only if every entry that lists it says so.
- An argument the spec marks as a probable typo (`suspected_name`: getTextBalance
  `balance`→currency, deliveryReport `string`→id, updateKey `default user`→default_user)
  may be a field under either name.
- `login`, `password`, `username` are consumed by the dispatcher (COMMON_ARGS), never fields.
- Required: the spec's judged `required` without a default ⇒ a required field; otherwise
  the field must be optional. A required field the spec does not list is an error too.
- Defaults are compared when the spec's default is a literal of the argument's type
  (not `config.*`, not the doc's unreadable `[I]`).
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic.aliases import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

import billing_core.api.methods  # noqa: F401 - registers every method
from billing_core.catalog.params import COMMON_ARGS
from billing_core.catalog.registry import REGISTRY, MethodDef
from tests.shared_paths import spec_file

SPEC_NAME = "narayana-2.2.json"


def spec_path() -> Path:
    """The Narayana 2.2 catalogue (the repository's copy of ../shared/spec)."""
    return spec_file()


@cache
def spec() -> dict[str, Any]:
    return json.loads(spec_path().read_text())  # type: ignore[no-any-return]


def entries(name: str) -> list[dict[str, Any]]:
    return [m for m in spec()["methods"] if m["name"] == name]


@dataclass(frozen=True)
class SpecArg:
    names: tuple[str, ...]  # the documented name first, then a suspected correct spelling
    type: str
    required: bool
    default: str | None
    enum: tuple[str, ...] | None
    where: str  # for messages: "line N (basis)"


def spec_args(name: str) -> list[SpecArg]:
    merged: dict[str, list[dict[str, Any]]] = {}
    for entry in entries(name):
        for arg in entry["args"]:
            merged.setdefault(arg["name"], []).append(arg)
    args = []
    for arg_name, variants in merged.items():
        first = variants[0]
        suspected = [v["suspected_name"] for v in variants if v.get("suspected_name")]
        defaults = [v["default"] for v in variants if v["default"] is not None]
        args.append(
            SpecArg(
                names=(arg_name, *suspected),
                type=first["type"],
                required=all(v["required"] for v in variants),
                default=defaults[0] if defaults else None,
                enum=tuple(first["enum"]) if first["enum"] else None,
                where=f"line {first['line']} ({first.get('required_basis', '')})",
            )
        )
    return args


def aliases(info: FieldInfo) -> set[str]:
    found: set[str] = set()
    for alias in (info.alias, info.validation_alias):
        if isinstance(alias, str):
            found.add(alias)
        elif isinstance(alias, AliasChoices):
            found.update(c for c in alias.choices if isinstance(c, str))
    return found


def field_for(method: MethodDef, arg: SpecArg) -> tuple[str, FieldInfo] | None:
    for field_name, info in method.params.model_fields.items():
        if field_name in arg.names or aliases(info) & set(arg.names):
            return field_name, info
    return None


def literal_values(tp: Any) -> set[str] | None:
    """The values of a Literal annotation (through Optional/Union/Annotated), else None."""
    origin = get_origin(tp)
    if origin is Literal:
        return {str(v) for v in get_args(tp)}
    if origin in (Union, types.UnionType, Annotated):
        found = [v for v in map(literal_values, get_args(tp)) if v is not None]
        return set().union(*found) if found else None
    return None


def registered() -> list[str]:
    return REGISTRY.names()


def method_def(name: str) -> MethodDef:
    found = REGISTRY.get(name)
    assert found is not None
    return found


def args_with_fields(name: str) -> list[tuple[SpecArg, str, FieldInfo]]:
    method = method_def(name)
    matched = []
    for arg in spec_args(name):
        found = field_for(method, arg)
        if found is not None:
            matched.append((arg, *found))
    return matched


methods = pytest.mark.parametrize("name", registered())


def test_the_registry_is_not_empty() -> None:
    assert len(registered()) > 0, "no method registered: billing_core.api.methods imports nothing?"


@methods
def test_method_is_in_the_spec(name: str) -> None:
    assert entries(name), f"{name} is registered but {SPEC_NAME} has no method of that name (spelling?)"


@methods
def test_access_level_matches_the_spec(name: str) -> None:
    level = method_def(name).access_level
    wrong = [
        f"line {e['source_lines']['header']}: {e['access_level']}" for e in entries(name) if e["access_level"] != level
    ]
    assert not wrong, f"{name}: registered with level={level}, the spec says {'; '.join(wrong)}"


@methods
def test_return_kind_matches_the_spec(name: str) -> None:
    kind = method_def(name).returns
    wrong = [f"{e['return_kind']} ({e['returns']})" for e in entries(name) if e["return_kind"] != kind]
    assert not wrong, f"{name}: registered with returns={kind!r}, the spec's return_kind is {'; '.join(wrong)}"


@methods
def test_every_spec_argument_is_a_params_field(name: str) -> None:
    method = method_def(name)
    missing = [
        f"{' or '.join(repr(n) for n in arg.names)} ({arg.type}, {arg.where})"
        for arg in spec_args(name)
        if not set(arg.names) & COMMON_ARGS and field_for(method, arg) is None
    ]
    fields = ", ".join(method.params.model_fields) or "none"
    assert not missing, (
        f"{name}: {method.params.__name__} lacks spec argument(s) {'; '.join(missing)} (fields: {fields})"
    )


def wire_names(info: FieldInfo, field_name: str) -> set[str]:
    """What a field is read from: its aliases if it has any (plus its name if populate_by_name)."""
    found = aliases(info)
    return found or {field_name}


@methods
def test_no_field_is_read_from_a_dispatcher_common_arg(name: str) -> None:
    params = method_def(name).params
    shadowed = sorted(
        field_name for field_name, info in params.model_fields.items() if wire_names(info, field_name) & COMMON_ARGS
    )
    assert not shadowed, (
        f"{name}: fields {shadowed} never receive a value (the dispatcher consumes {sorted(COMMON_ARGS)}; use an alias)"
    )


@methods
def test_required_arguments_match_the_spec(name: str) -> None:
    problems = []
    for arg, field_name, info in args_with_fields(name):
        expected = arg.required and arg.default is None
        if info.is_required() != expected:
            want = "required" if expected else f"optional (spec default {arg.default!r})"
            got = "required" if info.is_required() else f"optional (default {info.default!r})"
            problems.append(f"{field_name}: the spec makes it {want} at {arg.where}, the field is {got}")
    known = {n for arg in spec_args(name) for n in arg.names}
    extra = [
        f"{field_name}: required but not a spec argument"
        for field_name, info in method_def(name).params.model_fields.items()
        if info.is_required() and field_name not in known and not aliases(info) & known
    ]
    assert not problems + extra, f"{name}: " + "; ".join(problems + extra)


@methods
def test_enums_match_the_spec(name: str) -> None:
    problems = []
    for arg, field_name, info in args_with_fields(name):
        if arg.enum is None:
            continue
        values = literal_values(info.annotation)
        if values != set(arg.enum):
            problems.append(
                f"{field_name}: spec enum {sorted(arg.enum)} at {arg.where}, field accepts {values or 'any'}"
            )
    assert not problems, f"{name}: " + "; ".join(problems)


def comparable_default(arg: SpecArg) -> tuple[bool, Any]:
    """(True, value) when the spec's default is a literal of the argument's type."""
    raw = arg.default
    if raw is None or raw.startswith("config."):
        return False, None
    if arg.type == "bool":
        return (raw in ("true", "false")), raw == "true"
    if arg.type == "num":
        try:
            return True, Decimal(raw)
        except InvalidOperation:
            return False, None  # e.g. resolveDIDRule's unreadable '[I]'
    return True, raw


def same_default(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool):
        return actual is expected
    if isinstance(expected, Decimal):
        try:
            return actual is not None and not isinstance(actual, bool) and Decimal(str(actual)) == expected
        except InvalidOperation:
            return False
    return bool(actual == expected)


@methods
def test_defaults_match_the_spec(name: str) -> None:
    problems = []
    for arg, field_name, info in args_with_fields(name):
        comparable, expected = comparable_default(arg)
        if not comparable or info.is_required():
            continue  # a required field with a default is reported by the required test
        actual = info.default if info.default is not PydanticUndefined else None
        if not same_default(expected, actual):
            problems.append(f"{field_name}: spec default {arg.default!r} at {arg.where}, field default {actual!r}")
    assert not problems, f"{name}: " + "; ".join(problems)


def test_checks_catch_a_wrong_definition() -> None:
    """The helpers above really see a wrong Params: a guard against a test that cannot fail."""
    from billing_core.catalog.params import Params, Str

    class Wrong(Params):
        select: Literal["id", "code"] = "code"
        extra_required: Str

    arg = SpecArg(("select",), "ustring", False, "direction", ("id", "code", "direction"), "line 1")
    method = MethodDef("resolveDirection", 0, Wrong, "text", handler=None)  # type: ignore[arg-type]
    found = field_for(method, arg)
    assert found is not None and found[0] == "select"
    assert literal_values(found[1].annotation) == {"id", "code"} != set(arg.enum or ())
    assert not same_default(comparable_default(arg)[1], found[1].default)
    assert Wrong.model_fields["extra_required"].is_required()
    assert field_for(method, SpecArg(("number",), "string", True, None, None, "line 2")) is None
