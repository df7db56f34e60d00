import io
import math

import pytest
import torch
import torch.nn.functional as F

from hitts.model.quantize import (
    Quantizer,
    QuantizeSettings,
    fibonacci_sphere,
    fit_normal_centres,
    log_depth_centres,
)
from hitts.model.tasks import DEPTH, NORMAL, TaskSpec, scene_tasks

SEMSEG, DEPTH_SPEC, NORMAL_SPEC, EDGE_SPEC = scene_tasks()


def peaked(num_bins: int, index: torch.Tensor, height: float = 50.0) -> torch.Tensor:
    """(B, C, H, W) logits that put (almost) all mass on ``index`` (B, H, W)."""
    return F.one_hot(index, num_bins).permute(0, 3, 1, 2).float() * height


def test_classification_is_identity():
    q = Quantizer.for_task(SEMSEG)
    assert q.num_bins == SEMSEG.num_classes and q.centres.numel() == 0
    target = torch.tensor([[[0, 5, -1], [3, 2, 1]]])
    valid = torch.tensor([[[True, True, True], [True, False, True]]])
    assert q.to_class(target).tolist() == target.tolist()
    assert q.to_class(target, valid).tolist() == [[[0, 5, -1], [3, -1, 1]]]
    logits = peaked(q.num_bins, target.clamp_min(0))
    assert torch.equal(q.decode(logits), target.clamp_min(0))


def test_classification_rejects_out_of_range_ids():
    q = Quantizer.for_task(EDGE_SPEC)
    with pytest.raises(ValueError, match="< 2"):
        q.to_class(torch.tensor([[[0, 2]]]))


def test_depth_centres_are_log_spaced():
    c = log_depth_centres(30, 0.67, 10.0)
    assert c.shape == (30,)
    assert c[0].item() == pytest.approx(0.67) and c[-1].item() == pytest.approx(10.0)
    ratios = c[1:] / c[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-5)


def test_depth_to_class_is_nearest_bin_in_log_space():
    q = Quantizer(name="depth", kind=DEPTH, num_bins=3, centres=torch.tensor([1.0, 2.0, 4.0]))
    # log-space boundaries at sqrt(2) and sqrt(8); 0 is invalid; outside the range clamps
    target = torch.tensor([[[1.0, 1.41, 1.42, 2.82, 2.83, 0.0, 0.1, 100.0]]])
    assert q.to_class(target).tolist() == [[[0, 0, 1, 1, 2, -1, 0, 2]]]


def test_depth_decode_is_soft_weighted_sum():
    q = Quantizer.for_task(DEPTH_SPEC)
    idx = torch.tensor([[[0, 7], [29, 12]]])
    assert torch.allclose(q.decode(peaked(30, idx)), q.centres[idx], rtol=1e-4)
    flat = q.decode(torch.zeros(1, 30, 2, 2))  # Eq. 10 with a uniform softmax
    assert flat.shape == (1, 2, 2)
    assert torch.allclose(flat, q.centres.mean().expand(1, 2, 2))


def test_depth_round_trip_through_bins():
    q = Quantizer.for_task(DEPTH_SPEC)
    depth = torch.rand(2, 5, 6) * 9 + 0.8
    back = q.decode(peaked(q.num_bins, q.to_class(depth)))
    # half a log-bin at most
    half_bin = math.log(10 / 0.67) / 29 / 2
    assert (back.log() - depth.log()).abs().max() <= half_bin + 1e-4


def test_fibonacci_sphere_is_unit_and_spread():
    c = fibonacci_sphere(40)
    assert c.shape == (40, 3)
    assert torch.allclose(c.norm(dim=1), torch.ones(40), atol=1e-6)
    assert abs(c.mean(dim=0)).max() < 0.05  # balanced over the sphere
    cos = c @ c.T - 2 * torch.eye(40)
    assert cos.max() < 0.95  # no two centres nearly coincide
    assert (fibonacci_sphere(20, hemisphere=True)[:, 2] >= 0).all()


def test_normal_to_class_and_decode():
    q = Quantizer.for_task(NORMAL_SPEC, QuantizeSettings(normal_bins=20))
    assert q.centres.shape == (20, 3)
    idx = torch.tensor([[[3, 17], [0, 9]]])
    normals = q.centres[idx].permute(0, 3, 1, 2)  # (1, 3, 2, 2)
    normals[0, :, 1, 1] = 0  # invalid
    assert q.to_class(normals).tolist() == [[[3, 17], [0, -1]]]
    pred = q.decode(torch.randn(2, 20, 4, 5))
    assert pred.shape == (2, 3, 4, 5)
    assert torch.allclose(pred.norm(dim=1), torch.ones(2, 4, 5), atol=1e-5)
    assert torch.allclose(q.decode(peaked(20, idx)), q.centres[idx].permute(0, 3, 1, 2), atol=1e-4)


def test_normal_decode_survives_cancelling_centres():
    c = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    q = Quantizer(name="normal", kind=NORMAL, num_bins=2, centres=c)
    out = q.decode(torch.zeros(1, 2, 1, 1))  # the Eq. 10 sum is the zero vector
    assert torch.isfinite(out).all()


