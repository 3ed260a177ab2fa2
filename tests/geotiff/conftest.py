from __future__ import annotations

import pytest

from tests.geotiff import helpers


@pytest.fixture(scope="session")
def model():
    return helpers.load_model()


@pytest.fixture(scope="session")
def processor():
    return helpers.make_processor()
