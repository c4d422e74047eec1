"""The VCS and BILLmanager names declared beside the methods: the registry refuses a name
used twice or malformed, and docs/front-doors.md lists exactly what the registry holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import billing_core.api.methods  # noqa: F401 - registers every method
from billing_core.catalog.params import NoParams
from billing_core.catalog.registry import REGISTRY, Aliases, BillmgrVerb, CallContext, Registry
from billing_core.container import Services

DOC = Path(__file__).resolve().parents[1] / "docs" / "front-doors.md"


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_the_documented_names_are_the_registrys() -> None:
    section = DOC.read_text(encoding="utf-8").split("## The names", 1)[1]
    documented = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("method", "---"):
            documented[cells[0]] = (_ticked(cells[1]), _ticked(cells[2]), cells[3].replace("`", ""))
    declared = {}
    for name in REGISTRY.names():
        a = REGISTRY.get(name).aliases  # type: ignore[union-attr]
        if a.vcs or a.billmgr:
            ids = ", ".join(f"{k} → {v}" for k, v in (("elid", a.elid), ("plid", a.plid), ("elname", a.elname)) if v)
            declared[name] = (list(a.vcs), list(a.billmgr), ids)
    assert documented == declared
    assert len(declared) >= 30


def test_the_main_methods_have_names_at_both_doors() -> None:
    for name in ("getUsers", "registerUser", "updateUser", "getRoutes", "addRoute", "getRatesList",
                 "getAccountInfo", "addDID", "getLogs"):  # fmt: skip
        aliases = REGISTRY.get(name).aliases  # type: ignore[union-attr]
        assert aliases.vcs and aliases.billmgr, name
    assert REGISTRY.vcs("clients.editForm") is REGISTRY.get("getInfo")
    assert REGISTRY.vcs("getInfo") is REGISTRY.get("getInfo")
    found = REGISTRY.billmgr("route.suspend", "suspend")
    assert found is not None and found[0].name == "updateRouteState" and found[1].fixed == (("state", "false"),)


@pytest.mark.parametrize(
    ("spec", "role", "fixed"),
    [
        ("route", "list", ()),
        ("route.edit#create", "create", ()),
        ("route.edit#show", "show", ()),
        ("route.delete", "delete", ()),
        ("user.suspend?active=-1", "suspend", (("active", "-1"),)),
        ("route.history", "call", ()),
    ],
)
def test_billmgr_verbs_parse(spec: str, role: str, fixed: tuple[tuple[str, str], ...]) -> None:
    verb = BillmgrVerb.parse(spec)
    assert (verb.role, verb.fixed) == (role, fixed)


@pytest.mark.parametrize("spec", ["route.edit", "route.edit#drop", "route#create", ".edit#show"])
def test_malformed_billmgr_verbs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        BillmgrVerb.parse(spec)


def test_a_name_used_twice_is_refused() -> None:
    registry = Registry()

    async def handler(ctx: CallContext[Services], p: NoParams) -> bool:
        return True

    registry.method("a", level=1, params=NoParams, returns="bool", aliases=Aliases(vcs=("x.list",)))(handler)
    with pytest.raises(ValueError):
        registry.method("b", level=1, params=NoParams, returns="bool", aliases=Aliases(vcs=("x.list",)))(handler)
    registry.method("c", level=1, params=NoParams, returns="bool", aliases=Aliases(billmgr=("x",)))(handler)
    with pytest.raises(ValueError):
        registry.method("d", level=1, params=NoParams, returns="bool", aliases=Aliases(billmgr=("x",)))(handler)
    with pytest.raises(ValueError):
        registry.method("e", level=1, params=NoParams, returns="bool", aliases=Aliases(vcs=("nodot",)))(handler)
