"""Evaluation metrics of Sec. 4.1, accumulated over a whole split, and Delta_MTL (Eq. 9).

Each accumulator takes batches with ``update(pred, target)`` (torch tensors or numpy arrays, one
image or a batch) and returns plain Python numbers from ``compute()``. Every statistic is pooled
over all valid pixels of the split, not averaged per batch or per image (MTAN's reference code
averages per batch, so its numbers move with the batch size). Ratios are in percent, as in the
paper's tables; errors are in label units (metres, degrees).

================  ======================  ===========================================
accumulator       ``pred``                keys
================  ======================  ===========================================
SegmentationMeter (B, H, W) class ids     mIoU, pAcc, IoU (per class, None if absent)
DepthMeter        (B, H, W) metres        abs_err, rmse, rel_err
NormalMeter       (B, 3, H, W)            mean, median, rmse, within_11.25/22.5/30
EdgeMeter         (B, H, W) P(edge)       odsF, threshold, precision, recall
================  ======================  ===========================================

:func:`metric_input` turns logits into the ``pred`` each meter expects.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hitts.model.losses import angle_between
from hitts.model.quantize import Quantizer
from hitts.model.tasks import DEPTH, EDGE, NORMAL, SEGMENTATION, TaskSpec

# Metric names where a lower value is better (l_t = 1 in Eq. 9); all others are higher-is-better.
LOWER_IS_BETTER = frozenset({"abs_err", "rmse", "rel_err", "mean", "median"})

NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)  # degrees, eta of Sec. 4.1
MEDIAN_BIN_DEG = 0.01  # width of the angle histogram the normal median is read from


def _as_tensor(x) -> Tensor:
    return x.detach() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _batched(x: Tensor, ndim: int, what: str) -> Tensor:
    """Add the batch axis to a single image; check the number of axes."""
    if x.ndim == ndim - 1:
        x = x[None]
    if x.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} axes ({ndim - 1} unbatched), got {x.ndim}")
    return x


def _check_same(pred: Tensor, target: Tensor, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred {tuple(pred.shape)} != target {tuple(target.shape)}")


class SegmentationMeter:
    """Confusion matrix over a split -> mIoU and pixel accuracy; target -1 is ignored.

    ``IoU_c = TP / (TP + FP + FN)``. A class absent from both prediction and truth has no IoU: it
    is reported as None and left out of the mean (the MTAN / MTPSL reference
    ``ConfMatrix`` returns a NaN mean there).
    """

    def __init__(self, num_classes: int, *, ignore_index: int = -1):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred, target) -> None:
        """Args: pred, target: (B, H, W) or (H, W) int class ids (rows of the matrix: truth)."""
        pred = _batched(_as_tensor(pred), 3, "pred").long()
        target = _batched(_as_tensor(target), 3, "target").long().to(pred.device)
        _check_same(pred, target, "segmentation")
        keep = target != self.ignore_index
        t, p = target[keep], pred[keep]
        c = self.num_classes
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= c or p.min() < 0 or p.max() >= c):
            raise ValueError(f"class ids must lie in [0, {c}); {self.ignore_index} = ignored")
        self.confusion += torch.bincount(t * c + p, minlength=c * c).reshape(c, c).cpu()

    def compute(self) -> dict:
        cm = self.confusion.double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        iou = [float(100 * i / u) if u > 0 else None for i, u in zip(tp, union, strict=True)]
        present = [v for v in iou if v is not None]
        total = cm.sum()
        return {
            "mIoU": sum(present) / len(present) if present else None,
            "pAcc": float(100 * tp.sum() / total) if total > 0 else None,
            "IoU": iou,
        }


class DepthMeter:
    """Absolute error, RMSE and relative error over every valid pixel of the split (truth 0 =
    invalid). MTAN averages per batch instead."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.sum_abs = self.sum_sq = self.sum_rel = 0.0

    def update(self, pred, target) -> None:
        """Args: pred, target: (B, H, W) or (H, W) depth; also (B, 1, H, W)."""
        pred, target = _as_tensor(pred).double(), _as_tensor(target).double()
        if pred.ndim == 4 and pred.shape[1] == 1:
            target = target.reshape(pred.shape[0], *pred.shape[2:])
            pred = pred[:, 0]
        pred, target = _batched(pred, 3, "pred"), _batched(target, 3, "target").to(pred.device)
        _check_same(pred, target, "depth")
        keep = target > 0
        err = (pred[keep] - target[keep]).abs()
        self.n += int(keep.sum())
        self.sum_abs += float(err.sum())
        self.sum_sq += float(err.pow(2).sum())
        self.sum_rel += float((err / target[keep]).sum())

    def compute(self) -> dict:
        if self.n == 0:
            return {"abs_err": None, "rmse": None, "rel_err": None}
        return {
            "abs_err": self.sum_abs / self.n,
            "rmse": math.sqrt(self.sum_sq / self.n),
            "rel_err": self.sum_rel / self.n,
        }


