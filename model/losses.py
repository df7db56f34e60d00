"""The task loss (Eq. 11-13) and the three training losses: supervised (Eq. 5), pseudo-label
(Eq. 7) and feature (Eq. 6).

Missing labels are data: every loss takes an optional target and a validity mask, and a task with
no target, or with no valid pixel, adds exactly zero loss and zero gradient (never NaN).

Batches mix images labelled for different tasks, so ``alpha_i`` of the paper is per image here: a
(B,) tensor per task, 1 where the image has the task's ground truth and 0 where it has not. Each
of Eq. 5-7 is evaluated per image, as printed (an average over that image's pixels, then the
``1/T`` sum over tasks), and the batch loss is the mean over the B images. ``T`` counts every task
of the model, labelled or not, as in Eq. 5. (The authors' code multiplies by T instead of dividing;
that is one constant factor.)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from hitts.model.quantize import Quantizer
from hitts.model.tasks import DEPTH

# lambda_i of Eq. 13 on depth / normal; classification tasks have no regression term. (The
# authors' code weights the other way round: regression 1, classification 0.1.)
REGRESSION_WEIGHT = 0.1

# tau_i of Appendix B. The authors' code uses other NYUD-v2 values (one-label 0.9 / 0.85 / 0.85);
# we follow the paper. Names are the tasks of each dataset; pass your own mapping for others.
_PASCAL = {"semseg": 0.9, "human_parts": 0.85, "normal": 0.7, "sal": 0.7, "edge": 0.9}
PSEUDO_LABEL_THRESHOLDS: dict[str, dict[str, float]] = {
    "nyud_onelabel": {"semseg": 0.9, "depth": 0.45, "normal": 0.6},
    "nyud_randomlabels": {"semseg": 0.9, "depth": 0.7, "normal": 0.7},
    "cityscapes_onelabel": {"semseg": 0.9, "depth": 0.5},
    "pascal_onelabel": _PASCAL,
    "pascal_randomlabels": _PASCAL,
}


def default_thresholds(setting: str) -> dict[str, float]:
    """A copy of the Appendix B thresholds of one dataset setting, e.g. ``"nyud_onelabel"``."""
    if setting not in PSEUDO_LABEL_THRESHOLDS:
        raise KeyError(f"unknown setting {setting!r}; known: {sorted(PSEUDO_LABEL_THRESHOLDS)}")
    return dict(PSEUDO_LABEL_THRESHOLDS[setting])


def angle_between(a: Tensor, b: Tensor, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """Angle in radians between vectors along ``dim``, as ``atan2(|a x b|, a . b)``.

    Unlike ``arccos`` of the cosine, this has bounded gradients at 0 and 180 degrees and needs
    no unit inputs; ``eps`` inside the square root adds at most ``sqrt(eps)`` rad and keeps the
    gradient finite where ``a x b = 0``.
    """
    sin = (torch.linalg.cross(a, b, dim=dim).pow(2).sum(dim) + eps).sqrt()
    return torch.atan2(sin, (a * b).sum(dim))


def pixel_loss(
    quantizer: Quantizer,
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    *,
    class_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The mixture loss of Eq. 13 at every pixel.

    ``lambda * L_reg(Y^, Y) + L_cls(G', Y^oh)``: cross-entropy of the logits against the bin of
    the label (Eq. 12) plus, for depth and normal, 0.1 times the L1 error in label units (metres)
    or the angle error in radians of the decoded prediction (Eq. 10, 11).

    Args:
        quantizer: The task's bins.
        logits: (B, C_p, H, W) ``G'``.
        target: (B, H, W) class ids / metres, or (B, 3, H, W) unit normals, canonical invalid marks.
        valid: Optional (B, H, W) bool, and-ed with the label's own invalid marks.
        class_weight: Optional (C_p,) cross-entropy class weights (e.g. for rare edge pixels);
            the paper uses none.

    Returns:
        The (B, H, W) loss, exactly 0 with zero gradient off the valid pixels, and the (B, H, W)
        bool valid mask it used.
    """
    valid = quantizer.valid_mask(target, valid)
    if target.shape[-2:] != logits.shape[-2:] or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{quantizer.name}: logits {tuple(logits.shape)} and target {tuple(target.shape)} "
            "differ in batch or spatial size"
        )
    y_oh = quantizer.to_class(target, valid)  # Eq. 12, -1 off the valid pixels
    loss = F.cross_entropy(logits, y_oh, weight=class_weight, ignore_index=-1, reduction="none")
    if quantizer.is_classification:
        return loss, valid
    pred = quantizer.decode(logits)  # Eq. 10
    if quantizer.kind == DEPTH:
        reg = (pred - torch.where(valid, target, 0).to(pred.dtype)).abs()  # Eq. 11, L1
    else:
        safe = torch.where(valid[:, None], target, 0).to(pred.dtype)
        reg = angle_between(pred, safe)  # Eq. 11, angle loss
    return loss + REGRESSION_WEIGHT * torch.where(valid, reg, 0), valid  # Eq. 13


