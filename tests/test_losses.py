import math

import pytest
import torch
import torch.nn.functional as F

from hitts.model.losses import (
    PSEUDO_LABEL_THRESHOLDS,
    REGRESSION_WEIGHT,
    angle_between,
    default_thresholds,
    feature_loss,
    image_losses,
    pixel_loss,
    pseudo_label_loss,
    supervised_loss,
    task_loss,
)
from hitts.model.quantize import Quantizer
from hitts.model.tasks import DEPTH, scene_tasks

SPECS = {s.name: s for s in scene_tasks()}
QS = {name: Quantizer.for_task(spec) for name, spec in SPECS.items()}
B, H, W = 2, 4, 5


def make_target(name: str) -> torch.Tensor:
    q = QS[name]
    if q.kind == "depth":
        return torch.rand(B, H, W) * 5 + 1
    if q.kind == "normal":
        return F.normalize(torch.randn(B, 3, H, W), dim=1)
    return torch.randint(0, q.num_bins, (B, H, W))


def invalid_target(name: str) -> torch.Tensor:
    q = QS[name]
    if q.kind == "depth":
        return torch.zeros(B, H, W)
    if q.kind == "normal":
        return torch.zeros(B, 3, H, W)
    return torch.full((B, H, W), -1)


def make_logits(name: str) -> torch.Tensor:
    return torch.randn(B, QS[name].num_bins, H, W, requires_grad=True)


@pytest.mark.parametrize("name", list(QS))
def test_missing_task_is_exact_zero_with_zero_gradient(name):
    logits = make_logits(name)
    loss = task_loss(QS[name], logits, None)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", list(QS))
def test_no_valid_pixel_is_exact_zero_with_zero_gradient(name):
    logits = make_logits(name)
    loss = task_loss(QS[name], logits, invalid_target(name))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    logits.grad = None
    none_valid = torch.zeros(B, H, W, dtype=torch.bool)
    loss = task_loss(QS[name], logits, make_target(name), none_valid)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_missing_task_has_no_nan_even_from_nan_logits():
    logits = torch.full((B, 6, H, W), float("nan"), requires_grad=True)
    loss = task_loss(QS["semseg"], logits, None)
    loss.backward()
    assert loss.item() == 0.0 and not logits.grad.isnan().any()


@pytest.mark.parametrize("name", list(QS))
def test_loss_is_finite_and_trains(name):
    logits = make_logits(name)
    loss = task_loss(QS[name], logits, make_target(name))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_classification_is_cross_entropy_over_valid_pixels():
    logits = make_logits("semseg")
    target = make_target("semseg")
    target[0, 0, :3] = -1
    expected = F.cross_entropy(logits, target, ignore_index=-1)
    assert torch.allclose(task_loss(QS["semseg"], logits, target), expected)


def test_depth_mixture_loss_by_hand():
    q = Quantizer(name="depth", kind=DEPTH, num_bins=2, centres=torch.tensor([1.0, 4.0]))
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[1.0, 3.0]]])
    # pixel 0: p = (1/2, 1/2) -> 2.5 m, bin 0;  pixel 1: p = (1/4, 3/4) -> 3.25 m, bin 1
    l0 = REGRESSION_WEIGHT * 1.5 + math.log(2)
    l1 = REGRESSION_WEIGHT * 0.25 - math.log(0.75)
    loss, valid = pixel_loss(q, logits, target)
    assert valid.all()
    assert torch.allclose(loss, torch.tensor([[[l0, l1]]]))
    assert task_loss(q, logits, target).item() == pytest.approx((l0 + l1) / 2)


def test_angle_between_is_exact_and_has_finite_gradients():
    x = torch.tensor([[1.0, 0.0, 0.0]])
    for other, deg in [((1.0, 0.0, 0.0), 0), ((0.0, 2.0, 0.0), 90), ((-1.0, 0.0, 0.0), 180)]:
        a = x.clone().requires_grad_()
        ang = angle_between(a, torch.tensor([other]))
        ang.sum().backward()
        assert math.degrees(ang.item()) == pytest.approx(deg, abs=1e-3)
        assert torch.isfinite(a.grad).all()


def test_normal_regression_term_is_the_angle():
    q = QS["normal"]
    big = torch.full((1, q.num_bins, 1, 1), -50.0)
    big[0, 0] = 50.0  # predicts centre 0
    target = q.centres[0].reshape(1, 3, 1, 1)
    loss, _ = pixel_loss(q, big, target)
    assert loss.item() == pytest.approx(0.0, abs=1e-4)


