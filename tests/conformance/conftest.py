"""The conformance zoo, built once per session in a real sqlite registry."""

from __future__ import annotations

import pytest

from tests.conformance.zoo import Zoo, build_zoo


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return build_zoo(tmp_path_factory.mktemp("zoo"))
