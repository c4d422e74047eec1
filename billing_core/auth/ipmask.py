"""Allowed-source matching for API keys and bans.

The spec's form is a per-octet wildcard (`178.1.1.*`, `*.*.*.*`) or an exact address;
a key's `source` may list several, separated by commas or spaces. CIDR (`10.0.0.0/8`)
is accepted too, since operators expect it.
"""

from __future__ import annotations

import ipaddress
import re

_SPLIT = re.compile(r"[,\s;]+")


def parse_masks(source: str) -> tuple[str, ...]:
    return tuple(part for part in _SPLIT.split(source.strip()) if part)


def _octet_wildcard(ip: str, mask: str) -> bool:
    ip_parts = ip.split(".")
    mask_parts = mask.split(".")
    if len(ip_parts) != 4 or len(mask_parts) != 4:
        return False
    return all(m == "*" or m == p for p, m in zip(ip_parts, mask_parts, strict=True))


def ip_matches(ip: str, mask: str) -> bool:
    ip = ip.strip()
    if ip.startswith("::ffff:"):
        ip = ip[len("::ffff:") :]  # IPv4-mapped IPv6 from a dual-stack socket
    if mask == "*":
        return True
    if "/" in mask:
        try:
            return ipaddress.ip_address(ip) in ipaddress.ip_network(mask, strict=False)
        except ValueError:
            return False
    if "*" in mask:
        return _octet_wildcard(ip, mask)
    return ip == mask


def ip_allowed(ip: str, source: str) -> bool:
    return any(ip_matches(ip, mask) for mask in parse_masks(source))


def valid_mask(mask: str) -> bool:
    if mask == "*":
        return True
    if "/" in mask:
        try:
            ipaddress.ip_network(mask, strict=False)
        except ValueError:
            return False
        return True
    if "*" in mask:
        parts = mask.split(".")
        return len(parts) == 4 and all(p == "*" or (p.isdigit() and int(p) < 256) for p in parts)
    try:
        ipaddress.ip_address(mask)
    except ValueError:
        return False
    return True


def mask_addresses(mask: str) -> int:
    """How many IPv4/IPv6 addresses a mask admits (an invalid mask admits none)."""
    if not valid_mask(mask):
        return 0
    if mask == "*":
        return 2**32
    if "/" in mask:
        return int(ipaddress.ip_network(mask, strict=False).num_addresses)
    if "*" in mask:
        return int(256 ** mask.split(".").count("*"))
    return 1
