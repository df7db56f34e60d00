"""Test setup: a real FiftyOne database in a temporary folder, and a private HITTS_HOME per test."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

# Must happen before anything imports fiftyone: the embedded database lives in this temp folder.
_DB_DIR = tempfile.mkdtemp(prefix="hitts-test-db-")
os.environ["FIFTYONE_DATABASE_DIR"] = _DB_DIR
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

DATA = Path(__file__).resolve().parent / "data"  # small real files shipped with the tests


@pytest.fixture(autouse=True)
def hitts_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "hitts-home"
    monkeypatch.setenv("HITTS_HOME", str(home))
    return home


@pytest.fixture
def dataset_name() -> str:
    """A fresh dataset name; the dataset is deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
