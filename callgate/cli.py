"""The `callgate` command line.

    callgate serve                      FastAGI + HTTP in one process (runs pending migrations)
    callgate migrate                    create/upgrade the schema and the master admin `admin`
    callgate demo                       load demo data, print keys, an AGI() line and a curl line
    callgate keys add NAME --level N --source MASK [--auth-by username|sip_extension|id]
                          [--default-user U] [--owner USER] [--allowed-methods m1,m2]
    callgate keys list | callgate keys seal   (seal: the key on stdin, made before migration 0018)
    callgate directions import FILE.csv  (header code,direction,min_len,max_len; callgate/import_cli.py)
    callgate rates import FILE.csv --tariff NAME [--owner USER]  (header code,direction,cost,route,priority)
    callgate bans list | callgate bans remove IP
    callgate firewall export --server NAME  (an nftables script of that server's bans)
    callgate dialplan export --server NAME [--kind dialplan|interface]  (the active version, for #exec)
    callgate agi SCRIPT 'QUERY' [--uniqueid ID]   play one FastAGI session like Asterisk, print the variables
    callgate reconcile (--csv Master.csv | --db-url URL [--table cdr]) [--dry-run] [--stale-after S]
                          charge / release the open holds of calls Asterisk's CDRs show as ended
    callgate asterisk add NAME --address IP [--sip-server N] [--ami-user U --ami-secret-stdin] …
    callgate asterisk list | callgate asterisk remove NAME     (callgate/asterisk_cli.py)
    callgate dids import FILE.csv        (header did,country,area[,voice_support,sms_support])
    callgate maintenance                 doMaintenance once, from cron (callgate/dids_cli.py)
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence

from billing_core.bootstrap import bootstrap
from billing_core.cache.keys import NAMESPACES
from billing_core.calls.asterisk_cdr import AsteriskCdr
from billing_core.config import Settings
from billing_core.container import Services
from billing_core.directory.keys import AUTH_METHODS, add_key, list_keys, seal_key
from billing_core.errors import ApiError
from billing_core.numbers.providers import StockFileError
from billing_core.rating.bulk_load import DeckFileError
from callgate import asterisk_cli, dids_cli, import_cli
from callgate.logging_setup import configure_logging


async def _with_services(settings: Settings, work: Callable[[Services], Awaitable[int]]) -> int:
    services = Services.build(settings)
    try:
        await bootstrap(services.db)
        return await work(services)
    finally:
        await services.close()


async def _keys_add(services: Services, args: argparse.Namespace) -> int:
    key = await add_key(
        services.db,
        services.box,
        name=args.name,
        access_level=args.level,
        source=args.source,
        owner=args.owner,
        auth_by=args.auth_by,
        default_user=args.default_user,
        allowed_methods=args.allowed_methods,
    )
    await services.cache.invalidate(*NAMESPACES)
    print(f"key {args.name} level {args.level} source {args.source} owner {args.owner}: {key}")
    return 0


async def _keys_seal(services: Services) -> int:
    """The key from stdin (never argv: shell history, ps), checked against its stored hash."""
    name = await seal_key(services.db, services.box, sys.stdin.readline().strip())
    if name is None:
        print("no such key", file=sys.stderr)
        return 1
    print(f"key {name} sealed: authorizeRealm can check it now")
    return 0


async def _keys_list(services: Services) -> int:
    for row in await list_keys(services.db):
        print(json.dumps(row, default=str))
    return 0


async def _bans(services: Services, args: argparse.Namespace) -> int:
    if args.bans_command == "remove":
        removed = await services.bans.unban(args.ip)
        print("removed" if removed else "not banned")
        return 0 if removed else 1
    for row in await services.bans.list():
        print(json.dumps(row))
    return 0


async def _reconcile(services: Services, args: argparse.Namespace) -> int:
    from billing_core.calls.asterisk_cdr import read_cdr_table, read_master_csv
    from billing_core.calls.reconcile import reconcile

    async def rows(column: str, values: Sequence[str]) -> list[AsteriskCdr]:
        if args.csv:
            return read_master_csv(args.csv, column, values)
        return await read_cdr_table(args.db_url, args.table, column, values)

    settings = services.settings
    stale_after = args.stale_after
    if stale_after is None:
        stale_after = settings.max_call_s + settings.reservation_grace_s
    report = await reconcile(services, rows, dry_run=args.dry_run, stale_after_s=stale_after)
    for line in report.lines():
        print(line)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callgate", description="Asterisk call control with a billing core")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run FastAGI and the HTTP shim")
    sub.add_parser("migrate", help="create or upgrade the schema and the master administrator")
    demo = sub.add_parser("demo", help="load demo data and print how to use it")
    demo.add_argument("--quiet", action="store_true", help="print only the keys")

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    add = keys.add_parser("add", help="create an API key (printed once, last on its line)")
    add.add_argument("name")
    add.add_argument("--level", type=int, required=True, help="0 = client key; >= 50 for call control")
    add.add_argument("--source", required=True, help="allowed IPs or masks: 178.1.1.*, 87.1.1.2, 10.0.0.0/8")
    add.add_argument("--auth-by", default="username", choices=AUTH_METHODS)
    add.add_argument("--default-user", default=None)
    add.add_argument("--owner", default="admin")
    add.add_argument("--allowed-methods", default="", help="comma-separated; empty = all methods")
    keys.add_parser("list", help="list keys (without the keys themselves)")
    keys.add_parser("seal", help="keep a key made before migration 0018 encrypted too (the key on stdin)")

    import_cli.add_parsers(sub)

    bans = sub.add_parser("bans", help="IP lock-outs").add_subparsers(dest="bans_command", required=True)
    bans.add_parser("list")
    remove = bans.add_parser("remove")
    remove.add_argument("ip")
    agi = sub.add_parser("agi", help="play one FastAGI session like Asterisk and print the variables set")
    agi.add_argument("script", help="callPrepare, callFinish, authorizeCall or resolveDIDRule")
    agi.add_argument("query", nargs="?", default="", help="e.g. 'login=10001&destination=4915112345678&prior=1'")
    agi.add_argument("--uniqueid", default=None, help="the call's agi_uniqueid (pair callPrepare and callFinish)")
    rec = sub.add_parser("reconcile", help="close open holds from Asterisk's own CDRs (docs/billing.md)")
    source = rec.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="cdr_csv's Master.csv")
    source.add_argument("--db-url", help="SQLAlchemy async URL of the cdr_pgsql / cdr_adaptive_odbc database")
    rec.add_argument("--table", default="cdr", help="the CDR table (with --db-url)")
    rec.add_argument("--dry-run", action="store_true", help="print what would be charged or released, write nothing")
    rec.add_argument("--stale-after", type=int, default=None,
                     help="seconds after which a hold without any CDR is reported as stale "
                          "(default CALLGATE_MAX_CALL_S + CALLGATE_RESERVATION_GRACE_S)")  # fmt: skip
    asterisk_cli.add_parser(sub)
    asterisk_cli.add_firewall_parser(sub)
    dids_cli.add_parsers(sub)
    asterisk_cli.add_dialplan_parser(sub)
    return parser


async def _agi(settings: Settings, args: argparse.Namespace) -> int:
    from fastagi.probe import probe

    script = f"{args.script}?{args.query}" if args.query else args.script
    result = await probe(settings.agi_host, settings.agi_port, script, uniqueid=args.uniqueid)
    for name, value in sorted(result.variables.items()):
        print(f"{name}={value}")
    return 0 if result.variables.get("CALLGATE_RESULT") else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    quiet_by_default = args.command in ("demo", "keys", "migrate", "directions", "rates", "bans", "agi", "reconcile",
                                        "asterisk", "firewall", "dids", "maintenance", "dialplan")
    # one-shot commands print what matters; their info-level logs would only bury it
    configure_logging("warning" if quiet_by_default and settings.log_level == "info" else settings.log_level)
    if args.command == "serve":
        from callgate.app import serve

        busy = _busy_listen_address(settings)
        if busy is not None:
            print(f"error: cannot listen on {busy}: address already in use (is another callgate serving?)",
                  file=sys.stderr)
            return 2
        try:
            return serve(settings)
        except OSError as exc:  # a bind that failed after the check (a race), or no permission
            print(f"error: callgate serve: {exc}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(_dispatch(settings, args))
    except ApiError as exc:
        print(f"error: {exc.code.value}: {exc.detail}", file=sys.stderr)
        return 2
    except (OSError, ValueError, DeckFileError, StockFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _busy_listen_address(settings: Settings) -> str | None:
    """The first of the FastAGI and HTTP addresses another process listens on, if any: said in
    one line before anything starts, not as a traceback from deep inside the event loop."""
    for host, port in ((settings.agi_host, settings.agi_port), (settings.http_host, settings.http_port)):
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe_socket:
            # The same option the listeners use, so a port left in TIME_WAIT is not "busy".
            probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe_socket.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"{host}:{port}"
                raise
    return None


async def _dispatch(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "migrate":

        async def done(_services: Services) -> int:
            print("schema at head; master administrator 'admin' present")
            return 0

        return await _with_services(settings, done)
    if args.command == "demo":
        from callgate.demo import load_demo

        return await _with_services(settings, lambda s: load_demo(s, quiet=args.quiet))
    if args.command == "keys":
        if args.keys_command == "add":
            return await _with_services(settings, lambda s: _keys_add(s, args))
        if args.keys_command == "seal":
            return await _with_services(settings, _keys_seal)
        return await _with_services(settings, _keys_list)
    if args.command == "directions":
        return await _with_services(settings, lambda s: import_cli.directions_import(s, args))
    if args.command == "rates":
        return await _with_services(settings, lambda s: import_cli.rates_import(s, args))
    if args.command == "bans":
        return await _with_services(settings, lambda s: _bans(s, args))
    if args.command == "agi":
        return await _agi(settings, args)
    if args.command == "reconcile":
        return await _with_services(settings, lambda s: _reconcile(s, args))
    if args.command == "asterisk":
        return await _with_services(settings, lambda s: asterisk_cli.run(s, args))
    if args.command == "firewall":
        return await _with_services(settings, lambda s: asterisk_cli.firewall_export(s, args))
    if args.command == "dids":
        return await _with_services(settings, lambda s: dids_cli.dids_import(s, args))
    if args.command == "maintenance":
        return await _with_services(settings, dids_cli.maintenance)
    if args.command == "dialplan":
        return await _with_services(settings, lambda s: asterisk_cli.dialplan_export(s, args))
    raise ValueError(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
