"""The early exit of admission control: past the bound, a prediction request is refused before anything else.

`DataPlane.admit` decides admission for every prediction route. Under a spike most requests are
refused, and what a refusal costs decides how much of the core is left for the admitted ones, so
the refusal is answered as early as a server allows:

- `EarlyRefusal`, in the HTTP protocol (`http_protocol.py`, which `model-api serve` runs): as soon
  as a request's headers are parsed, before an ASGI task exists, the answer is written from bytes
  rendered once per path (wrk against a worker that refuses everything: 61,000 refusals a second
  on one core, about 16 us each, against 13,000-15,000 through ASGI; 26-27 us of the core each at
  an open-loop 15,000 a second, where every answer also wakes an idle client);
- `refusal`, in the edge layer (`edge.py`), for a server running another HTTP protocol (uvicorn's
  own, a test client), a pipelined request that arrives while another is answered, and one that
  asks for `100-continue`.

Both answer the same bytes but the date (the first renders its answer once with the edge's own
renderer, `error_response`, and security headers), carry the request id, and count the refusal
like any answer (`http_requests_total{status="503"}`, `errors_total`,
`requests_shed_total{reason="overloaded"}`); the access line is logged at debug level only (a
line per refusal would flood the log when the pod struggles). A path not known here as a prediction
route is refused by `admit` all the same, after routing.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from typing import Any, NamedTuple

import httptools
from starlette.types import Scope

from model_api.api.errors import error_response, route_path
from model_api.dataplane import OVERLOADED, DataPlane
from model_api.errors import Overloaded
from model_api.http_protocol import Pace, TurnPacer
from model_api.middleware.access import AccessLog
from model_api.middleware.request_id import request_id_of
from model_api.middleware.security_headers import with_security_headers

PREDICTION_PATHS = re.compile(
    r"/predict|/invocations|/v1/models/[^/]+:predict|/v2/models/[^/]+(?:/versions/[^/]+)?/infer"
)
"""The prediction routes (POST): /predict, MLflow's /invocations, KServe V1 :predict, V2 infer."""


def refusal(plane: DataPlane, scope: Scope) -> Overloaded | None:
    """The 503 `overloaded` (with Retry-After) for a POST on a prediction route while the data
    plane holds `max_in_flight` requests; None for anything else."""
    if plane.full() and scope["method"] == "POST" and PREDICTION_PATHS.fullmatch(route_path(scope)):
        return plane.refuse()
    return None


class _Answer(NamedTuple):
    """A path's refusal, rendered: the body around the request id (the KServe shapes have none)."""

    route: str
    head: bytes
    """The headers before Content-Length, in the order the edge layer sends them (Retry-After)."""
    tail: bytes
    """The headers after it: content type, the security headers."""
    before: bytes
    after: bytes | None
    """None when the body has no request id in it."""


_NOT_REFUSED = _Answer("", b"", b"", b"", None)
_PLACEHOLDER = "0" * 32
"""Stands for the request id while a path's answer is rendered (a generated id's shape)."""
PATHS_REMEMBERED = 1024
"""Distinct paths whose answer is kept; past it the memory starts over."""


