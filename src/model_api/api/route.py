"""The route class of the prediction routes: FastAPI's OpenAPI document, Starlette's per-request cost.

FastAPI solves an endpoint's dependencies and validates its parameters on every request, and wraps
it in two exit stacks: about 35 us a request, as much as parsing and checking a request's rows
(measured in process, demo model on the fast path, single-row requests). A prediction endpoint
takes only the request, the data plane and string path (or optional query) parameters, and
answers with a Response, so `DataPlaneRoute` hands it those itself; FastAPI still reads the
endpoint's signature and decorator for the OpenAPI document. An endpoint taking anything else is
served the FastAPI way.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response

from model_api.dataplane import DataPlane

Endpoint = Callable[..., Awaitable[Response]]
Argument = Callable[[Request], Any]


def _plane(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.dataplane
    return plane


def _request(request: Request) -> Request:
    return request


def _path_param(name: str) -> Argument:
    return lambda request: request.path_params.get(name)


def _query_param(name: str) -> Argument:
    return lambda request: request.query_params.get(name)


def _argument(parameter: inspect.Parameter, path_params: set[str]) -> Argument | None:
    """How to get one endpoint parameter from the request alone, or None when FastAPI must."""
    annotation = parameter.annotation
    if annotation is Request:
        return _request
    if typing.get_origin(annotation) is typing.Annotated and typing.get_args(annotation)[0] is DataPlane:
        return _plane
    optional = parameter.default is None and set(typing.get_args(annotation)) == {str, type(None)}
    if parameter.name in path_params and (annotation is str or optional):
        return _path_param(parameter.name)
    if optional:  # what FastAPI makes of it: an optional query parameter
        return _query_param(parameter.name)
    return None


Handler = Callable[[Request], Awaitable[Response]]


def direct_handler(endpoint: Endpoint, path_params: set[str]) -> Handler | None:
    """A handler calling `endpoint` with arguments taken straight from the request, or None when
    the endpoint takes a parameter FastAPI has to parse or does not promise a Response."""
    signature = inspect.signature(endpoint, eval_str=True)
    returns = signature.return_annotation
    if not (isinstance(returns, type) and issubclass(returns, Response)):
        return None
    arguments: dict[str, Argument] = {}
    for name, parameter in signature.parameters.items():
        argument = _argument(parameter, path_params)
        if argument is None:
            return None
        arguments[name] = argument
    items = tuple(arguments.items())

    async def handler(request: Request) -> Response:
        return await endpoint(**{name: argument(request) for name, argument in items})

    return handler


class DataPlaneRoute(APIRoute):
    """An APIRoute whose endpoint, when it takes only the request, the data plane (`DataPlaneDep`),
    `str` path parameters and `str | None = None` query parameters and returns a Response, is
    called without FastAPI's dependency solving; errors it raises reach the app's exception
    handlers as from any route."""

    def __init__(self, path: str, endpoint: Endpoint, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        handler = direct_handler(endpoint, set(self.param_convertors))
        if handler is not None:
            self.app = request_response(handler)
