"""Time-ordered ids (UUIDv7, RFC 9562) for sessions and messages.

Time-ordered keys land next to each other in B-tree indexes, so inserts touch few pages; they
also sort by creation time, which makes them good keyset cursors.
"""

from __future__ import annotations

import random
import time
import uuid

# Not a CSPRNG on purpose: ids must be unique, not secret (access is checked per user), and
# os.urandom per id costs a syscall on the ingest hot path. The module-level generator is
# reseeded in forked workers.


def new_id(unix_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, version, variant and 74 random bits."""
    return uuid.UUID(int=_v7(time.time_ns() // 1_000_000 if unix_ms is None else unix_ms))


def new_id_text() -> str:
    """`str(new_id())` without the UUID object: the ingest path needs only the text, once
    per message, and formatting the digits directly is cheaper than building a UUID."""
    digits = f"{_v7(time.time_ns() // 1_000_000):032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _v7(unix_ms: int) -> int:
    """The 128 bits of a UUIDv7 for this millisecond, with fresh random bits."""
    rand = random.getrandbits(74)
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 62) << 64  # 12 bits rand_a
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & ((1 << 62) - 1)  # 62 bits rand_b
    return value