class EarlyRefusal:
    """The refusal of a prediction request past the bound, answered by the HTTP protocol from the
    request line and headers alone. `answer` gives the whole HTTP answer (bytes) or None when the
    request is not refused; the protocol writes it and discards the body as it arrives.

    A path's answer is rendered once, by the error renderer itself (`error_response`, with a
    placeholder for the request id), with the security headers the edge layer adds, and
    remembered; each refusal splices in its request id (the client's sane X-Request-ID or a new
    one) and the server's Date header, and counts itself as the edge layer would."""

    def __init__(self, plane: DataPlane, access: AccessLog, app: Any) -> None:
        self.plane = plane
        self.access = access
        self.app = app
        """The Starlette app whose routes name the route template (the `handler` label)."""
        self._answers: dict[tuple[str, bytes], _Answer] = {}
        self._defaults: tuple[list[tuple[bytes, bytes]] | None, bytes] = (None, b"")
        """The server's default headers last seen, and the status line with them (`_status_line_and`)."""
        per_turn = plane.settings.pace_per_turn
        self._pacer = (
            TurnPacer(Pace(per_turn, plane.settings.pace_turn_ms / 1000, least=max(1, per_turn // 4)), plane)
            if per_turn
            else None
        )

    def answer(
        self,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        root_path: str,
        default_headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> bytes | None:
        """The 503 answer to a POST on a prediction route while the data plane is full, else None.

        `url` is the request target as received, `headers` its headers (names lower-cased),
        `root_path` the server's, `default_headers` the ones the server puts on every answer
        (Date); without `keep_alive` the answer says `connection: close`."""
        if method != b"POST" or not self.plane.full():
            return None
        started = time.perf_counter()
        rendered = self._rendered(url, root_path)
        if rendered is _NOT_REFUSED:
            return None
        rid = request_id_of(headers)
        self.plane.shed()
        after = rendered.after
        body = rendered.before if after is None else b"".join((rendered.before, rid, after))
        status_and_defaults = self._status_line_and(default_headers)
        answer = b"%s%scontent-length: %d\r\n%sx-request-id: %s\r\n%s\r\n%s" % (
            status_and_defaults,
            rendered.head,
            len(body),
            rendered.tail,
            rid,
            b"" if keep_alive else b"connection: close\r\n",
            body,
        )
        self.access.refused(rendered.route, rid, time.perf_counter() - started)
        return answer

    def _status_line_and(self, default_headers: list[tuple[bytes, bytes]]) -> bytes:
        """The status line and the server's default headers, rendered once per list: uvicorn
        renders a new list (its Date header) once a second, and every answer in between shares it."""
        rendered_for, rendered = self._defaults
        if rendered_for is not default_headers:
            rendered = b"HTTP/1.1 503 Service Unavailable\r\n" + b"".join(
                b"%s: %s\r\n" % header for header in default_headers
            )
            self._defaults = (default_headers, rendered)
        return rendered

    def pacer(self, method: bytes, url: bytes, root_path: str) -> TurnPacer | None:
        """The pacer for a request `answer` did not refuse: while the worker sheds
        (`DataPlane.shedding`), a POST on a prediction route starts through it, and so does every
        prediction request while it holds some (they start in order); None otherwise, and then the
        pace restarts from its most (`Pace.restart`)."""
        pacer = self._pacer
        if pacer is None or method != b"POST":
            return None
        if not (pacer.holding or self.plane.shedding()):
            pacer.pace.restart()  # no spike now: the next starts from the full pace
            return None
        return None if self._rendered(url, root_path) is _NOT_REFUSED else pacer

    def _rendered(self, url: bytes, root_path: str) -> _Answer:
        """The refusal of a POST on `url` (the request target as received), rendered once per path."""
        if b"?" in url or not url.startswith(b"/"):
            url = httptools.parse_url(url).path  # the path alone keys the answers
        key = (root_path, url)
        rendered = self._answers.get(key)
        if rendered is None:
            rendered = self._render(root_path, url)
            if len(self._answers) >= PATHS_REMEMBERED:
                self._answers.clear()
            self._answers[key] = rendered
        return rendered

    def _render(self, root_path: str, url: bytes) -> _Answer:
        """The refusal of a POST on `url` (the path as received, no query), rendered as the edge
        layer renders it; `_NOT_REFUSED` for a path that is not a prediction route."""
        try:
            path = url.decode("ascii")
        except UnicodeDecodeError:
            return _NOT_REFUSED
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope: dict[str, Any] = {
            "type": "http",
            "method": "POST",
            "path": root_path + path,
            "raw_path": (root_path + path).encode(),
            "root_path": root_path,
            "query_string": b"",
            "headers": [],
            "state": {"request_id": _PLACEHOLDER},
            "app": self.app,
        }
        if not PREDICTION_PATHS.fullmatch(route_path(scope)):
            return _NOT_REFUSED
        response = error_response(Overloaded(OVERLOADED), scope)
        headers = b"".join(
            b"%s: %s\r\n" % h for h in with_security_headers(response.raw_headers, cacheable=False)
        )
        head, _, tail = headers.partition(b"content-length: %d\r\n" % len(response.body))
        before, sep, after = bytes(response.body).partition(_PLACEHOLDER.encode())
        return _Answer(self.access.route_template(scope), head, tail, before, after if sep else None)
