"""Every E_* code of the spec is an ErrorCode with the spec's description, and addKey's
`auth_by`: the values callgate serves are accepted, msisdn and iccid (no SIM cards yet)
are answered E_UNDEFINED_INSTRUCTION, anything else E_INVALID_ARGUMENT. HTTP bodies exact,
on both backends."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import select

from billing_core.container import Services
from billing_core.directory.tables import api_keys
from billing_core.errors import DESCRIPTIONS, ErrorCode
from tests.factories import make_key
from tests.http_support import serve
from tests.shared_paths import spec_file


def spec() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(spec_file().read_text(encoding="utf-8"))
    return data


def spec_codes() -> set[str]:
    """The codes of the spec's list and every E_* any method's text names (none do today,
    but a method's notes are where a code of its own would be)."""
    data = spec()
    listed = {entry["code"] for entry in data["error_codes"]}
    named = set(re.findall(r"\bE_[A-Z_]+\b", json.dumps(data["methods"])))
    return listed | named


def test_every_spec_code_is_an_error_code() -> None:
    codes = spec_codes()
    assert len(codes) == 40
    assert codes <= {code.value for code in ErrorCode}
    # E_AUTH_ERROR appears only in the spec's sample answer: not a code of its list.
    assert [entry["code"] for entry in spec()["error_codes_undocumented"]] == ["E_AUTH_ERROR"]
    assert "E_AUTH_ERROR" not in ErrorCode.__members__


def test_error_codes_are_the_spec_list_in_order_with_its_descriptions() -> None:
    listed = [(entry["code"], entry["description"]) for entry in spec()["error_codes"]]
    assert [(code.value, DESCRIPTIONS[code]) for code in ErrorCode] == listed


# --- addKey's auth_by -------------------------------------------------------------------

KEY_ARGS = {"source": "10.0.0.*", "accessLevel": "0", "secure_only": "0"}


@pytest.mark.parametrize("auth_by", ["username", "sip_extension", "id"])
async def test_add_key_accepts_what_callgate_can_authorize_by(services: Services, auth_by: str) -> None:
    admin_key = await make_key(services, level=50)
    async with serve(services, test_methods=False) as api:
        args = {"login": "admin", "name": f"by-{auth_by}", "auth_by": auth_by, "apikey": f"k3y-{auth_by}-0123456789ab"}
        reply = await api.get(admin_key, "addKey", args | KEY_ARGS)
    assert (reply.status, reply.body) == (200, b'{"result": true, "response": true, "description": ""}')
    async with services.db.begin() as conn:
        stored = (await conn.execute(select(api_keys.c.auth_by).where(api_keys.c.name == f"by-{auth_by}"))).scalar()
    assert stored == auth_by


@pytest.mark.parametrize(
    ("auth_by", "status", "body"),
    [
        (
            "msisdn",
            400,
            b'{"result": false, "response": "E_UNDEFINED_INSTRUCTION", "description": "auth_by=msisdn finds users '
            b'by their SIM cards, which callgate does not have yet; use one of username, sip_extension, id"}',
        ),
        (
            "iccid",
            400,
            b'{"result": false, "response": "E_UNDEFINED_INSTRUCTION", "description": "auth_by=iccid finds users '
            b'by their SIM cards, which callgate does not have yet; use one of username, sip_extension, id"}',
        ),
        (
            "paymentmethod",
            400,
            b'{"result": false, "response": "E_INVALID_ARGUMENT", '
            b'"description": "auth_by must be one of username, sip_extension, id"}',
        ),
    ],
)
async def test_add_key_answers_the_auth_by_it_cannot_serve(
    services: Services, auth_by: str, status: int, body: bytes
) -> None:
    admin_key = await make_key(services, level=50)
    async with serve(services, test_methods=False) as api:
        args = {"login": "admin", "name": "sim", "auth_by": auth_by, "apikey": "k3y-sim-0123456789abcd"}
        reply = await api.get(admin_key, "addKey", args | KEY_ARGS)
    assert (reply.status, reply.body) == (status, body)
    async with services.db.begin() as conn:
        assert (await conn.execute(select(api_keys.c.id).where(api_keys.c.name == "sim"))).first() is None
