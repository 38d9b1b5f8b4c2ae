"""DataPlaneRoute: prediction endpoints called without FastAPI's dependency solving, same arguments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from starlette.responses import JSONResponse, Response

from model_api.api.body import DataPlaneDep
from model_api.api.route import DataPlaneRoute, direct_handler

PLANE = object()


async def infer(name: str, request: Request, plane: DataPlaneDep, version: str | None = None) -> Response:
    return JSONResponse({"name": name, "version": version, "plane": plane is PLANE, "path": request.url.path})


async def counted(n: int) -> Response:
    return JSONResponse({"n": n})


async def untyped(request: Request) -> dict[str, Any]:
    return {"ok": True}


def app() -> FastAPI:
    router = APIRouter(route_class=DataPlaneRoute)
    router.post("/models/{name}/infer")(infer)
    router.post("/models/{name}/versions/{version}/infer")(infer)
    router.post("/count/{n}")(counted)
    router.post("/untyped")(untyped)
    application = FastAPI()
    application.state.dataplane = PLANE
    application.include_router(router)
    return application


def test_a_prediction_endpoint_is_called_directly() -> None:
    assert direct_handler(infer, {"name"}) is not None
    assert direct_handler(infer, {"name", "version"}) is not None
    # FastAPI's way for anything it has to parse (an int) or shape (a dict answer)
    assert direct_handler(counted, {"n"}) is None
    assert direct_handler(untyped, set()) is None


def test_direct_calls_get_what_fastapi_would_give() -> None:
    with TestClient(app()) as client:
        assert client.post("/models/m/infer").json() == {
            "name": "m",
            "version": None,
            "plane": True,
            "path": "/models/m/infer",
        }
        # an optional parameter outside the path is a query parameter, as FastAPI reads it
        assert client.post("/models/m/infer?version=3").json()["version"] == "3"
        assert client.post("/models/m/versions/7/infer").json()["version"] == "7"
        # the endpoints FastAPI still serves keep its validation
        assert client.post("/count/4").json() == {"n": 4}
        assert client.post("/count/four").status_code == 422
        assert client.post("/untyped").json() == {"ok": True}


def test_the_openapi_document_still_describes_direct_routes() -> None:
    with TestClient(app()) as client:
        paths = client.get("/openapi.json").json()["paths"]
    parameters = {p["name"]: p["in"] for p in paths["/models/{name}/infer"]["post"]["parameters"]}
    assert parameters == {"name": "path", "version": "query"}
