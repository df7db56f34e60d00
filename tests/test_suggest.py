"""Suggestions in a real FiftyOne dataset: fields, rounds, resume after kill -9, views, scoring,
and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from fiftyone import ViewField as F

from hitts.app import store
from hitts.app.cli import main
from hitts.model.data.label_io import read_label
from hitts.model.data.scenes import SceneConfig, generate_scenes

TASKS = ("semseg", "depth", "normal", "edge")
SUGGESTION_FIELDS = (
    store.pred_field,
    store.conf_field,
    store.mp_field,
    store.mf_field,
    store.fine_field,
)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(
        root, 24, SceneConfig(height=32, width=48), seed=9, val_fraction=0.25, progress=False
    )
    return root


@pytest.fixture(scope="module")
def checkpoint(scenes, tmp_path_factory) -> Path:
    """A small model trained on the scenes (one epoch is enough for structure tests)."""
    import uuid

    name = f"t-ck-{uuid.uuid4().hex[:8]}"
    run = tmp_path_factory.mktemp("run")
    assert main(["ingest", str(scenes), "--name", name, "--setting", "one-label", "-q"]) == 0
    assert (
        main(
            [
                "train",
                name,
                "--out",
                str(run),
                "--epochs",
                "1",
                "--channels",
                "16",
                "--threads",
                "1",
                "-q",
            ]
        )
        == 0
    )
    fo.delete_dataset(name)
    return run / "last.pt"


def _ingest(scenes, name, setting="one-label"):
    assert main(["ingest", str(scenes), "--name", name, "--setting", setting, "-q"]) == 0


def _label_path(label) -> Path:
    return Path(getattr(label, "map_path", None) or label.mask_path)


def _check_complete(ds, round_):
    """Every missing task is suggested in ``round_`` with all five files present; GT untouched."""
    for sample in ds:
        for t in TASKS:
            status = sample[store.status_field(t)]
            if sample[store.gt_field(t)] is not None:
                assert status == store.LABELED
                assert (
                    sample.has_field(store.pred_field(t)) is False
                    or sample[store.pred_field(t)] is None
                )
                continue
            assert status == store.SUGGESTED, (sample.key, t, status)
            assert sample[f"{t}_round"] == round_
            for field in SUGGESTION_FIELDS:
                assert _label_path(sample[field(t)]).is_file()
            assert 0 <= sample[f"{t}_coverage"] <= 1 and 0 < sample[f"{t}_confidence"] <= 1


def test_suggest_writes_every_missing_task(scenes, checkpoint, dataset_name, capsys):
    _ingest(scenes, dataset_name)
    assert main(["suggest", dataset_name, "--checkpoint", str(checkpoint), "-q"]) == 0
    assert "round 0:" in capsys.readouterr().out
    ds = fo.load_dataset(dataset_name)
    _check_complete(ds, 0)
    info = store.dataset_info(ds)
    sample = ds.match(F("depth_status") == store.SUGGESTED).first()
    depth = read_label(
        info.task("depth"), _label_path(sample.pred_depth), depth_unit=info.depth_unit
    )
    assert depth.shape == (32, 48) and depth.min() > 0
    conf = np.asarray(__import__("PIL.Image").Image.open(_label_path(sample.conf_depth))) / 255
    mp = np.asarray(__import__("PIL.Image").Image.open(_label_path(sample.mp_depth)))
    np.testing.assert_array_equal(
        mp.astype(bool), conf > sample.depth_tau + 0.5 / 255
    )  # M_p = conf > τ
    assert abs(sample.depth_coverage - mp.mean()) < 0.02
    assert "needs-review" in ds.list_saved_views()
    assert len(ds.load_saved_view("needs-review")) == len(ds.match(F("split") == "train"))
    assert any("depth_confidence" in k for k in ds.list_indexes())
    # same checkpoint again: the round is complete, nothing is rewritten
    assert main(["suggest", dataset_name, "--checkpoint", str(checkpoint), "-q"]) == 0
    assert "0 suggestions" in capsys.readouterr().out


def test_new_checkpoint_is_a_new_round_and_reviewed_labels_stay(
    scenes, checkpoint, tmp_path, dataset_name, capsys
):
    _ingest(scenes, dataset_name)
    assert main(["suggest", dataset_name, "--checkpoint", str(checkpoint), "-q"]) == 0
    ds = fo.load_dataset(dataset_name)
    reviewed = ds.match(F("depth_status") == store.SUGGESTED).first()
    reviewed.depth_status = store.ACCEPTED
    reviewed.save()
    old_file = _label_path(ds.match(F("semseg_status") == store.SUGGESTED).first().pred_semseg)
    other = tmp_path / "other.pt"
    other.write_bytes(checkpoint.read_bytes() + b"")  # same weights, another file: same digest
    assert main(["suggest", dataset_name, "--checkpoint", str(other), "-q"]) == 0
    assert "round 0:" in capsys.readouterr().out  # identical bytes: the same round
    import torch

    state = torch.load(checkpoint, weights_only=True)
    state["extra"] = {"note": "round 1"}
    torch.save(state, other)
    assert main(["suggest", dataset_name, "--checkpoint", str(other), "-q"]) == 0
    assert "round 1:" in capsys.readouterr().out
    ds.reload()
    reviewed.reload()
    assert reviewed.depth_status == store.ACCEPTED and reviewed.depth_round == 0
    assert not old_file.exists()  # the older round's file is gone once replaced
    assert [r["round"] for r in ds.info["hitts"]["rounds"]] == [0, 1]


def test_a_new_round_on_a_clone_keeps_the_source_datasets_files(
    scenes, checkpoint, tmp_path, dataset_name, capsys
):
    """A FiftyOne clone shares its source's file paths: its next round must not delete them."""
    _ingest(scenes, dataset_name)
    assert main(["suggest", dataset_name, "--checkpoint", str(checkpoint), "-q"]) == 0
    ds = fo.load_dataset(dataset_name)
    source_files = [
        _label_path(s[store.pred_field("semseg")])
        for s in ds.match(F("semseg_status") == store.SUGGESTED)
    ]
    assert source_files and all(p.is_file() for p in source_files)
    copy = ds.clone(f"{dataset_name}-copy")
    try:
        import torch

        state = torch.load(checkpoint, weights_only=True)
        state["extra"] = {"note": "round 1"}
        other = tmp_path / "round1.pt"
        torch.save(state, other)
        assert main(["suggest", copy.name, "--checkpoint", str(other), "-q"]) == 0
        assert "round 1:" in capsys.readouterr().out
        copy.reload()
        _check_complete(copy, 1)
        assert all(p.is_file() for p in source_files)  # the source's round 0 is intact
        ds.reload()
        _check_complete(ds, 0)
    finally:
        fo.delete_dataset(copy.name)


