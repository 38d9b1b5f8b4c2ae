"""Answers the guarding middleware gives before any route runs, in the shape the path's clients parse.

On the KServe protocol paths (/v1/, /v2/) an error is {"error": "..."} with the protocols' status
(401 stays 401, so the challenge means something); everywhere else it is the service's one shape.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Scope

from model_api.errors import ServingError, Unauthorized, render
from model_api.responses import JSONResponse

_PROTOCOL_PREFIXES = ("/v1/", "/v2/")


def route_path(scope: Scope) -> str:
    """The request's path below the app's root path (what the routes match)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def refusal(error: ServingError, scope: Scope) -> Response:
    """The response to `error` for this request, with its request id when the service answers."""
    if route_path(scope).startswith(_PROTOCOL_PREFIXES):
        from model_api.api.protocol import message_of, status_of

        status = error.status_code if isinstance(error, Unauthorized) else status_of(error)
        return JSONResponse({"error": message_of(error)}, status_code=status)
    rid = scope.get("state", {}).get("request_id")
    return render(error, rid if isinstance(rid, str) else None)
