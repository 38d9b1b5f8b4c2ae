"""Request ids: taken from X-Request-ID when the client sends a sane one, generated otherwise."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from starlette.types import Scope

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


_IDS = random.Random()  # noqa: S311 - seeded from os.urandom; ids need not be secret


def request_id(scope: Scope) -> bytes:
    """The client's X-Request-ID when it is sane, else a new id; kept in the scope's state as
    `request_id` (a str) for everything after the edge layer, which echoes it as X-Request-ID."""
    rid = request_id_of(scope["headers"])
    scope.setdefault("state", {})["request_id"] = rid.decode()
    return rid


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The request's id from its headers (names lower-cased, as in an ASGI scope): the client's
    X-Request-ID when it is sane (1-128 of letters, digits and `._:-`), else 32 new hex digits."""
    for key, value in headers:
        if key == b"x-request-id":
            if _SAFE_ID.match(value):
                return value
            break
    # 128 random bits from a generator seeded by the OS: unique enough to find a log line, and
    # far cheaper than uuid4's os.urandom call on every request.
    return b"%032x" % _IDS.getrandbits(128)
