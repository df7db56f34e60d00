"""examples/benchmark_cost.py and examples/plot_tokens.py on tiny models: fast structural checks."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import torch

from hitts.model.data.scenes import SceneConfig, generate_scenes
from hitts.model.network import MTL, ModelConfig
from hitts.model.pipeline import splits_from_source
from hitts.model.recipe import fit_quantizers
from hitts.model.train import TrainConfig, train

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    """Import examples/<name>.py as a module (registered first, as dataclasses need)."""
    spec = importlib.util.spec_from_file_location(f"hitts_examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_cost_of_hitts_exceeds_mtl():
    cost = _load("benchmark_cost")
    base = ModelConfig(outputs={"semseg": 3, "depth": 5}, width=0.25, channels=8)
    mtl = cost.model_cost(replace(base, kind=MTL), (32, 48))
    hitts = cost.model_cost(base, (32, 48))
    assert 0 < mtl.params < hitts.params
    assert 0 < mtl.flops < hitts.flops
    assert hitts.parts["intra"][1] > 0 and "intra" not in mtl.parts
    assert hitts.parts["backbone"] == mtl.parts["backbone"]  # the same shared encoder

    rows = cost.table_rows({"semseg": 3, "depth": 5}, "small", ablations=True)
    cost.count_rows(rows, (32, 48))
    table = cost.format_table(rows, "tiny") + cost.format_breakdown(rows)
    assert "| HiTTs w/o intra-task |" in table and "intra/feature_ffn" in table


def test_plot_tokens_writes_the_figures(tmp_path):
    torch.manual_seed(0)
    scenes = generate_scenes(
        tmp_path / "scenes",
        6,
        SceneConfig(height=32, width=40),
        seed=3,
        val_fraction=1 / 3,
        progress=False,
    )
    train_set, val_set = splits_from_source(scenes)
    quantizers = fit_quantizers(train_set)
    model_cfg = ModelConfig(
        outputs={n: q.num_bins for n, q in quantizers.items()},
        width=0.25,
        channels=8,
        fine_hidden=16,
    )
    run = tmp_path / "run"
    train(
        TrainConfig(epochs=1, batch_size=4),
        model_cfg,
        quantizers,
        train_set,
        None,
        run,
        progress=False,
    )

    plots = _load("plot_tokens")
    out = tmp_path / "plots"
    assert (
        plots.main(
            [
                "--checkpoint",
                str(run / "last.pt"),
                "--out",
                str(out),
                "--generate",
                "3",
                "--shown",
                "1",
            ]
        )
        == 0
    )
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs if p.name.startswith("fig7")] == ["fig7_fine_tokens.png"]
    assert len([p for p in pngs if p.name.startswith("fig11")]) == 1
    assert all(p.stat().st_size > 1000 for p in pngs)
