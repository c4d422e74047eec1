"""`callgate asterisk add|list|remove`: the operator's Asterisk servers.

    callgate asterisk add NAME --address IP --sip-server NAME[,NAME…] [--sip-server …]
                          [--ami-host H] [--ami-port 5038] [--ami-user U]
                          [--ami-secret S | --ami-secret-stdin] [--disabled] [--replace]
    callgate asterisk list              one JSON object per line; the AMI secret never
    callgate asterisk remove NAME
    callgate firewall export --server NAME   an `nft -f` script of that server's bans (cron,
                                             fail2ban: `callgate firewall export … | nft -f -`)
    callgate dialplan export --server NAME [--kind dialplan|interface]
                                             the active version updateDialplan / restoreDialplan
                                             made (the Asterisk's `#exec` line, docs/ami.md)

The AMI secret is kept encrypted (the SIP passwords' key, CALLGATE_SECRET_FILE); give it
on standard input (`--ami-secret-stdin`) to keep it out of the shell history and `ps`.
A running `callgate serve` follows the table within CALLGATE_AMI_REFRESH_S.
"""

from __future__ import annotations

import argparse
import json
import sys

from billing_core.asterisk.bans import nft_script
from billing_core.asterisk.files import DIALPLAN, INTERFACE, active_file
from billing_core.asterisk.servers import DEFAULT_AMI_PORT, ServerSpec, add_server, list_servers, remove_server
from billing_core.container import Services


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    asterisk = sub.add_parser("asterisk", help="Asterisk servers (AMI)").add_subparsers(
        dest="asterisk_command", required=True
    )
    add = asterisk.add_parser("add", help="register an Asterisk server")
    add.add_argument("name")
    add.add_argument("--address", required=True, help="the server's IP address or host name")
    add.add_argument("--sip-server", action="append", default=[], dest="sip_servers",
                     help="a sip_server name SIP accounts give for it (repeat, or comma-separate); "
                          "default: the address")  # fmt: skip
    add.add_argument("--ami-host", default=None, help="AMI host (default: the address)")
    add.add_argument("--ami-port", type=int, default=DEFAULT_AMI_PORT)
    add.add_argument("--ami-user", default="", help="manager.conf user; empty: no AMI for this server")
    secret = add.add_mutually_exclusive_group()
    secret.add_argument("--ami-secret", default=None)
    secret.add_argument("--ami-secret-stdin", action="store_true", help="read the AMI secret from one line of stdin")
    add.add_argument("--disabled", action="store_true", help="registered, but callgate does not connect to it")
    add.add_argument("--replace", action="store_true", help="overwrite the server of this name")
    asterisk.add_parser("list", help="list the servers (never the AMI secret)")
    remove = asterisk.add_parser("remove", help="remove a server and its sip_server names")
    remove.add_argument("name")


def add_firewall_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    firewall = sub.add_parser("firewall", help="bans for the Asterisk servers' firewalls").add_subparsers(
        dest="firewall_command", required=True
    )
    export = firewall.add_parser("export", help="print an nftables script of one server's bans")
    export.add_argument("--server", required=True, help="the Asterisk server's name (callgate asterisk list)")


def add_dialplan_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dialplan = sub.add_parser("dialplan", help="the dialplan versions of the Asterisk servers").add_subparsers(
        dest="dialplan_command", required=True
    )
    export = dialplan.add_parser("export", help="print the active version of a server's dialplan (or interface)")
    export.add_argument("--server", required=True, help="the Asterisk server's name (callgate asterisk list)")
    export.add_argument("--kind", choices=(DIALPLAN, INTERFACE), default=DIALPLAN)


async def dialplan_export(services: Services, args: argparse.Namespace) -> int:
    """Nothing on stdout unless there is an active version: an `#exec` line must never
    include an error message in the dialplan."""
    names = {row["name"] for row in await list_servers(services.db)}
    if args.server not in names:
        print(f"error: no Asterisk server {args.server!r} (callgate asterisk list)", file=sys.stderr)
        return 2
    found = await active_file(services.db, args.server, args.kind)
    if found is None:
        print(f"error: {args.server} has no active {args.kind} version (updateDialplan)", file=sys.stderr)
        return 1
    sys.stdout.write(found.content if found.content.endswith("\n") else found.content + "\n")
    return 0


async def firewall_export(services: Services, args: argparse.Namespace) -> int:
    names = {row["name"] for row in await list_servers(services.db)}
    if args.server not in names:
        print(f"error: no Asterisk server {args.server!r} (callgate asterisk list)", file=sys.stderr)
        return 2
    sys.stdout.write(nft_script(args.server, await services.bans.list()))
    return 0


async def run(services: Services, args: argparse.Namespace) -> int:
    if args.asterisk_command == "add":
        secret = sys.stdin.readline().rstrip("\r\n") if args.ami_secret_stdin else args.ami_secret
        spec = ServerSpec(
            name=args.name,
            address=args.address,
            ami_host=args.ami_host or args.address,
            ami_port=args.ami_port,
            ami_user=args.ami_user,
            ami_secret=secret,
            sip_servers=tuple(args.sip_servers or [args.address]),
            enabled=not args.disabled,
        )
        await add_server(services.db, services.box, spec, replace=args.replace)
        print(f"asterisk {args.name} saved")
        return 0
    if args.asterisk_command == "remove":
        still_named = await remove_server(services.db, args.name)
        note = f" ({still_named} SIP accounts still name it)" if still_named else ""
        print(f"asterisk {args.name} removed{note}")
        return 0
    for row in await list_servers(services.db):
        print(json.dumps(row))
    return 0
