"""ONNX export and the ONNX Runtime predictor: checker, parity with PyTorch at several sizes and
batches, the same suggestions as the PyTorch predictor, clear errors for damaged files, and no file
left behind by a failed export. One tiny model trained for one epoch, exported once per module."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from hitts.exporters.onnx import (
    FORMAT,
    METADATA_KEY,
    ExportError,
    OnnxPredictor,
    export_onnx,
    load_predictor,
    output_names,
)
from hitts.model.data.scenes import SceneConfig, generate_scenes
from hitts.model.network import ModelConfig
from hitts.model.pipeline import splits_from_source
from hitts.model.predictor import SuggestionHead, TorchPredictor
from hitts.model.recipe import fit_quantizers
from hitts.model.train import TrainConfig, load_checkpoint, model_from_checkpoint, train

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx.export(dynamo=True) needs it

H, W = 32, 48
PARITY_SIZES = ((H, W), (H + 16, W + 32), (2 * H, 2 * W), (37, 53))
TOL = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("onnx")
    scenes = generate_scenes(
        root / "scenes",
        8,
        SceneConfig(height=H, width=W),
        seed=7,
        val_fraction=0.25,
        progress=False,
    )
    train_set, _ = splits_from_source(scenes, setting="full", seed=0)
    quantizers = fit_quantizers(train_set, seed=0)
    model_cfg = ModelConfig(outputs={n: q.num_bins for n, q in quantizers.items()}, channels=16)
    cfg = TrainConfig(epochs=1, batch_size=4)
    train(
        cfg,
        model_cfg,
        quantizers,
        train_set,
        None,
        root / "run",
        progress=False,
        extra={"dataset": "scenes"},
    )
    return root / "run" / "last.pt"


@pytest.fixture(scope="module")
def exported(checkpoint):
    return export_onnx(
        checkpoint,
        checkpoint.parent / "export" / "model.onnx",
        parity_sizes=PARITY_SIZES,
        tolerance=TOL,
    )


def test_export_writes_a_checked_self_describing_model(exported, checkpoint):
    path = exported.path
    assert path.is_file() and exported.dynamic_size
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]  # no temp file left
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert exported.opset >= 17
    assert [i.name for i in model.graph.input] == exported.input_names == ["image"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    state = load_checkpoint(checkpoint)
    tasks = [t["name"] for t in state["tasks"]]
    assert [o.name for o in model.graph.output] == exported.output_names == output_names(tasks)
    assert "semseg.label" in exported.output_names and "edge.fine_score" in exported.output_names
    # decoding rewritten for ONNX Runtime: no channel-axis Softmax, no Einsum
    assert not [n for n in model.graph.node if n.op_type == "Einsum"]
    axes = [a.i for n in model.graph.node if n.op_type == "Softmax" for a in n.attribute]
    assert set(axes) <= {-1}
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert meta["format"] == FORMAT and meta["size"] == [H, W] and meta["sharpen"] == 1.0
    assert meta["tasks"] == state["tasks"] and meta["output_tasks"] == tasks
    assert meta["extra"] == {"dataset": "scenes"}


def test_parity_with_pytorch_at_several_sizes_and_batches(exported, checkpoint):
    assert set(exported.max_abs_diff) == set(PARITY_SIZES)
    assert all(d <= TOL for d in exported.max_abs_diff.values()), exported.max_abs_diff
    # one more size and a batch of 5, checked here independently of the exporter's own check
    model, quantizers, _ = model_from_checkpoint(load_checkpoint(checkpoint))
    head = SuggestionHead(model, quantizers).eval()
    x = torch.rand(5, 3, 41, 29, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = [r.numpy() for r in head(x)]
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    got = session.run(exported.output_names, {"image": x.numpy()})
    for name, r, g in zip(exported.output_names, ref, got, strict=True):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        if g.dtype == np.int64:
            assert (g != r).mean() < 1e-3, name  # argmax near-ties only
        elif not name.endswith("fine_score"):
            assert np.abs(g - r).max() <= TOL, name


def test_onnx_predictor_gives_the_torch_suggestions(exported, checkpoint):
    torch_p = TorchPredictor(checkpoint)
    onnx_p = OnnxPredictor(exported.path, threads=1)
    assert onnx_p.engine == "onnx" and torch_p.engine == "torch"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert onnx_p.provider == "CPUExecutionProvider"
    assert onnx_p.tasks == torch_p.tasks and onnx_p.size == torch_p.size == (H, W)
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for h, w in ((H, W), (20, 30), (64, 80), (H, W))
    ]
    for im, a, b in zip(images, torch_p.predict(images), onnx_p.predict(images), strict=True):
        same_size = im.shape[:2] == (H, W)
        for task in onnx_p.tasks:
            ta, tb = a[task.name], b[task.name]
            assert set(tb) == {"label", "confidence", "mf", "fine_score"}
            assert tb["label"].shape == ta["label"].shape and tb["label"].dtype == ta["label"].dtype
            if task.is_classification:
                differ = tb["label"] != ta["label"]
                assert differ.mean() < 1e-3, task.name
                if same_size:  # a flipped argmax is a tie of the top two: max softmax <= 1/2
                    assert (ta["confidence"][differ] <= 0.5 + 1e-3).all(), task.name
            else:
                assert np.abs(tb["label"] - ta["label"]).max() <= TOL, task.name
            for key in ("confidence", "mf"):
                assert np.abs(tb[key] - ta[key]).max() <= TOL, (task.name, key)
            # the fine score is read at the argmax of G', so a near-tie there may flip it too
            assert (np.abs(tb["fine_score"] - ta["fine_score"]) > TOL).mean() < 1e-3, task.name


def test_damaged_or_foreign_files_give_clear_errors(exported, tmp_path):
    data = exported.path.read_bytes()
    truncated, noise = tmp_path / "truncated.onnx", tmp_path / "noise.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for path in (truncated, noise):
        with pytest.raises(ValueError, match=re.escape(str(path))):
            OnnxPredictor(path)
    with pytest.raises(ValueError, match="not found"):
        OnnxPredictor(tmp_path / "missing.onnx")

    model = onnx.load(str(exported.path))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ValueError, match="without hitts metadata"):
        OnnxPredictor(bare)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, "{not json"
    onnx.save(model, str(bare))
    with pytest.raises(ValueError, match="unreadable hitts metadata"):
        OnnxPredictor(bare)


def test_load_predictor_picks_the_engine(exported, checkpoint):
    assert isinstance(load_predictor(checkpoint, "torch"), TorchPredictor)
    assert isinstance(load_predictor(exported.path, "onnx"), OnnxPredictor)
    with pytest.raises(ValueError, match="export-model"):
        load_predictor(checkpoint, "onnx")
    with pytest.raises(ValueError, match="torch engine needs the .pt checkpoint"):
        load_predictor(exported.path, "torch")
    with pytest.raises(ValueError, match="engine must be one of"):
        load_predictor(checkpoint, "tensorrt")


@pytest.mark.slow
def test_failed_parity_raises_and_leaves_no_file(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=r"\.(confidence|mf|fine_score|label): max abs diff"):
        export_onnx(checkpoint, out, parity_sizes=((H, W),), tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []
