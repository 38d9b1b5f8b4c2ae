"""Swagger UI served from the package's own assets, so /docs renders with no internet access."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from model_api.middleware.security_headers import docs_csp

ASSETS = Path(fastapi_offline.__file__).parent / "static"
STATIC_URL = "/docs-assets"


def install_docs(app: FastAPI) -> None:
    """Mount the Swagger UI assets and serve /docs from them."""
    app.mount(STATIC_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        )
        page.headers["content-security-policy"] = docs_csp(bytes(page.body))
        return page
