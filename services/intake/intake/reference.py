"""Short human incident references ('OSI-7K2QFM'): random, so they carry no personal data or order."""

from __future__ import annotations

import secrets
from collections.abc import Callable

# Crockford's base32: no I, L, O or U, so a reference read aloud or copied by hand survives.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
PREFIX = "OSI-"
LENGTH = 6

ReferenceFactory = Callable[[], str]


def new_reference() -> str:
    # 32 letters: five random bits each, all drawn at once (one read of the system's random source, not six).
    bits = secrets.randbits(5 * LENGTH)
    return PREFIX + "".join(ALPHABET[(bits >> (5 * i)) & 31] for i in range(LENGTH))
