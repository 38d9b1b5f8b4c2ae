"""Request ids: taken from X-Request-ID when the client sends a sane one, generated otherwise."""

from __future__ import annotations

import random
import re

from starlette.types import Scope

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


_IDS = random.Random()  # noqa: S311 - seeded from os.urandom; ids need not be secret


def request_id(scope: Scope) -> bytes:
    """The client's X-Request-ID when it is sane, else a new id; kept in the scope's state as
    `request_id` (a str) for everything after the edge layer, which echoes it as X-Request-ID."""
    rid: bytes | None = None
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            rid = value if _SAFE_ID.match(value) else None
            break
    if rid is None:
        # 128 random bits from a generator seeded by the OS: unique enough to find a log line,
        # and far cheaper than uuid4's os.urandom call on every request.
        rid = b"%032x" % _IDS.getrandbits(128)
    scope.setdefault("state", {})["request_id"] = rid.decode()
    return rid