def test_kill_minus_9_then_rerun_completes(scenes, checkpoint, dataset_name):
    _ingest(scenes, dataset_name)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "hitts.app.cli",
        "suggest",
        dataset_name,
        "--checkpoint",
        str(checkpoint),
        "--batch-size",
        "1",
        "-q",
    ]
    proc = subprocess.Popen(args, env=env)
    ds = fo.load_dataset(dataset_name)
    deadline = time.time() + 120
    while time.time() < deadline and ds.count_values("semseg_status").get(store.SUGGESTED, 0) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ds.reload()
    done = len(ds.exists("suggested_at"))
    train = len(ds.match(F("split") == "train"))
    assert 0 < done < train, "kill landed outside the run"
    # nothing half-written: a sample is either complete for round 0 or untouched
    for sample in ds.match(F("split") == "train"):
        rounds = {sample[f"{t}_round"] for t in TASKS if sample.has_field(f"{t}_round")} - {None}
        assert rounds in (set(), {0})
    subprocess.run(args, env=env, check=True)
    ds.reload()
    _check_complete(ds, 0)


def test_suggestions_scored_against_hidden_truth(scenes, checkpoint, dataset_name, capsys):
    _ingest(scenes, dataset_name)
    assert main(["evaluate", dataset_name, "--suggestions"]) == 2  # nothing suggested yet
    assert main(["suggest", dataset_name, "--checkpoint", str(checkpoint), "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", dataset_name, "--suggestions", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == set(TASKS)
    for r in results.values():
        assert 0 <= r["coverage"] <= 1
        assert Path(r["curve_png"]).stat().st_size > 1000
        coverages = [c for _, c, _ in r["curve"]]
        assert coverages == sorted(coverages, reverse=True)  # a higher τ keeps fewer pixels


def test_bad_input(scenes, checkpoint, tmp_path, dataset_name, caplog, capsys):
    _ingest(scenes, dataset_name, setting="full")
    assert main(["suggest", dataset_name, "--checkpoint", str(checkpoint), "-q"]) == 0
    assert "nothing is missing" in capsys.readouterr().out
    assert "rounds" not in fo.load_dataset(dataset_name).info["hitts"]
    fo.delete_dataset(dataset_name)
    _ingest(scenes, dataset_name)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(checkpoint.read_bytes()[:1000])
    assert main(["suggest", dataset_name, "--checkpoint", str(bad), "-q"]) == 2
    assert f"{bad}: not a readable checkpoint" in caplog.text
    with pytest.raises(SystemExit):
        main(["suggest", dataset_name, "--checkpoint", str(checkpoint), "--tau", "depth=1.5"])
    from hitts.app.suggest import resolve_taus

    with pytest.raises(ValueError, match="must be in"):
        resolve_taus(
            {"depth": 0.0}, store.dataset_info(fo.load_dataset(dataset_name)).tasks, "one-label"
        )
    import torch

    state = torch.load(checkpoint, weights_only=True)
    state["tasks"][0]["classes"] = ["a", "b", "c", "d", "e", "f"]
    other = tmp_path / "other-classes.pt"
    torch.save(state, other)
    assert main(["suggest", dataset_name, "--checkpoint", str(other), "-q"]) == 2
    assert "does not have as such" in caplog.text
    ds = fo.load_dataset(dataset_name)
    assert "rounds" not in ds.info["hitts"]
    assert len(ds.exists("suggested_at")) == 0


def test_torchrun_shards_suggest(scenes, checkpoint, dataset_name):
    """Two processes split the samples and write into one database."""
    _ingest(scenes, dataset_name)
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29541", "-m", "hitts.app.cli",
         "suggest", dataset_name, "--checkpoint", str(checkpoint), "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("round 0:") == 1
    ds = fo.load_dataset(dataset_name)
    _check_complete(ds, 0)
    assert [r["round"] for r in ds.info["hitts"]["rounds"]] == [0]


def test_fiftyone_app_serves_the_dataset(scenes, dataset_name):
    import socket
    import urllib.request

    from hitts.app.viewer import serve_app

    _ingest(scenes, dataset_name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    session = serve_app(dataset_name, port=port, wait=False)
    try:
        deadline, status = time.time() + 90, None
        while time.time() < deadline and status != 200:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status
            except OSError:
                time.sleep(0.5)
        assert status == 200
        assert session.dataset.name == dataset_name
    finally:
        session.close()
