"""Offline discovery: the teacher's flipped-image features are the targets of flipped samples."""

from __future__ import annotations

import torch

from hitts.model.discover import discover
from hitts.model.evaluate import forward_images
from hitts.model.network import ModelConfig, build_model
from hitts.model.quantize import Quantizer
from hitts.model.tasks import scene_tasks
from hitts.model.tensor_set import TensorSet
from hitts.model.train import _flip_feature_targets

TASKS = scene_tasks()


def _setup(n: int = 3, h: int = 32, w: int = 48):
    torch.manual_seed(0)
    quantizers = {t.name: Quantizer.for_task(t) for t in TASKS}
    cfg = ModelConfig(outputs={k: q.num_bins for k, q in quantizers.items()}, channels=16)
    model = build_model(cfg).eval()
    images = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8)
    data = TensorSet(
        images=images,
        targets={},
        valid={},
        present=torch.zeros(n, len(TASKS), dtype=torch.bool),
        tasks=TASKS,
        keys=[f"k{i}" for i in range(n)],
    )
    return model, quantizers, data


def test_discovery_keeps_the_features_of_the_flipped_images():
    model, quantizers, data = _setup()
    found = discover(model, quantizers, data, batch_size=2)
    flipped = forward_images(model, data.images.flip(-1), torch.device("cpu"))
    plain = forward_images(model, data.images, torch.device("cpu"))
    for t in TASKS:
        f = found[t.name]
        assert set(f) == {"label", "confidence", "feature", "mf", "feature_hflip", "mf_hflip"}
        want = flipped[t.name]["feature"].half()
        assert torch.allclose(f["feature_hflip"].float(), want.float(), atol=1e-2)
        assert torch.allclose(f["mf_hflip"].float(), flipped[t.name]["mf"].float(), atol=1e-2)
        # the reason for keeping them: flipping the features is not the same thing
        mirrored = plain[t.name]["feature"].flip(-1)
        assert (mirrored - flipped[t.name]["feature"]).abs().max() > 0.05
    without = discover(model, quantizers, data, hflip_features=False)
    assert "feature_hflip" not in without["semseg"] and "feature" in without["semseg"]


def test_flipped_samples_take_the_flipped_image_targets():
    model, quantizers, data = _setup(n=4)
    found = discover(model, quantizers, data)
    idx = torch.tensor([3, 0, 2])
    flip = torch.tensor([True, False, True])
    targets = {
        "pf/depth": found["depth"]["feature"][idx],
        "pm/depth": found["depth"]["mf"][idx],
    }
    out = _flip_feature_targets(flip, targets, found, idx)
    assert torch.equal(out["pf/depth"][0], found["depth"]["feature_hflip"][3])
    assert torch.equal(out["pf/depth"][1], found["depth"]["feature"][0])
    assert torch.equal(out["pm/depth"][2], found["depth"]["mf_hflip"][2])
    # an older discovery without them falls back to mirroring the saved features
    old = {n: {k: v for k, v in d.items() if not k.endswith("_hflip")} for n, d in found.items()}
    out = _flip_feature_targets(flip, targets, old, idx)
    assert torch.equal(out["pf/depth"][0], found["depth"]["feature"][3].flip(-1))
    assert torch.equal(out["pf/depth"][1], found["depth"]["feature"][0])
