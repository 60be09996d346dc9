"""The default model's checkpoint (its tokenizer and vocabulary), for the grammar-backend tests."""

from __future__ import annotations

import pytest

from heron.loader import ModelNotFoundError, default_model_path, load_checkpoint
from tests.conftest import need


@pytest.fixture(scope="module")
def checkpoint():
    try:
        default_model_path()
    except ModelNotFoundError as e:
        need(False, str(e))
    return load_checkpoint(None)
