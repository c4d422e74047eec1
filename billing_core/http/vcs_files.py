"""JeraSoft VCS "work with files": GET|POST /admin/ answers a file as the HTTP body.

The seed (../shared/seeds/001_…, "Work with files"): a plain HTTP request to `/admin/`,
GET or POST, "with either Login and Password or Session ID", answered with the file
itself, never base64 inside JSON-RPC. callgate reads `method` (a VCS `module.action` name
such as `xdrs.list`, or a Narayana name), `format` (the file form, default `csv`), `login`
and `password` (clear, as in the JSON-RPC `auth`; md5-ed here as the door does) or `SID`
(a session of the JSON-RPC door), and the method's own arguments. It acts through the VCS
door's key, so every rule of that door applies; the dispatcher finds the method's file
form (billing_core.catalog.registry.file_form). A refusal is the Narayana JSON envelope.
"""

from __future__ import annotations

from aiohttp import web

from billing_core.api.dispatch import Credentials
from billing_core.auth.secrets_store import md5_hex
from billing_core.errors import ApiError, ErrorCode
from billing_core.http import answers
from billing_core.http.appkeys import DISPATCHER
from billing_core.http.form import request_arguments

PATH = "/admin"
DEFAULT_FORM = "csv"


def add_routes(app: web.Application) -> None:
    for path in (PATH, PATH + "/"):
        app.router.add_route("GET", path, _endpoint)
        app.router.add_route("POST", path, _endpoint)


async def _endpoint(request: web.Request) -> web.StreamResponse:
    dispatcher = request.app[DISPATCHER]
    apikey = dispatcher.services.settings.vcs_apikey
    if not apikey:
        detail = "the VCS door is closed: callgate has no CALLGATE_VCS_APIKEY"
        return answers.error_response(ApiError(ErrorCode.E_UNDEFINED_INSTRUCTION, detail))
    raw = await request_arguments(request)
    name = raw.pop("method", "")
    form = raw.pop("format", "") or DEFAULT_FORM
    session = raw.pop("SID", None) or None
    if "password" in raw:
        raw["password"] = md5_hex(raw["password"])
    method = dispatcher.registry.vcs(name)
    if method is None:
        return answers.error_response(ApiError(ErrorCode.E_UNKNOWN_METHOD, f"unknown method: {name[:64]}"))
    cred = Credentials(
        peer_ip=request.remote or "", transport="vcs", apikey=apikey, secure=request.secure,
        sessions=True, session=session,
    )  # fmt: skip
    outcome = await dispatcher.call(method.name, raw, cred, form=form)
    return answers.render(outcome, plain=False)
