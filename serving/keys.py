"""API keys (``CAIRN_API_KEYS``) and the loopback check: what `cairn serve` validates before it starts anything.

Kept apart from ``serving.security`` (the access middleware) so that validating them imports nothing
heavy: `cairn serve` checks them first, then starts Redis and the model while the app is built.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cairn.errors import UnsafeBind


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: ``name:key`` gives a key a name (logs, metrics); a name is letters, digits, ``_ . -``, at most 64.
KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One accepted API key: its name, the secret, and the owner id its sessions are kept under."""

    name: str
    secret: bytes = field(repr=False)

    @property
    def owner(self) -> str:
        """The key's SHA-256, shortened: what a session records of the key that created it (never the key)."""
        return hashlib.sha256(self.secret).hexdigest()[:24]


def parse_keys(values: Iterable[str]) -> list[ApiKey]:
    """Return the keys of ``CAIRN_API_KEYS`` entries (``key`` or ``name:key``), refusing unsafe ones.

    An empty or blank key would be accepted from a client that sends none (``Authorization: Bearer ``),
    and whitespace around a key is a copy-paste slip, never part of it; a key or name given twice is
    a slip too. Each is an ``UnsafeBind`` (exit 11) naming the entry by position, never by its value.
    """
    keys: list[ApiKey] = []
    for number, value in enumerate(values, start=1):
        name, sep, secret = value.partition(":")
        if not (sep and KEY_NAME.fullmatch(name)):
            name, secret = "", value
        where = f"CAIRN_API_KEYS entry {number}" + (f" ({name!r})" if name else "")
        if not secret.strip():
            raise UnsafeBind(f"{where} is empty: a blank key would let in a client that sends none",
                             "remove it, or give every entry a long random key")  # fmt: skip
        if secret != secret.strip():
            raise UnsafeBind(f"{where} starts or ends with whitespace", "remove the spaces around the key")
        if any(hmac.compare_digest(secret.encode(), k.secret) for k in keys):
            raise UnsafeBind(f"{where} repeats an earlier key", "give each client its own key, once")
        if name and any(k.name == name for k in keys):
            raise UnsafeBind(f"{where} repeats the name {name!r}", "give each key its own name")
        keys.append(ApiKey(name or f"key-{len(keys) + 1}", secret.encode()))
    return keys