def test_fit_normal_centres_finds_clusters_and_is_seeded():
    gen = torch.Generator().manual_seed(0)
    axes = torch.eye(3)
    pts = axes.repeat_interleave(300, 0) + 0.05 * torch.randn(900, 3, generator=gen)
    pts = torch.cat([pts, torch.zeros(50, 3)])  # invalid pixels are dropped
    c = fit_normal_centres(pts, 3, seed=1)
    assert c.shape == (3, 3)
    assert torch.allclose(c.norm(dim=1), torch.ones(3), atol=1e-6)
    assert (c @ axes.T).max(dim=0).values.min() > 0.99  # each axis has a centre
    assert torch.equal(c, fit_normal_centres(pts, 3, seed=1))
    q = Quantizer.for_task(NORMAL_SPEC, normal_centres=c)
    assert q.num_bins == 3
    with pytest.raises(ValueError, match="at least k"):
        fit_normal_centres(torch.zeros(10, 3), 3)


def test_confidence_and_sharpening():
    q = Quantizer.for_task(DEPTH_SPEC)
    assert torch.allclose(q.confidence(torch.zeros(1, 30, 2, 2)), torch.full((1, 2, 2), 1 / 30))
    logits = torch.randn(1, 30, 3, 3)
    soft, sharp = q.confidence(logits), q.confidence(logits, sharpen=5.0)
    assert soft.shape == (1, 3, 3) and (sharp >= soft).all()
    label, conf = q.pseudo_label(logits)
    assert torch.equal(label, q.decode(logits)) and torch.equal(conf, soft)


def test_class_weights_are_divided_out_of_predictions():
    # a weighted cross-entropy is minimised by q_c ∝ w_c p_c: at p(edge) = 0.3 under weights
    # 0.05 / 0.95, a model that learnt q outputs q(edge) = 0.95*0.3 / (0.05*0.7 + 0.95*0.3) = 0.89
    q_edge = 0.95 * 0.3 / (0.05 * 0.7 + 0.95 * 0.3)
    logits = torch.tensor([0.0, math.log(q_edge / (1 - q_edge))]).view(1, 2, 1, 1)
    raw = Quantizer.for_task(EDGE_SPEC)
    assert raw.decode(logits).item() == 1
    q = Quantizer.for_task(EDGE_SPEC)
    q.set_class_weight(torch.tensor([0.05, 0.95]))
    assert q.decode(logits).item() == 0
    assert q.probabilities(logits)[0, 1].item() == pytest.approx(0.3, abs=1e-6)
    assert q.confidence(logits).item() == pytest.approx(0.7, abs=1e-6)
    label, conf = q.pseudo_label(logits)
    assert label.item() == 0 and conf.item() == pytest.approx(0.7, abs=1e-6)
    # the weights travel with the quantizer, and can be cleared
    back = Quantizer.from_dict(q.to_dict())
    assert torch.equal(back.class_weight, q.class_weight) and back.decode(logits).item() == 0
    assert "class_weight" not in raw.to_dict()
    q.set_class_weight(None)
    assert q.decode(logits).item() == 1


def test_class_weights_are_checked():
    with pytest.raises(ValueError, match="only class tasks"):
        Quantizer.for_task(DEPTH_SPEC).set_class_weight(torch.ones(30))
    with pytest.raises(ValueError, match=r"\(2,\) and > 0"):
        Quantizer.for_task(EDGE_SPEC).set_class_weight(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(2,\) and > 0"):
        Quantizer.for_task(EDGE_SPEC).set_class_weight(torch.ones(3))


@pytest.mark.parametrize("spec", scene_tasks(), ids=lambda s: s.name)
def test_dict_round_trip_with_weights_only_checkpoint(spec: TaskSpec):
    q = Quantizer.for_task(spec, QuantizeSettings.preset("pascal"))
    buf = io.BytesIO()
    torch.save({"quantizer": q.to_dict()}, buf)
    buf.seek(0)
    back = Quantizer.from_dict(torch.load(buf, weights_only=True)["quantizer"])
    assert (back.name, back.kind, back.num_bins) == (q.name, q.kind, q.num_bins)
    assert torch.equal(back.centres, q.centres)
    assert "centres" in dict(q.named_buffers())


def test_shape_contracts():
    q = Quantizer.for_task(NORMAL_SPEC)
    with pytest.raises(ValueError, match="logits must be"):
        q.decode(torch.zeros(1, 5, 2, 2))
    with pytest.raises(ValueError, match=r"target must be \(B, 3, H, W\)"):
        q.to_class(torch.zeros(1, 2, 2, 3))
    with pytest.raises(ValueError, match="depth_min"):
        QuantizeSettings(depth_min=5, depth_max=1)
    assert QuantizeSettings.preset("cityscapes").depth_bins == 100
    assert QuantizeSettings.preset("nyud") == QuantizeSettings()
    with pytest.raises(KeyError, match="known"):
        QuantizeSettings.preset("kitti")
