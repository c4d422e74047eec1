"""Dispatch: ban check → key → source IP → method → user → access → arguments → handler.

This is the only place that authenticates, authorizes and validates; every transport
(FastAGI, HTTP, JSON-RPC, BILLmanager) hands it (method, raw args, credentials) and maps
the `Outcome` to its own wire form.

Access rules (the spec leaves the comparison implicit; this is what we chose):
- Methods of level 0 are anonymous (a valid key is still required).
- Methods of level >= 50 (call control) need a server key whose own level reaches it.
- Other methods need the acting user's `accesslevel` to reach the method's level and,
  with a server key, the key's level too.
- A server key acts for the user named by `login` (matched per the key's `auth_by`),
  who must be the key owner or managed (directly or further down) by the key owner,
  unless the owner is a master administrator (44: the spec's "exclusive rights").
- `username=` acts for another user: allowed for administrators (>= 33) and for the
  user's managers up the chain; otherwise E_DOES_NOT_BELONG_TO_YOU.
- Front doors that keep sessions (`Credentials.sessions`: JeraSoft VCS, BILLmanager) act
  through a dynamic client key of their own: a password login opens a session
  (`Outcome.session`), a later call presents its id instead (billing_core.api.sessions).
- Lock-outs: an unknown or disabled key bans its HTTP source address
  (billing_core.directory.bans, never a call-control key's address, never over FastAGI);
  wrong passwords lock the login and then ban the address (services.login_guard).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog
from pydantic import ValidationError

from billing_core.api import sessions as door_sessions
from billing_core.auth.ipmask import ip_allowed
from billing_core.auth.secrets_store import api_key_hash, hash_password, verify_password
from billing_core.catalog.params import COMMON_ARGS
from billing_core.catalog.registry import REGISTRY, CallContext, MethodDef, Registry
from billing_core.container import Services
from billing_core.directory import login_guard
from billing_core.directory.ownership import key_owner_serves
from billing_core.errors import (
    ApiError,
    ErrorCode,
    KeyRejected,
    SourceForbidden,
    UnexpectedFailure,
)
from billing_core.records import KeyRecord, UserRecord

log = structlog.get_logger(__name__)

CALL_CONTROL_LEVEL = 50
LOCKED = -1  # users.active: locked
_DUMMY_HASH = hash_password("0" * 32)
ADMIN_LEVEL = 33


@dataclass(frozen=True, slots=True)
class Credentials:
    """How the caller presented itself.

    apikey: the key from the HTTP path, or None over FastAGI (the Asterisk server's key
    is the server key whose source mask admits the peer address).
    """

    peer_ip: str
    transport: str
    apikey: str | None = None
    call_uid: str | None = None
    secure: bool = False  # the request came over TLS (keys with secure_only need it)
    # A door that logs people in by password and keeps sessions (VCS, BILLmanager): its
    # key must be a dynamic client key; `session` resumes a session.
    sessions: bool = False
    session: str | None = None
    open_session: bool = False  # a password login opens a session (VCS answers carry it)


@dataclass(frozen=True, slots=True)
class Outcome:
    value: Any = None
    error: ApiError | None = None
    method: MethodDef | None = None
    key: KeyRecord | None = None
    session: str | None = None  # the front-door session the call ran in (opened or resumed)

    @property
    def ok(self) -> bool:
        return self.error is None


def _validation_error(exc: ValidationError) -> ApiError:
    errors = exc.errors()
    missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing" and e["loc"]]
    if missing:
        return ApiError(ErrorCode.E_MISSING_ARGUMENT, f"missing argument: {', '.join(missing)}")
    names = sorted({str(e["loc"][0]) for e in errors if e["loc"]})
    return ApiError(ErrorCode.E_INVALID_ARGUMENT, f"invalid argument: {', '.join(names)}")


class Dispatcher:
    def __init__(self, services: Services, registry: Registry = REGISTRY) -> None:
        self.services = services
        self.registry = registry

    async def call(
        self, method_name: str, raw: Mapping[str, str], cred: Credentials, *, form: str | None = None
    ) -> Outcome:
        """Run `method_name` (or its `form` file form, Registry.file_form) for `cred`."""
        key: KeyRecord | None = None
        method: MethodDef | None = None
        session: str | None = None
        if not self.services.readiness.ready:
            # Not migrated/warm yet (the database was down at start-up): answer at once,
            # without touching a store that may lack its schema (billing_core.readiness).
            log.warning("api.store_not_ready", method=method_name[:64], transport=cred.transport)
            detail = "database unavailable; callgate retries in the background"
            return Outcome(error=ApiError(ErrorCode.E_SQL_ERROR, detail))
        try:
            gens = await self.services.cache.generations()
            candidates = await self._keys(gens, cred)
            key = candidates[0]
            method = self.registry.get(method_name) if form is None else self.registry.get_file(method_name, form)
            if method is None:
                shown = method_name[:64] if form is None else f"{method_name[:64]}.{form[:16]}"
                raise ApiError(ErrorCode.E_UNKNOWN_METHOD, f"unknown method: {shown}")
            key, user, session = await self._key_and_user(gens, candidates, method, raw, cred)
            self._check_level(key, user, method)
            actor = await self._actor(gens, user, raw.get("username", ""))
            try:
                params = method.params.model_validate(
                    {k: v for k, v in raw.items() if k not in COMMON_ARGS}
                )
            except ValidationError as exc:
                raise _validation_error(exc) from None
            ctx = CallContext(
                services=self.services,
                key=key,
                user=user,
                actor=actor,
                peer_ip=cred.peer_ip,
                transport=cred.transport,
                call_uid=cred.call_uid,
                generations=gens,
                raw=raw,
            )
            value = await method.handler(ctx, params)
            if method.invalidates:
                await self.services.cache.invalidate(*method.invalidates)
            return Outcome(value=value, method=method, key=key, session=session)
        except ApiError as exc:
            if exc.code is ErrorCode.E_SQL_ERROR:
                log.warning("api.backend_unavailable", method=method_name, transport=cred.transport)
            return Outcome(error=exc, method=method, key=key, session=session)
        except Exception as exc:
            # Type and place only: exception messages can quote argument values (secrets).
            log.error(
                "api.unexpected_error",
                method=method_name,
                transport=cred.transport,
                error=type(exc).__name__,
                where=_innermost_frame(exc),
            )
            return Outcome(error=UnexpectedFailure(), method=method, key=key, session=session)

    async def open_session(self, login: str, password: str, cred: Credentials) -> Outcome:
        """A front door's login without a method (BILLmanager `func=auth`): the key and the
        password checked as for any call, then a session (`Outcome.session`); the value
        is {"username", "accesslevel"}."""
        if not self.services.readiness.ready:
            return Outcome(error=ApiError(ErrorCode.E_SQL_ERROR, "database unavailable"))
        key: KeyRecord | None = None
        cred = replace(cred, sessions=True, open_session=True, session=None)
        try:
            gens = await self.services.cache.generations()
            key = (await self._keys(gens, cred))[0]
            user, session = await self._user(gens, key, 1, {"login": login, "password": password}, cred)
            if user is None or session is None:
                raise ApiError(ErrorCode.E_AUTH_FAILED)
            value = {"username": user.username, "accesslevel": user.accesslevel}
            return Outcome(value=value, key=key, session=session)
        except ApiError as exc:
            return Outcome(error=exc, key=key)
        except Exception as exc:
            log.error("api.unexpected_error", method="<login>", error=type(exc).__name__, where=_innermost_frame(exc))
            return Outcome(error=UnexpectedFailure(), key=key)

    async def end_session(self, session_id: str) -> bool:
        """A front door's logout: True when the session existed."""
        return await door_sessions.end_session(self.services, session_id)

    async def _key_and_user(
        self,
        gens: dict[str, int] | None,
        candidates: list[KeyRecord],
        method: MethodDef,
        raw: Mapping[str, str],
        cred: Credentials,
    ) -> tuple[KeyRecord, UserRecord | None, str | None]:
        """The first candidate key that allows the method and identifies the caller under
        it. Over HTTP there is one candidate (the key in the path); over FastAGI every
        server key admitting the Asterisk address is one, in keys_for_peer's order."""
        failure: ApiError | None = None
        for key in candidates:
            try:
                if key.allowed_methods and method.name not in key.allowed_methods:
                    raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS, "method not allowed for this key")
                user, session = await self._user(gens, key, method.access_level, raw, cred)
                return key, user, session
            except ApiError as exc:
                if exc.code not in (ErrorCode.E_AUTH_FAILED, ErrorCode.E_INSUFFICIENT_ACCESS):
                    raise
                failure = failure or exc
        assert failure is not None
        raise failure

    async def _keys(self, gens: dict[str, int] | None, cred: Credentials) -> list[KeyRecord]:
        services = self.services
        # FastAGI (no key) is never subject to a ban: it carries no key to guess, its only
        # credential is a call-control key's mask, and a ban on an Asterisk host stopped
        # every call (docs/decisions.md, "Bans and the Asterisk hosts (issue 9, item 13)").
        if cred.apikey is not None and await services.bans.is_banned(gens, cred.peer_ip):
            raise SourceForbidden("access from this IP is locked")
        if cred.apikey is None:
            keys = await services.profiles.keys_for_peer(gens, cred.peer_ip)
            if not keys:
                log.warning("api.peer_not_allowed", peer=cred.peer_ip, transport=cred.transport)
                raise SourceForbidden("no server key admits this address")
            return keys
        key = None
        if 0 < len(cred.apikey) <= 128:
            key = await services.profiles.key_by_hash(gens, api_key_hash(cred.apikey))
        if key is None or not key.enabled:
            await services.bans.ban(cred.peer_ip, reason="incorrect or inactive API key", gens=gens)
            raise KeyRejected()
        if not ip_allowed(cred.peer_ip, key.source):
            raise SourceForbidden()
        if key.secure_only and not cred.secure:
            raise SourceForbidden("this key is for HTTPS only")
        if cred.sessions and (key.is_server_key or key.default_user):
            # a server or static key would let a login through without its password
            log.error("api.door_key_not_dynamic", transport=cred.transport, key=key.id)
            detail = "this door's key must be a client key without a default user"
            raise ApiError(ErrorCode.E_UNDEFINED_INSTRUCTION, detail)
        return [key]

    async def _user(
        self, gens: dict[str, int] | None, key: KeyRecord, level: int, raw: Mapping[str, str], cred: Credentials
    ) -> tuple[UserRecord | None, str | None]:
        """The authenticated user for a method of `level`, and the front-door session."""
        profiles = self.services.profiles
        login = raw.get("login", "")
        if not key.is_server_key:
            session: str | None = None
            if key.default_user:
                user = await profiles.user_by(gens, key.auth_by, key.default_user)
            elif login:
                user = await self._password_login(gens, key, login, raw.get("password", ""), cred.peer_ip)
                if user is not None and cred.sessions and cred.open_session and user.active != LOCKED:
                    session = await door_sessions.open_session(self.services, key, user)
            elif cred.sessions and cred.session:
                user = await door_sessions.resume(self.services, gens, key, cred.session)
                session = cred.session
            else:
                user = None
            if user is None and level > 0:
                raise ApiError(ErrorCode.E_AUTH_FAILED)
            if user is not None and user.active == LOCKED:
                # a locked person cannot log in; call control (server keys) answers for
                # locked users itself, and an administrator can still act for them to unlock
                raise ApiError(ErrorCode.E_USER_LOCKED)
            return user, session
        if not login:
            return await profiles.user_by(gens, "username", key.owner), None
        user = await profiles.user_by(gens, key.auth_by, login)
        if user is None:
            if level == 0:
                return None, None
            raise ApiError(ErrorCode.E_AUTH_FAILED, f"no user for {key.auth_by}={login[:64]}")
        if not await key_owner_serves(self.services.profiles, gens, key.owner, user.username):
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "user does not belong to the key owner")
        return user, None

    async def _password_login(
        self, gens: dict[str, int] | None, key: KeyRecord, login: str, password: str, peer_ip: str
    ) -> UserRecord | None:
        """A dynamic login, under the lock-out of billing_core.directory.login_guard."""
        await login_guard.refuse_if_locked(self.services, key.auth_by, login)
        user = await self.services.profiles.user_by(gens, key.auth_by, login)
        # verify even for an unknown login, so timing does not tell which users exist
        stored = user.password_hash if user is not None else _DUMMY_HASH
        verified = verify_password(password, stored)
        if user is None or not verified:
            if password:  # an empty password is no guess: it can never be right
                await login_guard.failed(self.services, gens, key.auth_by, login, peer_ip)
            return None
        await login_guard.succeeded(self.services, key.auth_by, login)
        return user

    def _check_level(self, key: KeyRecord, user: UserRecord | None, method: MethodDef) -> None:
        level = method.access_level
        if level == 0:
            return
        if level >= CALL_CONTROL_LEVEL:
            if key.access_level < level:
                raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS)
            return
        if user is None or user.accesslevel < level:
            raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS)
        if key.is_server_key and key.access_level < level:
            raise ApiError(ErrorCode.E_INSUFFICIENT_ACCESS)

    async def _actor(
        self, gens: dict[str, int] | None, user: UserRecord | None, username: str
    ) -> UserRecord | None:
        if not username or user is None or username == user.username:
            return user
        target = await self.services.profiles.user_by(gens, "username", username)
        if target is None:
            raise ApiError(ErrorCode.E_NOT_EXIST, "no such user")
        if target.accesslevel > user.accesslevel:
            raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU, "cannot act for a user of a higher level")
        if user.accesslevel >= ADMIN_LEVEL:
            return target
        if user.username in await self.services.profiles.manager_chain(gens, target.username):
            return target
        raise ApiError(ErrorCode.E_DOES_NOT_BELONG_TO_YOU)


def _innermost_frame(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}" if tb else "?"

