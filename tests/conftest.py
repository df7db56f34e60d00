"""Test setup: a real FiftyOne database in a temporary folder, and a private HITTS_HOME per test."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def _start_private_mongod() -> None:
    """A MongoDB server of the tests' own, in a temp folder, on a free loopback port.

    FiftyOne's embedded database attaches to any FiftyOne database process already running on the
    machine, whatever FIFTYONE_DATABASE_DIR says, so tests would otherwise write into a user's
    database. This is also how a team's shared MongoDB is used (FIFTYONE_DATABASE_URI); a URI set
    by the caller wins.
    """
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        return
    spec = importlib.util.find_spec("fiftyone")
    mongod = Path(spec.submodule_search_locations[0]) / "db" / "bin" / "mongod"
    db_dir = Path(tempfile.mkdtemp(prefix="hitts-test-db-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(mongod),
            "--dbpath",
            str(db_dir),
            "--port",
            str(port),
            "--bind_ip",
            "127.0.0.1",
            "--nounixsocket",
            "--logpath",
            str(db_dir / "mongod.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(lambda: (proc.terminate(), proc.wait(30), shutil.rmtree(db_dir, True)))
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mongod exited with {proc.returncode}; see {db_dir / 'mongod.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    os.environ["FIFTYONE_DATABASE_URI"] = f"mongodb://127.0.0.1:{port}"


# Must happen before anything imports fiftyone.
_start_private_mongod()
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
