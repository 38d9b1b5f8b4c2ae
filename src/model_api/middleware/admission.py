"""The early exit of admission control: past the bound, a prediction request is refused before anything else.

`DataPlane.admit` decides admission for every prediction route; the edge layer asks `refusal`
first, before routing, before the body is read, so a refusal costs as little of the core as a
request can: under a spike most requests are refused, and what a refusal costs decides how much of
the core is left for the admitted ones. The refusal still carries the request id and the security
headers and is counted like any answer (`http_requests_total{status="503"}`, `errors_total`,
`requests_shed_total{reason="overloaded"}`), but its access line is logged at debug level only (a
line per refusal would flood the log when the pod struggles). A path not known here as a
prediction route is refused by `admit` all the same, after routing.
"""

from __future__ import annotations

import re

from starlette.types import Scope

from model_api.api.errors import route_path
from model_api.dataplane import DataPlane
from model_api.errors import Overloaded

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
