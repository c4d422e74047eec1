"""How secrets are kept.

- User web passwords arrive as md5 hex (the spec's convention). We store scrypt(md5, salt):
  slow, salted, never reversible. The md5 itself is never stored nor logged.
- API keys are stored as sha256 of the key (they are random 128-bit tokens, so a fast
  hash is enough) plus a short hint for listings.
- SIP passwords and DISA PINs must be given back to Asterisk/portals (getExtensionInfo),
  so they are encrypted with Fernet under a key kept outside the database.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

# scrypt cost; the parameters are stored in each hash, so changing it never breaks logins.
_SCRYPT_N = int(os.environ.get("CALLGATE_PASSWORD_HASH_COST", str(2**14)))
_SCRYPT_R = 8
_SCRYPT_P = 1


def md5_hex(clear: str) -> str:
    """What a client sends for a password (the spec's convention)."""
    return hashlib.md5(clear.encode()).hexdigest()


def hash_password(md5_password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        md5_password.lower().encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(md5_password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(
        md5_password.lower().encode(),
        salt=bytes.fromhex(salt_hex),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(digest_hex) // 2,
    )
    return hmac.compare_digest(digest.hex(), digest_hex)


def new_api_key() -> str:
    return secrets.token_hex(16)


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class SecretBox:
    """Reversible encryption for secrets Asterisk needs back (SIP passwords, PINs)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_file(cls, path: str) -> SecretBox:
        file = Path(path)
        if not file.exists():
            file.write_bytes(Fernet.generate_key())
            file.chmod(0o600)
        return cls(file.read_bytes().strip())

    def encrypt(self, clear: str) -> str:
        return self._fernet.encrypt(clear.encode()).decode()

    def decrypt(self, token: str | None) -> str:
        if not token:
            return ""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            return ""
