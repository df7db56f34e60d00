"""Training end to end on generated scenes in a real FiftyOne dataset: stage 1, discovery, stage 2,
evaluation, resume after a kill, and checkpoint errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hitts.app.cli import main
from hitts.model.data.scenes import SceneConfig, generate_scenes
from hitts.model.train import load_checkpoint

FAST = ["--epochs", "1", "--batch-size", "4", "--channels", "16", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(
        root, 16, SceneConfig(height=32, width=48), seed=5, val_fraction=0.25, progress=False
    )
    return root


def test_train_discover_stage2_evaluate(scenes, tmp_path, dataset_name, capsys):
    assert (
        main(["ingest", str(scenes), "--name", dataset_name, "--setting", "one-label", "-q"]) == 0
    )
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    assert main(["train", dataset_name, "--out", str(s1), *FAST]) == 0
    state = load_checkpoint(s1 / "last.pt")
    assert state["epoch"] == 0 and state["model_config"]["kind"] == "hitts"
    # the edge loss's class weights are kept, so predictions can divide them back out
    w = state["quantizers"]["edge"]["class_weight"]
    assert w[1] / w[0] == pytest.approx(19.0) and w[0] > 0.05  # 0.95 : 0.05, scaled up
    assert "class_weight" not in state["quantizers"]["semseg"]
    rows = [json.loads(r) for r in (s1 / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0]
    assert set(rows[0]["val"]) == {"semseg", "depth", "normal", "edge"}
    assert rows[0]["loss_s"] > 0 and rows[0]["loss_p"] == 0
    assert (s1 / "curves.png").stat().st_size > 1000
    low_tau = [a for t in ("semseg", "depth", "normal", "edge") for a in ("--tau", f"{t}=0.01")]
    assert (
        main(
            [
                "train",
                dataset_name,
                "--out",
                str(s2),
                "--stage",
                "2",
                "--teacher",
                str(s1 / "last.pt"),
                *low_tau,
                *FAST,
            ]
        )
        == 0
    )
    # the student weighs edges as its teacher did
    assert load_checkpoint(s2 / "last.pt")["quantizers"]["edge"]["class_weight"] == w
    found = torch.load(s2 / "discovery.pt", weights_only=True)
    assert set(found["tasks"]) == {"semseg", "depth", "normal", "edge"}
    assert found["tasks"]["depth"]["confidence"].shape == (12, 32, 48)
    assert (
        found["tasks"]["depth"]["feature_hflip"].shape == found["tasks"]["depth"]["feature"].shape
    )
    # --no-flip-features: no second set of features, half the memory
    s3 = tmp_path / "s3"
    teach = ["--stage", "2", "--teacher", str(s1 / "last.pt"), "--no-flip-features"]
    assert main(["train", dataset_name, "--out", str(s3), *teach, *FAST]) == 0
    lean = torch.load(s3 / "discovery.pt", weights_only=True)
    assert "feature_hflip" not in lean["tasks"]["depth"] and "feature" in lean["tasks"]["depth"]
    assert lean["meta"]["hflip_features"] is False
    flipped = sum(
        v.numel() * v.element_size()
        for d in found["tasks"].values()
        for k, v in d.items()
        if k.endswith("_hflip")
    )
    saved = (s2 / "discovery.pt").stat().st_size - (s3 / "discovery.pt").stat().st_size
    assert saved >= 0.9 * flipped > 0
    rows = [json.loads(r) for r in (s2 / "log.jsonl").read_text().splitlines()]
    assert rows[0]["loss_p"] > 0 and rows[0]["loss_f"] > 0
    capsys.readouterr()
    assert main(["evaluate", dataset_name, "--checkpoint", str(s2 / "last.pt"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["semseg"]["mIoU"] <= 100 and metrics["depth"]["abs_err"] > 0


def test_refuses_existing_run_and_bad_checkpoints(scenes, tmp_path, dataset_name, caplog):
    assert main(["ingest", str(scenes), "--name", dataset_name, "-q"]) == 0
    run = tmp_path / "run"
    assert main(["train", dataset_name, "--out", str(run), "--model", "mtl", *FAST]) == 0
    assert main(["train", dataset_name, "--out", str(run), "--model", "mtl", *FAST]) == 2
    assert "exists: pass resume" in caplog.text
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", dataset_name, "--checkpoint", str(bad)]) == 2
    assert f"{bad}: not a readable checkpoint" in caplog.text
    assert main(["train", dataset_name, "--out", str(tmp_path / "x"), "--stage", "2"]) == 2
    assert "needs --teacher" in caplog.text


def test_resume_after_kill_matches_uninterrupted_run(scenes, tmp_path, dataset_name):
    assert (
        main(["ingest", str(scenes), "--name", dataset_name, "--setting", "one-label", "-q"]) == 0
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "hitts.app.cli",
        "train",
        dataset_name,
        "--epochs",
        "4",
        "--batch-size",
        "4",
        "--channels",
        "16",
        "--threads",
        "1",
        "-q",
    ]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen([*args, "--out", str(killed)], env=env)
    deadline = time.time() + 120
    while not (killed / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = load_checkpoint(killed / "last.pt")["epoch"]
    assert first < 3, "the run finished before it could be killed"
    subprocess.run([*args, "--out", str(killed), "--resume"], env=env, check=True)
    subprocess.run([*args, "--out", str(whole)], env=env, check=True)
    a, b = load_checkpoint(killed / "last.pt"), load_checkpoint(whole / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    epochs = [json.loads(r)["epoch"] for r in (killed / "log.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3]


def test_torchrun_two_cpu_processes(scenes, tmp_path, dataset_name):
    """DistributedDataParallel on the gloo backend: two processes train one model."""
    assert (
        main(["ingest", str(scenes), "--name", dataset_name, "--setting", "one-label", "-q"]) == 0
    )
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "hitts.app.cli",
            "train",
            dataset_name,
            "--out",
            str(run),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--channels",
            "16",
            "--threads",
            "1",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint:") == 1  # only rank 0 reports
    epochs = [json.loads(r)["epoch"] for r in (run / "log.jsonl").read_text().splitlines()]
    assert epochs == [0, 1]
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_teacher_labelled_sets_the_alpha_of_the_feature_loss(scenes, tmp_path):
    # Eq. 6 weighs every pixel of a task the teacher was trained on, and only M_f elsewhere:
    # marking every (image, task) as seen by the teacher must raise L_f above marking none
    from hitts.model.network import ModelConfig
    from hitts.model.pipeline import splits_from_source, train_stage2
    from hitts.model.recipe import fit_quantizers, thresholds_for
    from hitts.model.train import TrainConfig, train

    tr, _ = splits_from_source(scenes, setting="one-label", seed=0)
    quantizers = fit_quantizers(tr)
    model_cfg = ModelConfig(outputs={n: q.num_bins for n, q in quantizers.items()}, channels=16)
    cfg = TrainConfig(epochs=1, batch_size=4, thresholds=thresholds_for(tr.tasks, "one-label"))
    train(cfg, model_cfg, quantizers, tr, None, tmp_path / "s1", progress=False)

    def stage2(out, seen):
        teacher = tmp_path / "s1" / "last.pt"
        train_stage2(teacher, cfg, model_cfg, tr, None, out, progress=False, teacher_labelled=seen)

    loss_f = {}
    for seen in (False, True):
        out = tmp_path / f"s2-{seen}"
        stage2(out, torch.full(tr.present.shape, seen))
        loss_f[seen] = json.loads((out / "log.jsonl").read_text().splitlines()[0])["loss_f"]
    assert 0 < loss_f[False] < loss_f[True]
    with pytest.raises(ValueError, match="teacher_labelled must be"):
        stage2(tmp_path / "bad", torch.ones(1, 4, dtype=torch.bool))


def test_an_accepted_region_weighs_its_share_of_the_image_in_l_s():
    from hitts.app.retrain import _region_weights
    from hitts.model.tasks import scene_tasks
    from hitts.model.tensor_set import TensorSet

    tasks = scene_tasks()
    n, h, w = 3, 4, 5
    valid = {t.name: torch.ones(n, h, w, dtype=torch.bool) for t in tasks}
    valid["depth"][1, :1] = True
    valid["depth"][1, 1:] = False  # image b: only its first row was confident and accepted
    present = torch.ones(n, len(tasks), dtype=torch.bool)
    present[2, 0] = False
    data = TensorSet(
        images=torch.zeros(n, 3, h, w, dtype=torch.uint8),
        targets={},
        valid=valid,
        present=present,
        tasks=tasks,
        keys=["a", "b", "c"],
    )
    weight = _region_weights(data, {"depth": {"b"}, "semseg": set()})
    assert weight[1, 1].item() == pytest.approx(1 / h)  # depth is the second scene task
    assert weight.sum().item() == pytest.approx(weight.numel() - 1 + 1 / h)
    data.label_weight = weight
    got = data.supervised_weight(torch.tensor([1, 2]))
    assert got["depth"].tolist() == pytest.approx([1 / h, 1.0])
    assert got["semseg"].tolist() == [1.0, 0.0]  # a missing label stays 0 whatever its weight


def test_label_weight_scales_the_supervised_loss(scenes, tmp_path):
    from dataclasses import replace

    from hitts.model.network import ModelConfig
    from hitts.model.pipeline import splits_from_source
    from hitts.model.recipe import fit_quantizers
    from hitts.model.train import TrainConfig, train

    tr, _ = splits_from_source(scenes, setting="one-label", seed=0)
    quantizers = fit_quantizers(tr)
    model_cfg = ModelConfig(outputs={n: q.num_bins for n, q in quantizers.items()}, channels=16)
    cfg = TrainConfig(epochs=1, batch_size=4)
    rows = {}
    for w in (0.0, 1.0):
        data = replace(tr, label_weight=torch.full(tr.present.shape, w))
        train(cfg, model_cfg, quantizers, data, None, tmp_path / f"w{w}", progress=False)
        rows[w] = json.loads((tmp_path / f"w{w}" / "log.jsonl").read_text().splitlines()[0])
    assert rows[0.0]["loss_s"] == 0 and rows[1.0]["loss_s"] > 0


def test_edge_class_weights_average_one_over_the_labelled_pixels():
    """(0.05, 0.95) re-balances edge pixels; scaled so the mean weight over the labelled pixels
    is 1, the edge loss counts as much as an unweighted task's (Eq. 5 weighs tasks equally)."""
    from hitts.model.quantize import Quantizer
    from hitts.model.tasks import scene_tasks
    from hitts.model.tensor_set import TensorSet
    from hitts.model.train import TrainConfig, _class_weights

    tasks = scene_tasks()
    edge = next(t for t in tasks if t.name == "edge")
    n, h, w = 3, 4, 8
    target = torch.zeros(n, h, w, dtype=torch.long)
    target[:, :, :2] = 1  # a quarter of the pixels are edges...
    target[2] = 1  # ...on the labelled images; image 2 is all edges but not labelled
    present = torch.zeros(n, len(tasks), dtype=torch.bool)
    present[:2, [t.name for t in tasks].index("edge")] = True
    data = TensorSet(
        images=torch.zeros(n, 3, h, w, dtype=torch.uint8),
        targets={"edge": target},
        valid={"edge": torch.ones(n, h, w, dtype=torch.bool)},
        present=present,
        tasks=tasks,
        keys=["a", "b", "c"],
    )
    qs = {"edge": Quantizer.for_task(edge)}
    weight = _class_weights(qs, TrainConfig(), data, "cpu")["edge"]
    assert weight[1] / weight[0] == pytest.approx(19.0)
    assert float(0.75 * weight[0] + 0.25 * weight[1]) == pytest.approx(1.0)
    fixed = _class_weights(qs, TrainConfig(edge_loss_weight=2.0), data, "cpu")["edge"]
    assert fixed.tolist() == pytest.approx([0.1, 1.9])
    # stage 2 keeps the teacher's weights, held by its quantizer
    qs["edge"].set_class_weight(torch.tensor([0.5, 9.5]))
    kept = _class_weights(qs, TrainConfig(stage=2), data, "cpu")["edge"]
    assert kept.tolist() == pytest.approx([0.5, 9.5])