def task_loss(
    quantizer: Quantizer,
    logits: Tensor,
    target: Tensor | None,
    valid: Tensor | None = None,
    *,
    class_weight: Tensor | None = None,
) -> Tensor:
    """Scalar Eq. 13 averaged over all valid pixels of the batch; exactly 0 without any.

    Args:
        quantizer: The task's bins.
        logits: (B, C_p, H, W).
        target: Canonical batched label (see :func:`pixel_loss`), or None for a missing task.
        valid: Optional (B, H, W) bool mask.
        class_weight: Optional (C_p,) cross-entropy class weights.
    """
    if target is None:
        return _zero(logits)
    loss, valid = pixel_loss(quantizer, logits, target, valid, class_weight=class_weight)
    return loss.sum() / valid.sum().clamp_min(1)


def image_losses(
    quantizer: Quantizer,
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    *,
    pixel_mask: Tensor | None = None,
    class_weight: Tensor | None = None,
) -> Tensor:
    """(B,) Eq. 13 per image: the sum of ``pixel_mask * loss`` over its valid pixels, divided by
    the number of its valid pixels; 0 for an image without one.

    Args:
        pixel_mask: Optional (B, H, W) weight on each pixel's loss (``M^p`` of Eq. 7).
    """
    loss, valid = pixel_loss(quantizer, logits, target, valid, class_weight=class_weight)
    if pixel_mask is not None:
        loss = loss * pixel_mask.to(loss.dtype)
    return loss.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)


