"""/docs in a real headless Chromium with every non-loopback host unresolvable: it must render."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from model_api.main import create_app
from model_api.settings import Settings
from tests.support import server_in_thread

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM, "chromium is installed by `make test` (Debian package chromium)"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            # Offline: any host other than the server's loopback address fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.browser
def test_docs_render_the_predict_operation_offline(registry: Any, tmp_path: Path) -> None:
    app = create_app(Settings(tracking_uri=registry.tracking_uri))
    with server_in_thread(app) as url:
        result = chromium(f"{url}/docs", tmp_path / "profile", "--dump-dom")
        dom = result.stdout
        assert 'class="swagger-ui' in dom, result.stderr[-2000:]
        # Rendered by Swagger UI's JavaScript from our /openapi.json, not present in the HTML we send.
        assert 'data-path="/predict"' in dom
        assert 'data-path="/model/info"' in dom
        assert "Model API" in dom
        shot = chromium(
            f"{url}/docs",
            tmp_path / "profile2",
            "--window-size=1280,1600",
            f"--screenshot={tmp_path / 'docs.png'}",
        )
        assert shot.returncode == 0
        assert (tmp_path / "docs.png").stat().st_size > 20_000, "a blank page is a few kilobytes"
