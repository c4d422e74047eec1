"""Bans by Asterisk server (spec "Data security"): which servers a user's bans are on,
and the nftables script that puts one server's bans into its firewall.

A ban's source is the server that wants the address blocked (its name in the servers
table), `whitelist` for addresses never to block, or callgate's own `auto`/`manual`
(billing_core.directory.bans). A user's servers are those its SIP accounts name, and
those of the users it manages: flushBans and getBans below administrator level see
only those.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_core.asterisk.tables import asterisk_servers, asterisk_sip_servers
from billing_core.clock import as_utc, utcnow
from billing_core.directory.bans import AUTO, WHITELIST
from billing_core.directory.ownership import managed_usernames
from billing_core.directory.tables import sip_extensions, users
from billing_core.errors import ApiError, ErrorCode

NFT_TABLE = "callgate_bans"


async def servers_of(conn: AsyncConnection, username: str) -> list[str]:
    """Names of the servers the SIP accounts of `username` and of its users name."""
    names = sorted(await managed_usernames(conn, username))
    query = (
        select(asterisk_servers.c.name)
        .distinct()
        .select_from(
            sip_extensions.join(users, users.c.id == sip_extensions.c.user_id)
            .join(asterisk_sip_servers, asterisk_sip_servers.c.name == func.lower(sip_extensions.c.sip_server))
            .join(asterisk_servers, asterisk_servers.c.id == asterisk_sip_servers.c.server_id)
        )
        .where(users.c.username.in_(names))
        .order_by(asterisk_servers.c.name)
    )
    return list((await conn.execute(query)).scalars())


async def source_server(conn: AsyncConnection, source: str) -> str:
    """banIP's `source`: a server's name or address (or one of its sip_server names) → its name."""
    wanted = source.strip().lower()
    query = (
        select(asterisk_servers.c.name)
        .select_from(asterisk_servers.outerjoin(asterisk_sip_servers))
        .where(
            or_(
                func.lower(asterisk_servers.c.name) == wanted,
                func.lower(asterisk_servers.c.address) == wanted,
                asterisk_sip_servers.c.name == wanted,
            )
        )
        .limit(1)
    )
    name = (await conn.execute(query)).scalar()
    if name is None:
        raise ApiError(ErrorCode.E_SIP_SERVER_NOT_EXIST, "source names no Asterisk server (nor `whitelist`)")
    return str(name)


def target_address(target: str, *, mask: bool) -> str:
    """A ban's target: one IPv4/IPv6 address; a whitelist row may also be a network."""
    text = target.strip()
    try:
        if mask and "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ApiError(ErrorCode.E_INVALID_ARGUMENT, "target must be an IP address") from None


def nft_script(server: str, rows: Iterable[dict[str, Any]], now: datetime | None = None) -> str:
    """An `nft -f` script holding `server`'s active bans (and every whitelist entry first),
    replacing what an earlier run loaded: run it from cron or fail2ban on that server."""
    now = now or utcnow()
    allow: dict[int, list[str]] = {4: [], 6: []}
    drop: dict[int, list[str]] = {4: [], 6: []}
    for row in rows:
        source, expires = row["source"], as_utc(_parse(row["expires_at"]))
        if source == WHITELIST:
            net = ipaddress.ip_network(row["ip"], strict=False)
            allow[net.version].append(str(net))
        elif source in (server, AUTO, "manual") and (expires is None or expires > now):
            address = ipaddress.ip_address(row["ip"])
            left = "" if expires is None else f" timeout {max(1, int((expires - now).total_seconds()))}s"
            drop[address.version].append(f"{address}{left}")
    lines = [
        "#!/usr/sbin/nft -f",
        f"# callgate bans of Asterisk server {server}, {now.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        f"table inet {NFT_TABLE}",  # so that the delete below never fails on a first run
        f"delete table inet {NFT_TABLE}",
        f"table inet {NFT_TABLE} {{",
    ]
    for version in (4, 6):
        kind = "ipv4_addr" if version == 4 else "ipv6_addr"
        lines += _set(f"whitelist_v{version}", kind, "flags interval;", allow[version])
        lines += _set(f"banned_v{version}", kind, "flags timeout;", drop[version])
    lines += [
        "    chain input {",
        "        type filter hook input priority -10; policy accept;",
        "        ip saddr @whitelist_v4 accept",
        "        ip6 saddr @whitelist_v6 accept",
        "        ip saddr @banned_v4 drop",
        "        ip6 saddr @banned_v6 drop",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _set(name: str, kind: str, flags: str, elements: list[str]) -> list[str]:
    body = [f"    set {name} {{", f"        type {kind}; {flags}"]
    if elements:  # nft refuses an empty `elements = { }`
        body.append(f"        elements = {{ {', '.join(elements)} }}")
    return [*body, "    }"]


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
