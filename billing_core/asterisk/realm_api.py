"""API method authorizeRealm (spec "Call processing", level 50): is this an affiliated
Asterisk? The affiliated exchange proves it holds an API key by the MD5 of
"${API-key}${Asterisk IP-address}${API-key name}" (`auth`), for its address (`source`).

True when an enabled key gives exactly that MD5 for `source` and its allowed addresses
admit `source`; false otherwise. The key's name is the SIP realm the exchange attaches its
users to (spec, "API keys"). Keys are kept encrypted since migration 0018 so that the MD5
can be computed; a key made before it has only its hash and answers false until
`callgate keys seal` is given it (docs/decisions.md).
"""

from __future__ import annotations

import ipaddress
import re

import structlog

from billing_core.asterisk.context import AsteriskContext
from billing_core.catalog.params import Params, Str
from billing_core.catalog.registry import REGISTRY, CallContext
from billing_core.directory.keys import realm_key_matches
from billing_core.errors import ApiError, ErrorCode

log = structlog.get_logger(__name__)

_MD5 = re.compile(r"[0-9A-Fa-f]{32}")


class AuthorizeRealmParams(Params):
    source: Str
    auth: Str


@REGISTRY.method("authorizeRealm", level=50, params=AuthorizeRealmParams, returns="bool")
async def authorize_realm(ctx: CallContext[AsteriskContext], p: AuthorizeRealmParams) -> bool:
    source = p.source.strip()
    try:
        ipaddress.ip_address(source)
    except ValueError:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "source must be the Asterisk's IP address") from None
    if not _MD5.fullmatch(p.auth.strip()):
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "auth must be an MD5 hex digest (32 hex digits)")
    realm = await realm_key_matches(ctx.services.db, ctx.services.box, source, p.auth)
    log.info("asterisk.realm", source=source, realm=realm or "", allowed=realm is not None)
    return realm is not None
