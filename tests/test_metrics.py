import math

import numpy as np
import pytest
import torch

from hitts.model.metrics import (
    DepthMeter,
    EdgeMeter,
    NormalMeter,
    SegmentationMeter,
    delta_mtl,
    make_meter,
    metric_input,
)
from hitts.model.quantize import Quantizer
from hitts.model.tasks import scene_tasks


def test_segmentation_by_hand():
    target = torch.tensor([[0, 0, 1], [1, 2, -1]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 2]])
    m = SegmentationMeter(4)
    m.update(pred, target)
    out = m.compute()
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; class 2: 1; class 3 absent
    assert out["IoU"][:3] == pytest.approx([50.0, 200 / 3, 100.0])
    assert out["IoU"][3] is None
    assert out["mIoU"] == pytest.approx((50 + 200 / 3 + 100) / 3)
    assert out["pAcc"] == pytest.approx(80.0)  # 4 of 5 valid pixels


def test_segmentation_streams_over_the_split():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(-1, 5, (6, 7, 8), generator=gen)
    pred = torch.randint(0, 5, (6, 7, 8), generator=gen)
    whole, parts = SegmentationMeter(5), SegmentationMeter(5)
    whole.update(pred, target)
    parts.update(pred[:2], target[:2])
    parts.update(pred[2:].numpy(), target[2:].numpy())
    assert whole.compute() == parts.compute()
    with pytest.raises(ValueError, match="class ids"):
        whole.update(torch.tensor([[7]]), torch.tensor([[0]]))