def supervised_loss(
    quantizers: Mapping[str, Quantizer],
    per_task_logits: Mapping[str, Tensor],
    targets: Mapping[str, Tensor | None],
    valids: Mapping[str, Tensor | None] | None = None,
    alphas: Mapping[str, Tensor | None] | None = None,
    *,
    class_weights: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Eq. 5: ``L_s = 1/T sum_i alpha_i L_i(Y^_i, Y_i)``, per image, mean over the batch.

    Args:
        quantizers: Every task of the model, by name; ``T = len(quantizers)``.
        per_task_logits: (B, C_p, H, W) logits per task.
        targets: Canonical batched label per task; a task absent or None adds zero.
        valids: Optional (B, H, W) bool mask per task.
        alphas: (B,) per task, 1 where the image has the task's ground truth. A task missing here
            counts as labelled on every image that has a valid pixel. Images with alpha 0 are
            ignored whatever their target holds.
        class_weights: Optional (C_p,) cross-entropy class weights per task.
    """
    total = _zero(next(iter(per_task_logits.values())))
    for name, q in quantizers.items():
        logits, target = per_task_logits[name], targets.get(name)
        if target is None:
            total = total + _zero(logits)
            continue
        alpha = _alpha(alphas, name, logits)
        valid = _restrict(_get(valids, name), alpha > 0, target, q)
        li = image_losses(q, logits, target, valid, class_weight=_get(class_weights, name))
        total = total + (alpha * li).mean()  # Eq. 5, mean over the B images
    return total / len(quantizers)


def pseudo_label_loss(
    quantizers: Mapping[str, Quantizer],
    per_task_logits: Mapping[str, Tensor],
    pseudo_labels: Mapping[str, Tensor | None],
    confidences: Mapping[str, Tensor | None],
    alphas: Mapping[str, Tensor | None] | None,
    thresholds: Mapping[str, float],
    valids: Mapping[str, Tensor | None] | None = None,
    *,
    per_confident_pixel: bool = False,
    class_weights: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Eq. 7: ``L_p = 1/T sum_i (1 - alpha_i) M^p_i * L_i(Y^_i, Y~_i)`` with
    ``M^p_i = confidence_i > tau_i``.

    ``M^p`` multiplies the per-pixel loss, which is then averaged over the pseudo-label's valid
    pixels (the literal ``M^p (.) L_i``, as the authors' code does), so an image with few
    confident pixels weighs less. ``per_confident_pixel=True`` averages over the confident pixels
    instead, i.e. the valid mask restricted to ``M^p``.

    Args:
        quantizers: Every task of the model; ``T = len(quantizers)``.
        per_task_logits: (B, C_p, H, W) logits per task.
        pseudo_labels: Offline ``Y~`` per task in canonical form (:meth:`Quantizer.pseudo_label`);
            a task absent or None adds zero.
        confidences: (B, H, W) confidence of each pseudo-label.
        alphas: (B,) per task, 1 where the image has ground truth (no pseudo-label loss there).
            None or a task missing: no image has ground truth.
        thresholds: ``tau_i`` per task, e.g. :func:`default_thresholds`.
        valids: Optional (B, H, W) bool mask per task.
        per_confident_pixel: Average over confident pixels instead of all valid ones.
        class_weights: Optional (C_p,) cross-entropy class weights per task.
    """
    total = _zero(next(iter(per_task_logits.values())))
    for name, q in quantizers.items():
        logits, label = per_task_logits[name], pseudo_labels.get(name)
        if label is None:
            total = total + _zero(logits)
            continue
        if name not in thresholds:
            raise KeyError(f"no threshold for task {name!r}; have {sorted(thresholds)}")
        conf = confidences[name]
        if conf is None:
            raise ValueError(f"task {name!r} has a pseudo-label but no confidence")
        m_p = conf.detach() > thresholds[name]  # (B, H, W)
        one_minus_alpha = 1 - _alpha(alphas, name, logits, default=0.0)
        valid = _restrict(_get(valids, name), one_minus_alpha > 0, label, q)
        if per_confident_pixel:
            valid, m_p = valid & m_p, None
        li = image_losses(
            q, logits, label.detach(), valid, pixel_mask=m_p, class_weight=_get(class_weights, name)
        )
        total = total + (one_minus_alpha * li).mean()  # Eq. 7
    return total / len(quantizers)


def feature_loss(
    features: Mapping[str, Tensor],
    saved_features: Mapping[str, Tensor | None],
    masks: Mapping[str, Tensor | None] | None,
    alphas: Mapping[str, Tensor | None] | None,
) -> Tensor:
    """Eq. 6: ``L_f = 1/T sum_i alpha_i MSE(F'_i, F~_i) + (1 - alpha_i) M^f_i * MSE(F'_i, F~_i)``.

    The squared error is averaged over channels, then (times ``M^f`` for unlabelled images)
    over the h*w positions; ``F~`` and ``M^f`` are treated as constants.

    Args:
        features: (B, C, h, w) ``F'_i`` per task; ``T = len(features)``.
        saved_features: (B, C, h, w) offline ``F~_i``; a task absent or None adds zero.
        masks: (B, 1, h, w) or (B, h, w) ``M^f_i`` in [0, 1]; None or missing means all ones.
        alphas: (B,) per task, 1 where the image has the task's ground truth; None or missing
            means no image has it.
    """
    total = _zero(next(iter(features.values())))
    for name, f in features.items():
        f_saved = saved_features.get(name)
        if f_saved is None:
            total = total + _zero(f)
            continue
        if f_saved.shape != f.shape or f.ndim != 4:
            raise ValueError(
                f"{name}: features must both be (B, C, h, w), got "
                f"{tuple(f.shape)} and {tuple(f_saved.shape)}"
            )
        se = (f - f_saved.detach()).pow(2).mean(dim=1)  # (B, h, w)
        m_f = _get(masks, name)
        if m_f is None:
            m_f = torch.ones_like(se)
        else:
            m_f = m_f.detach().to(se.dtype)
            m_f = m_f[:, 0] if m_f.ndim == 4 else m_f
            if m_f.shape != se.shape:
                raise ValueError(
                    f"{name}: mask must be (B, 1, h, w) or (B, h, w) matching "
                    f"{tuple(se.shape)}, got {tuple(masks[name].shape)}"
                )
        alpha = _alpha(alphas, name, f, default=0.0)
        labelled = se.flatten(1).mean(1)  # (B,)
        unlabelled = (m_f * se).flatten(1).mean(1)
        total = total + (alpha * labelled + (1 - alpha) * unlabelled).mean()  # Eq. 6
    return total / len(features)


def _zero(like: Tensor) -> Tensor:
    """A scalar 0 tied to ``like``'s graph, with zero gradient even where ``like`` is NaN."""
    return like.reshape(-1)[:0].sum()


def _get(mapping: Mapping | None, name: str):
    return None if mapping is None else mapping.get(name)


def _alpha(alphas: Mapping | None, name: str, like: Tensor, default: float = 1.0) -> Tensor:
    """(B,) float alpha of one task, ``default`` everywhere when not given."""
    a = _get(alphas, name)
    b = like.shape[0]
    if a is None:
        return like.new_full((b,), default).detach()
    a = torch.as_tensor(a, device=like.device).reshape(-1)
    if a.shape != (b,):
        raise ValueError(f"{name}: alpha must be ({b},), got {tuple(a.shape)}")
    return a.to(like.dtype)


def _restrict(valid: Tensor | None, keep: Tensor, target: Tensor, q: Quantizer) -> Tensor:
    """The (B, H, W) valid mask with the images where ``keep`` (B,) is False switched off."""
    return q.valid_mask(target, valid) & keep[:, None, None]
