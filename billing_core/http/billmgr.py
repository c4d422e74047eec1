"""The ISPsystem BILLmanager door: `GET|POST /billmgr?func=…`, a thin transport to the dispatcher.

`func` is a Narayana method name (`func=getRoutes`) or a BILLmanager verb declared beside
a method in the registry (billing_core.catalog.registry.Aliases):
- `x` lists; `x.edit` without `elid` shows a new form (the create method's fields), with
  `elid` shows the object (its show method, else the row of the `x` list whose elid
  field matches), with `sok=ok` applies (create without elid, update with it); nothing
  changes without `sok=ok`. `x.delete`, `x.suspend`, `x.resume` act at once (they are
  not forms); a delete of a missing object answers ok, as BILLmanager does.
- `elid` / `plid` / `elname` fill the arguments the method's aliases name.
- `func=auth` with `username` + `password` logs in and answers a session id for `auth=`;
  `func=logout` ends it.

Credentials: `authinfo=login:password` (clear password, sent on as its md5) on each call,
or `auth=<session id>`. `su=` is Narayana's `username=`: the dispatcher's ownership rules
decide. The door acts through the client key `settings.billmgr_apikey`, so its IP masks
(the authinfo white list), allowed methods, the password lock-out and bans apply as at
the Narayana door. `lang=` is accepted (answers are English; unknown -> en); `out=`
picks the format (billing_core.http.billmgr_out).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic_core import PydanticUndefined

from billing_core.api.dispatch import Credentials, Dispatcher, Outcome
from billing_core.auth.secrets_store import md5_hex
from billing_core.catalog.params import COMMON_ARGS
from billing_core.catalog.registry import BillmgrRole, BillmgrVerb, MethodDef, TextAnswer
from billing_core.errors import DESCRIPTIONS, ApiError, ErrorCode
from billing_core.http import billmgr_out as out
from billing_core.http.appkeys import DISPATCHER, LIMITS, TRACE
from billing_core.http.form import BadInput, request_arguments

PATH = "/billmgr"
LANGS = frozenset({"en"})
DOOR_ARGS = frozenset(
    {"func", "out", "lang", "auth", "authinfo", "su", "sok", "elid", "plid", "elname", "clicked_button"}
)
LOGOUT = frozenset({"logout", "session.delete"})

_ERROR_TYPES: dict[ErrorCode, str] = {
    ErrorCode.E_AUTH_FAILED: "auth",
    ErrorCode.E_USER_LOCKED: "auth",
    ErrorCode.E_INSUFFICIENT_ACCESS: "access",
    ErrorCode.E_DOES_NOT_BELONG_TO_YOU: "access",
    ErrorCode.E_UNKNOWN_METHOD: "missing",
    ErrorCode.E_NOT_EXIST: "missing",
    ErrorCode.E_MISSING_ARGUMENT: "empty",
    ErrorCode.E_INVALID_ARGUMENT: "value",
    ErrorCode.E_DATA_ABORT: "value",
}


def add_routes(app: web.Application) -> None:
    for verb in ("GET", "POST"):
        app.router.add_route(verb, PATH, _endpoint)


def error_doc(func: str, lang: str, error: ApiError, obj: str = "") -> out.Doc:
    if not obj and error.code is ErrorCode.E_MISSING_ARGUMENT:
        obj = error.detail.partition(": ")[2]
    return out.Doc(
        func,
        lang,
        "error",
        error_type=_ERROR_TYPES.get(error.code, "error"),
        error_code=error.code.value,
        error_object=obj,
        message=error.detail,
    )


async def _endpoint(request: web.Request) -> web.StreamResponse:
    query_out = request.query.get("out", "")
    timeout_s = request.app[LIMITS].body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            args = await request_arguments(request)
    except TimeoutError:
        bad = ApiError(ErrorCode.E_INVALID_ARGUMENT, f"the request body did not arrive within {timeout_s:g} s")
        response = out.render(error_doc("", "en", bad), query_out, 408)
        response.force_close()
        return response
    except BadInput as exc:
        request[TRACE].result = ErrorCode.E_INVALID_ARGUMENT.value
        status = exc.status if exc.status != 400 else 200
        bad = ApiError(ErrorCode.E_INVALID_ARGUMENT, exc.detail)
        response = out.render(error_doc("", "en", bad), query_out, status)
        if status != 200:
            response.force_close()
        return response
    fmt = args.get("out", "")
    lang = args.get("lang", "en") if args.get("lang", "en") in LANGS else "en"
    func = args.get("func", "")
    if fmt not in out.OUT_FORMATS:
        known = ", ".join(sorted(out.OUT_FORMATS - {""}))
        bad = ApiError(ErrorCode.E_INVALID_ARGUMENT, f"unknown out format; use one of {known}")
        return out.render(error_doc(func, lang, bad, "out"), "xml")
    doc = await _doc(request, func, lang, args)
    if doc.kind == "error":
        request[TRACE].result = doc.error_code
    return out.render(doc, fmt)


def _credentials(request: web.Request, args: dict[str, str]) -> Credentials:
    return Credentials(
        peer_ip=request.remote or "",
        transport="billmgr",
        apikey=request.app[DISPATCHER].services.settings.billmgr_apikey,
        secure=request.secure,
        sessions=True,
        session=args.get("auth") or None,
    )


async def _doc(request: web.Request, func: str, lang: str, args: dict[str, str]) -> out.Doc:
    dispatcher = request.app[DISPATCHER]
    if not dispatcher.services.settings.billmgr_apikey:
        detail = "the BILLmanager door is closed: no CALLGATE_BILLMGR_APIKEY"
        closed = ApiError(ErrorCode.E_UNDEFINED_INSTRUCTION, detail)
        return error_doc(func, lang, closed)
    if not func:
        return error_doc(func, lang, ApiError(ErrorCode.E_MISSING_ARGUMENT, "missing argument: func"), "func")
    cred = _credentials(request, args)
    if func == "auth":
        outcome = await dispatcher.open_session(args.get("username", ""), md5_hex(args.get("password", "")), cred)
        if outcome.error is not None:
            return error_doc(func, lang, outcome.error)
        return out.Doc(func, lang, "auth", session=outcome.session or "")
    if func in LOGOUT:
        await dispatcher.end_session(args.get("auth", ""))
        return out.Doc(func, lang, "ok")
    role = _role(func, args)
    found = _resolve(dispatcher, func, role)
    if found is None:
        if role == "form" and (form := _form(dispatcher, func)) is not None:
            return out.Doc(func, lang, "form", fields={f.name: f.default for f in form}, form=form)
        if role == "show" and (listing := dispatcher.registry.billmgr(func.rpartition(".")[0], "list")) is not None:
            return await _show_from_list(request, dispatcher, func, lang, listing[0], args, cred)
        unknown = ApiError(ErrorCode.E_UNKNOWN_METHOD, f"unknown function: {func[:64]}")
        return error_doc(func, lang, unknown, "func")
    method, verb = found
    request[TRACE].method = method.name
    try:
        raw = _raw(method, verb, args)
    except BadInput as exc:
        return error_doc(func, lang, ApiError(ErrorCode.E_AUTH_FAILED, exc.detail), "authinfo")
    outcome = await dispatcher.call(method.name, raw, cred)
    return _answer(func, lang, verb.role, outcome)


def _role(func: str, args: dict[str, str]) -> BillmgrRole | str:
    if not func.endswith(".edit"):
        return ""  # fixed by the function's name (BillmgrVerb.parse)
    applying = args.get("sok", "") == "ok"
    if applying:
        return "update" if args.get("elid") else "create"
    return "show" if args.get("elid") else "form"


def _resolve(dispatcher: Dispatcher, func: str, role: str) -> tuple[MethodDef, BillmgrVerb] | None:
    method = dispatcher.registry.get(func)
    if method is not None:
        return method, BillmgrVerb(func, "call")
    if role == "form":
        return None
    if role:
        return dispatcher.registry.billmgr(func, role)  # type: ignore[arg-type]
    try:
        verb = BillmgrVerb.parse(func)
    except ValueError:
        return None
    return dispatcher.registry.billmgr(func, verb.role)


def _form(dispatcher: Dispatcher, func: str) -> list[out.FormField] | None:
    found = dispatcher.registry.billmgr(func, "create") or dispatcher.registry.billmgr(func, "update")
    if found is None:
        return None
    fields = []
    for name, info in found[0].params.model_fields.items():
        default = None if info.default is PydanticUndefined else info.default
        fields.append(out.FormField(info.alias or name, info.is_required(), default))
    return fields


def _raw(method: MethodDef, verb: BillmgrVerb, args: dict[str, str]) -> dict[str, str]:
    """The dispatcher's arguments: the method's own, the ids mapped, su, authinfo."""
    raw = {k: v for k, v in args.items() if k not in DOOR_ARGS and k not in COMMON_ARGS}
    aliases = method.aliases
    if verb.role not in ("list", "call"):
        for door_arg, argument in (("elid", aliases.elid), ("plid", aliases.plid), ("elname", aliases.elname)):
            if argument and args.get(door_arg):
                raw[argument] = args[door_arg]
    elif aliases.plid and args.get("plid"):
        raw[aliases.plid] = args["plid"]
    raw.update(verb.fixed)
    if args.get("su"):
        raw["username"] = args["su"]
    authinfo = args.get("authinfo")
    if authinfo:
        login, colon, password = authinfo.partition(":")
        if not colon or not login:
            raise BadInput("authinfo must be login:password")
        raw["login"], raw["password"] = login, md5_hex(password)
    return raw


def _rows(value: Any) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
    return [item if isinstance(item, dict) else {"value": item} for item in items]


def _answer(func: str, lang: str, role: str, outcome: Outcome) -> out.Doc:
    if outcome.error is not None:
        if role == "delete" and outcome.error.code is ErrorCode.E_NOT_EXIST:
            return out.Doc(func, lang, "ok")  # BILLmanager: a delete of a missing record is ok
        return error_doc(func, lang, outcome.error)
    value = outcome.value
    if isinstance(value, bytes | bytearray):
        binary = ApiError(ErrorCode.E_UNDEFINED_INSTRUCTION, "a file answer: ask for it over plain HTTP")
        return error_doc(func, lang, binary)
    if isinstance(value, TextAnswer):
        if not value.ok:
            code = ErrorCode.__members__.get(value.error, ErrorCode.E_UNDEFINED_INSTRUCTION)
            return error_doc(func, lang, ApiError(code, DESCRIPTIONS.get(code, value.text)))
        return out.Doc(func, lang, "object", fields={"text": value.text, "result": value.result, **value.fields})
    if value is True:
        return out.Doc(func, lang, "ok")
    if isinstance(value, list) or role == "list":
        return out.Doc(func, lang, "list", rows=_rows(value))
    if isinstance(value, dict):
        return out.Doc(func, lang, "object", fields=value)
    return out.Doc(func, lang, "object", fields={"value": value})


async def _show_from_list(
    request: web.Request,
    dispatcher: Dispatcher,
    func: str,
    lang: str,
    listing: MethodDef,
    args: dict[str, str],
    cred: Credentials,
) -> out.Doc:
    """`x.edit&elid=N` with no show method: the row of the `x` list whose elid field is N."""
    request[TRACE].method = listing.name
    try:
        raw = _raw(listing, BillmgrVerb(func, "list"), args)
    except BadInput as exc:
        return error_doc(func, lang, ApiError(ErrorCode.E_AUTH_FAILED, exc.detail), "authinfo")
    outcome = await dispatcher.call(listing.name, raw, cred)
    if outcome.error is not None:
        return error_doc(func, lang, outcome.error)
    key = listing.aliases.elid or "id"
    for row in _rows(outcome.value):
        if out.scalar_text(row.get(key)) == args["elid"]:
            return out.Doc(func, lang, "object", fields=row)
    return error_doc(func, lang, ApiError(ErrorCode.E_NOT_EXIST, "no such object"), "elid")