def test_depth_by_hand():
    m = DepthMeter()
    m.update(torch.tensor([[1.0, 2.0, 4.0]]), torch.tensor([[2.0, 2.0, 0.0]]))
    m.update(torch.tensor([[3.0]]), torch.tensor([[1.0]]))
    out = m.compute()
    # errors over the 3 valid pixels: 1, 0, 2; relative: 1/2, 0, 2
    assert out["abs_err"] == pytest.approx(1.0)
    assert out["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert out["rel_err"] == pytest.approx(2.5 / 3)
    assert DepthMeter().compute()["abs_err"] is None


def test_normal_by_hand():
    x, y = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    pred = torch.tensor([x, y, y, x]).T.reshape(1, 3, 2, 2)
    target = torch.tensor([x, x, [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]).T.reshape(1, 3, 2, 2)
    m = NormalMeter()
    m.update(pred, target)
    out = m.compute()
    # angles 0, 90 and 180 degrees; the third pixel is invalid
    assert out["mean"] == pytest.approx(90.0)
    assert out["median"] == pytest.approx(90.0, abs=0.01)
    assert out["rmse"] == pytest.approx(math.sqrt((90**2 + 180**2) / 3))
    assert out["within_11.25"] == pytest.approx(100 / 3)
    assert out["within_30"] == pytest.approx(100 / 3)


def test_normal_median_matches_numpy():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 3, 10, 11, generator=gen)
    target = torch.nn.functional.normalize(torch.randn(3, 3, 10, 11, generator=gen), dim=1)
    m = NormalMeter()
    for b in range(3):
        m.update(pred[b], target[b])  # unbatched updates
    cos = (torch.nn.functional.normalize(pred, dim=1) * target).sum(1).clamp(-1, 1)
    deg = np.degrees(np.arccos(cos.numpy().ravel()))
    out = m.compute()
    assert out["median"] == pytest.approx(np.median(deg), abs=0.0051)
    assert out["mean"] == pytest.approx(deg.mean(), abs=1e-4)
    assert out["within_22.5"] == pytest.approx(100 * np.mean(deg < 22.5))


def tiny_edges():
    gt = torch.zeros(5, 5, dtype=torch.long)
    gt[:, 2] = 1  # a vertical edge, 5 pixels
    prob = torch.zeros(5, 5)
    prob[0:3, 2] = 0.8  # on the edge
    prob[3:5, 3] = 0.6  # one pixel to the right of it
    prob[0, 0] = 0.3  # a false positive
    return prob, gt


def test_odsf_exact_pixels():
    prob, gt = tiny_edges()
    m = EdgeMeter(max_dist=0.0)
    m.update(prob, gt)
    out = m.compute()
    # t in (0.6, 0.8]: P = 3/3, R = 3/5 -> F = 0.75, better than P = R = 3/5 at t <= 0.6
    assert out["odsF"] == pytest.approx(75.0)
    assert out["precision"] == pytest.approx(100.0) and out["recall"] == pytest.approx(60.0)
    assert 0.6 < out["threshold"] <= 0.8


def test_odsf_with_distance_tolerance():
    prob, gt = tiny_edges()
    # radius 0.15 * 5 * sqrt(2) = 1.06 px: 4-neighbours match, diagonals do not
    m = EdgeMeter(max_dist=0.15)
    m.update(prob, gt)
    out = m.compute()
    assert out["odsF"] == pytest.approx(100.0)
    assert 0.3 < out["threshold"] <= 0.6
    # the default BSDS tolerance on a 5x5 image is under a pixel: exact matching
    d = EdgeMeter()
    d.update(prob, gt)
    assert d.compute()["odsF"] == pytest.approx(75.0)


def test_odsf_below_the_bsds_grid():
    """Re-balanced edge probabilities of a young model can all lie under 0.01: their ranking
    still counts, where the BSDS grid alone sees no predicted edge at all."""
    prob, gt = tiny_edges()
    small = prob * 0.005  # same order, every value under 0.01
    low = EdgeMeter(max_dist=0.0)
    low.update(small, gt)
    out = low.compute()
    assert out["odsF"] == pytest.approx(75.0) and out["threshold"] < 0.01
    bsds = EdgeMeter(max_dist=0.0, low_thresholds=0)
    bsds.update(small, gt)
    assert bsds.compute()["odsF"] == 0.0
    # where the BSDS grid finds the best threshold, the extra ones change nothing
    full, plain = EdgeMeter(max_dist=0.0), EdgeMeter(max_dist=0.0, low_thresholds=0)
    full.update(prob, gt)
    plain.update(prob, gt)
    assert full.compute() == plain.compute()


def test_odsf_ignores_invalid_pixels_and_streams():
    prob, gt = tiny_edges()
    gt[0, 0] = -1  # the false positive sits on an invalid pixel
    prob[1, 2] = 0.2  # weaker on one edge pixel
    m = EdgeMeter(max_dist=0.0)
    m.update(prob[None], gt[None])
    m.update(prob, gt)
    out = m.compute()
    # best at t <= 0.2: all 10 predicted pixels of the two copies valid, 6 on the edge, 10 truth
    # pixels, 6 found -> F = 0.6; at t in (0.6, 0.8]: P = 1, R = 4/10 -> F = 0.571
    assert out["odsF"] == pytest.approx(60.0)
    assert EdgeMeter().compute()["odsF"] is None


def test_delta_mtl_two_tasks():
    stl = {"semseg": {"mIoU": 50.0, "IoU": [50.0, None]}, "depth": {"abs_err": 0.5}}
    mtl = {"semseg": {"mIoU": 55.0}, "depth": {"abs_err": 0.45}}
    assert delta_mtl(mtl, stl) == pytest.approx(10.0)  # +10 % and +10 %
    worse = {"semseg": {"mIoU": 45.0}, "depth": {"abs_err": 0.45}}
    assert delta_mtl(worse, stl) == pytest.approx(0.0)
    flipped = delta_mtl(mtl, stl, lower_is_better={"semseg": {"mIoU"}})
    assert flipped == pytest.approx((-10.0 + 10.0) / 2)  # depth keeps the default
    with pytest.raises(KeyError):
        delta_mtl({"semseg": {"mIoU": 1.0}}, stl)


def test_delta_mtl_reproduces_the_paper_table():
    names = ["mIoU", "pAcc", "abs_err", "rmse"]
    normal = ["mean", "rmse", "within_11.25", "within_22.5", "within_30"]

    def row(values):
        return {
            "semseg": dict(zip(names[:2], values[:2], strict=True)),
            "depth": dict(zip(names[2:], values[2:4], strict=True)),
            "normal": dict(zip(normal, values[4:], strict=True)),
        }

    stl = row([29.28, 55.41, 0.7182, 1.0151, 30.1971, 37.7115, 23.1532, 46.4046, 58.5216])
    ours = row([35.81, 63.22, 0.5540, 0.7939, 28.5131, 36.1738, 26.4985, 50.2357, 61.8343])
    base = row([30.92, 58.23, 0.5982, 0.8544, 31.8509, 38.6313, 19.7083, 41.2614, 53.6381])
    assert delta_mtl(ours, stl) == pytest.approx(13.23, abs=0.005)  # Table 1, one-label
    assert delta_mtl(base, stl) == pytest.approx(0.11, abs=0.005)


def test_metric_input_and_make_meter():
    for spec in scene_tasks():
        q = Quantizer.for_task(spec)
        logits = torch.randn(2, q.num_bins, 6, 7)
        pred = metric_input(q, logits)
        meter = make_meter(spec)
        target = {
            "segmentation": torch.randint(-1, q.num_bins, (2, 6, 7)),
            "edge": torch.randint(-1, 2, (2, 6, 7)),
            "depth": torch.rand(2, 6, 7) * 5,
            "normal": torch.nn.functional.normalize(torch.randn(2, 3, 6, 7), dim=1),
        }[spec.kind]
        meter.update(pred, target)
        out = meter.compute()
        assert all(v is None or isinstance(v, (float, list)) for v in out.values())
    edge = Quantizer.for_task(scene_tasks()[3])
    p = metric_input(edge, torch.randn(1, 2, 3, 3))
    assert p.dtype.is_floating_point and ((p >= 0) & (p <= 1)).all()