def test_supervised_loss_is_eq5_per_image():
    qs = {"semseg": QS["semseg"], "depth": QS["depth"]}
    logits = {k: make_logits(k) for k in qs}
    targets = {k: make_target(k) for k in qs}
    alphas = {"semseg": torch.tensor([1.0, 0.0]), "depth": torch.tensor([0.0, 1.0])}
    loss = supervised_loss(qs, logits, targets, alphas=alphas)
    seg = image_losses(qs["semseg"], logits["semseg"], targets["semseg"])[0]
    dep = image_losses(qs["depth"], logits["depth"], targets["depth"])[1]
    assert loss.item() == pytest.approx(((seg + dep) / 2 / 2).item(), rel=1e-5)
    loss.backward()
    assert torch.equal(logits["semseg"].grad[1], torch.zeros_like(logits["semseg"].grad[1]))
    assert torch.equal(logits["depth"].grad[0], torch.zeros_like(logits["depth"].grad[0]))
    assert logits["semseg"].grad[0].abs().sum() > 0


def test_supervised_loss_counts_all_tasks_in_t():
    logits = {k: make_logits(k) for k in QS}
    targets = {"semseg": make_target("semseg")}  # three tasks missing
    only = supervised_loss({"semseg": QS["semseg"]}, logits, targets)
    four = supervised_loss(QS, logits, targets)
    assert four.item() == pytest.approx(only.item() / 4)
    four.backward()
    assert torch.equal(logits["depth"].grad, torch.zeros_like(logits["depth"]))


def test_pseudo_label_loss_masks_by_confidence():
    q = {"semseg": QS["semseg"]}
    logits = {"semseg": make_logits("semseg")}
    label = make_target("semseg")
    conf = torch.full((B, H, W), 0.5)
    conf[:, 0, 0] = 0.95  # one confident pixel per image
    args = (q, logits, {"semseg": label}, {"semseg": conf})
    alphas = {"semseg": torch.tensor([0.0, 1.0])}  # image 1 has ground truth: no pseudo loss
    loss = pseudo_label_loss(*args, alphas, {"semseg": 0.9})
    per_pixel, _ = pixel_loss(q["semseg"], logits["semseg"], label)
    # literal M_p * L: the confident pixel's loss over all H*W valid pixels, / B, / T
    assert loss.item() == pytest.approx(per_pixel[0, 0, 0].item() / (H * W) / B, rel=1e-5)
    mean_conf = pseudo_label_loss(*args, alphas, {"semseg": 0.9}, per_confident_pixel=True)
    assert mean_conf.item() == pytest.approx(per_pixel[0, 0, 0].item() / B, rel=1e-5)
    loss.backward()
    grad = logits["semseg"].grad
    assert grad[0, :, 0, 0].abs().sum() > 0
    assert grad[0, :, 1:].abs().sum() == 0 and grad[1].abs().sum() == 0


def test_pseudo_label_loss_missing_label_is_zero():
    logits = {"depth": make_logits("depth")}
    loss = pseudo_label_loss({"depth": QS["depth"]}, logits, {"depth": None}, {}, None, {})
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits["depth"].grad, torch.zeros(B, 30, H, W))


def test_pseudo_label_loss_needs_a_threshold():
    logits = {"depth": make_logits("depth")}
    with pytest.raises(KeyError, match="threshold"):
        pseudo_label_loss(
            {"depth": QS["depth"]},
            logits,
            {"depth": make_target("depth")},
            {"depth": torch.ones(B, H, W)},
            None,
            {"semseg": 0.9},
        )


def test_feature_loss_by_hand():
    f = torch.ones(2, 4, 3, 3, requires_grad=True)
    saved = torch.zeros(2, 4, 3, 3)
    mask = torch.full((2, 1, 3, 3), 0.5)
    alphas = {"t": torch.tensor([1.0, 0.0])}
    # image 0 labelled: MSE 1; image 1 unlabelled: 0.5 * 1
    loss = feature_loss({"t": f}, {"t": saved}, {"t": mask}, alphas)
    assert loss.item() == pytest.approx((1.0 + 0.5) / 2)
    loss2 = feature_loss({"t": f}, {"t": saved}, {"t": mask[:, 0]}, alphas)
    assert loss2.item() == pytest.approx(loss.item())
    # a second task without saved features adds zero but counts in T
    g = torch.ones(2, 4, 3, 3, requires_grad=True)
    both = feature_loss({"t": f, "u": g}, {"t": saved, "u": None}, {"t": mask}, alphas)
    assert both.item() == pytest.approx(loss.item() / 2)
    both.backward()
    assert torch.equal(g.grad, torch.zeros_like(g))


def test_thresholds_follow_appendix_b():
    assert default_thresholds("nyud_onelabel") == {"semseg": 0.9, "depth": 0.45, "normal": 0.6}
    assert default_thresholds("nyud_randomlabels")["depth"] == 0.7
    assert default_thresholds("cityscapes_onelabel") == {"semseg": 0.9, "depth": 0.5}
    assert PSEUDO_LABEL_THRESHOLDS["pascal_onelabel"]["human_parts"] == 0.85
    t = default_thresholds("nyud_onelabel")
    t["semseg"] = 0.0
    assert PSEUDO_LABEL_THRESHOLDS["nyud_onelabel"]["semseg"] == 0.9
    with pytest.raises(KeyError, match="known"):
        default_thresholds("nyud")