class NormalMeter:
    """Angle error in degrees over every valid pixel of the split (all-zero truth = invalid).

    Mean, RMSE and the fractions under 11.25 / 22.5 / 30 degrees are exact. The median is read
    from a histogram of :data:`MEDIAN_BIN_DEG`-wide bins (each value taken as its bin's centre,
    the two middle values averaged as ``np.median`` does), so memory stays flat over the split;
    it is within half a bin width (0.005 degrees) of the exact median.
    """

    def __init__(self) -> None:
        self.num_bins = round(180 / MEDIAN_BIN_DEG)
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.sum = self.sum_sq = 0.0
        self.within = [0] * len(NORMAL_THRESHOLDS)
        self.hist = torch.zeros(self.num_bins, dtype=torch.int64)

    def update(self, pred, target) -> None:
        """Args: pred, target: (B, 3, H, W) or (3, H, W) normals (pred need not be unit)."""
        pred = _batched(_as_tensor(pred).double(), 4, "pred")
        target = _batched(_as_tensor(target).double(), 4, "target").to(pred.device)
        _check_same(pred, target, "normal")
        if pred.shape[1] != 3:
            raise ValueError(f"normals must have 3 channels on axis 1, got {tuple(pred.shape)}")
        keep = (target != 0).any(dim=1)  # (B, H, W)
        deg = torch.rad2deg(angle_between(pred, target, eps=0.0))[keep]
        self.n += deg.numel()
        self.sum += float(deg.sum())
        self.sum_sq += float(deg.pow(2).sum())
        for k, t in enumerate(NORMAL_THRESHOLDS):
            self.within[k] += int((deg < t).sum())
        idx = (deg / MEDIAN_BIN_DEG).long().clamp(0, self.num_bins - 1)
        self.hist += torch.bincount(idx, minlength=self.num_bins).cpu()

    def compute(self) -> dict:
        keys = ["mean", "median", "rmse"] + [f"within_{t:g}" for t in NORMAL_THRESHOLDS]
        if self.n == 0:
            return dict.fromkeys(keys)
        cum = torch.cumsum(self.hist, 0)
        # the two middle order statistics (0-based), each read as its bin's centre
        middle = torch.tensor([(self.n - 1) // 2 + 1, self.n // 2 + 1], dtype=cum.dtype)
        bins = torch.searchsorted(cum, middle).double()
        out = {
            "mean": self.sum / self.n,
            "median": float((bins.mean() + 0.5) * MEDIAN_BIN_DEG),
            "rmse": math.sqrt(self.sum_sq / self.n),
        }
        for t, w in zip(NORMAL_THRESHOLDS, self.within, strict=True):
            out[f"within_{t:g}"] = 100 * w / self.n
        return out


class EdgeMeter:
    """F-measure at the optimal dataset scale (odsF).

    Over a grid of thresholds on P(edge), true and false positives are counted across the split,
    and the best ``F = 2PR / (P + R)`` is returned. A predicted edge pixel is correct if a true
    edge pixel lies within ``max_dist * image diagonal`` (Euclidean, in pixels), and a true edge
    pixel is found if a predicted one lies that close. This is the dilation form of the BSDS
    tolerance (0.0075 of the diagonal); unlike the BSDS benchmark it matches many-to-one rather
    than one-to-one and does not thin the prediction, so it reads a little higher.
    ``max_dist=0`` matches exact pixels. Pixels with truth -1 are left out on both sides.

    Below the BSDS grid, ``low_thresholds`` more are spaced evenly in log from 1e-4 up to its
    first: a model trained with edge class weights predicts from re-balanced probabilities
    (:meth:`Quantizer.set_class_weight`), and early in training all of them can lie under 0.01,
    which the BSDS grid alone scores as "every pixel is an edge". The grid's own thresholds are
    all kept, so a score can only rise above what the BSDS grid gives.

    Args:
        num_thresholds: Thresholds ``k / (n + 1)``, k = 1..n (BSDS uses 99).
        max_dist: Tolerance as a fraction of the image diagonal.
        low_thresholds: Extra thresholds below ``1 / (n + 1)``.
    """

    def __init__(
        self, *, num_thresholds: int = 99, max_dist: float = 0.0075, low_thresholds: int = 20
    ):
        k = torch.arange(1, num_thresholds + 1, dtype=torch.float64)
        grid = k / (num_thresholds + 1)
        low = torch.logspace(-4.0, math.log10(float(grid[0])), low_thresholds + 1, dtype=grid.dtype)
        self.thresholds = torch.cat([low[:-1], grid]) if low_thresholds else grid
        self.max_dist = max_dist
        self.reset()

    def reset(self) -> None:
        k = len(self.thresholds)
        self.n_gt = 0
        self.n_pred = torch.zeros(k, dtype=torch.int64)  # predicted edge pixels per threshold
        self.tp_pred = torch.zeros(k, dtype=torch.int64)  # of those, near a true edge
        self.tp_gt = torch.zeros(k, dtype=torch.int64)  # true edge pixels near a predicted one

    def update(self, pred, target) -> None:
        """Args: pred: (B, H, W) or (H, W) edge probability in [0, 1]; target: same shape,
        int {0, 1}, -1 invalid."""
        prob = _batched(_as_tensor(pred), 3, "pred").double()
        target = _batched(_as_tensor(target), 3, "target").to(prob.device)
        _check_same(prob, target, "edge")
        keep = target >= 0
        gt = (target == 1) & keep
        radius = self.max_dist * math.hypot(*prob.shape[-2:])
        gt_near = _dilate_max(gt.double(), radius) > 0  # within reach of a true edge
        prob = torch.where(keep, prob, -1.0)  # invalid pixels never count as predicted
        prob_near = _dilate_max(prob, radius)  # best prediction within reach
        self.n_gt += int(gt.sum())
        self.n_pred += self._count_above(prob[keep])
        self.tp_pred += self._count_above(prob[keep & gt_near])
        self.tp_gt += self._count_above(prob_near[gt])

    def _count_above(self, values: Tensor) -> Tensor:
        """(K,) number of values >= each threshold."""
        t = self.thresholds.to(values.device)
        n_passed = torch.bucketize(values, t, right=True)  # how many thresholds each value passes
        hist = torch.bincount(n_passed, minlength=len(t) + 1).cpu()
        return hist.flip(0).cumsum(0).flip(0)[1:]

    def compute(self) -> dict:
        if self.n_gt == 0:
            return {"odsF": None, "threshold": None, "precision": None, "recall": None}
        precision = self.tp_pred.double() / self.n_pred.clamp_min(1)
        recall = self.tp_gt.double() / self.n_gt
        f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        k = int(f.argmax())
        return {
            "odsF": 100 * float(f[k]),
            "threshold": float(self.thresholds[k]),
            "precision": 100 * float(precision[k]),
            "recall": 100 * float(recall[k]),
        }


def _dilate_max(x: Tensor, radius: float) -> Tensor:
    """(B, H, W) maximum of ``x`` over a Euclidean disk of ``radius`` pixels around each pixel."""
    r = int(math.floor(radius))
    if r < 1:
        return x
    pad = F.pad(x[:, None], (r, r, r, r), value=float(x.min()) if x.numel() else 0.0)[:, 0]
    h, w = x.shape[-2:]
    out = x.clone()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if (dy or dx) and dy * dy + dx * dx <= radius * radius:
                out = torch.maximum(out, pad[:, r + dy : r + dy + h, r + dx : r + dx + w])
    return out


Meter = SegmentationMeter | DepthMeter | NormalMeter | EdgeMeter


def make_meter(spec: TaskSpec) -> Meter:
    """The accumulator of one task's kind."""
    if spec.kind == SEGMENTATION:
        return SegmentationMeter(spec.num_classes)
    if spec.kind == DEPTH:
        return DepthMeter()
    if spec.kind == NORMAL:
        return NormalMeter()
    if spec.kind == EDGE:
        return EdgeMeter()
    raise ValueError(f"no metric for task kind {spec.kind!r}")


@torch.no_grad()
def metric_input(quantizer: Quantizer, logits: Tensor) -> Tensor:
    """What the task's meter takes from (B, C_p, H, W) logits: class ids, P(edge) = softmax
    channel 1, metres or normals (Eq. 10)."""
    if quantizer.kind == EDGE:
        return quantizer.probabilities(logits)[:, 1]
    return quantizer.decode(logits)


def delta_mtl(
    mtl: Mapping[str, Mapping[str, float]],
    stl: Mapping[str, Mapping[str, float]],
    lower_is_better: Mapping[str, Collection[str]] | None = None,
) -> float:
    """Eq. 9 in percent: ``(-1)^l_t (M_m,t - M_s,t) / M_s,t`` averaged over every metric.

    Eq. 9 prints a sum over N; the paper's tables are the mean over all metrics of all tasks
    (Table 1 one-label: 13.23 for HiTTs, 0.11 for the MTL baseline), so we take the mean.

    Args:
        mtl: Metrics per task of the model under test.
        stl: The single-task baseline; its metrics (per task, None and non-numbers skipped)
            choose which ones count, and each must exist in ``mtl``.
        lower_is_better: Per task, the metric names where lower is better; a task not given
            here uses :data:`LOWER_IS_BETTER`.
    """
    terms = []
    for task, base in stl.items():
        for name, s in base.items():
            if s is None or isinstance(s, (list, tuple, dict, bool)):
                continue
            if task not in mtl or mtl[task].get(name) is None:
                raise KeyError(f"metric {task}/{name} is in the baseline but not in mtl")
            if s == 0:
                raise ValueError(f"baseline metric {task}/{name} is 0; Eq. 9 divides by it")
            lower_names = (lower_is_better or {}).get(task, LOWER_IS_BETTER)
            lower = name in lower_names
            terms.append((-1 if lower else 1) * (mtl[task][name] - s) / s)  # Eq. 9
    if not terms:
        raise ValueError("no metric to compare")
    return 100 * sum(terms) / len(terms)
