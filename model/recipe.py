"""Fitting a run's task bins to its training data.

Depth bins span the training depths (the 0.5th to 99.5th percentile of the valid labelled pixels,
so a few outliers do not stretch them); normal centres are k-means over the training normals
(Appendix A.1), or uniform unit vectors when there are too few labelled normals.
"""

from __future__ import annotations

import logging

import torch

from hitts.model.quantize import Quantizer, QuantizeSettings, fit_normal_centres
from hitts.model.tasks import DEPTH, NORMAL
from hitts.model.tensor_set import TensorSet

log = logging.getLogger(__name__)

MIN_NORMALS_FOR_KMEANS = 1000  # fewer labelled normal pixels than this: uniform centres


def fit_quantizers(
    data: TensorSet, settings: QuantizeSettings | None = None, *, seed: int = 0
) -> dict[str, Quantizer]:
    """Every task's quantizer from the labelled pixels of ``data``."""
    s = settings or QuantizeSettings()
    out = {}
    for i, task in enumerate(data.tasks):
        labelled = data.present[:, i]
        valid = data.valid[task.name] & labelled.view(-1, 1, 1)
        if task.kind == DEPTH:
            depth = data.targets[task.name][valid]
            if depth.numel() >= 2:
                sample = depth[
                    torch.randperm(depth.numel(), generator=torch.Generator().manual_seed(seed))[
                        :1_000_000
                    ]
                ]
                lo, hi = torch.quantile(sample.float(), torch.tensor([0.005, 0.995])).tolist()
                if 0 < lo < hi:
                    s = QuantizeSettings(
                        depth_bins=s.depth_bins,
                        depth_min=lo,
                        depth_max=hi,
                        normal_bins=s.normal_bins,
                        normal_hemisphere=s.normal_hemisphere,
                    )
            out[task.name] = Quantizer.for_task(task, s)
        elif task.kind == NORMAL:
            normals = data.targets[task.name].permute(0, 2, 3, 1)[valid]  # (P, 3)
            centres = None
            if normals.shape[0] >= MIN_NORMALS_FOR_KMEANS:
                centres = fit_normal_centres(normals, s.normal_bins, seed=seed)
            else:
                log.warning(
                    "only %d labelled normal pixels: uniform normal centres", normals.shape[0]
                )
            out[task.name] = Quantizer.for_task(task, s, normal_centres=centres)
        else:
            out[task.name] = Quantizer.for_task(task, s)
    return out


# tau for tasks the paper's tables do not name: segmentation-like tasks take the semseg value
_FALLBACK_TAU = {"segmentation": 0.9, "edge": 0.9, "depth": 0.45, "normal": 0.6}


def thresholds_for(tasks, setting: str) -> dict[str, float]:
    """τ per task (Appendix B): the NYUD-v2 values of the setting (random-labels: 0.9 / 0.7 / 0.7,
    else one-label's 0.9 / 0.45 / 0.6), the PASCAL-Context values for its tasks (edge 0.9,
    human parts 0.85, saliency 0.7), and the value of the task's kind otherwise."""
    from hitts.model.losses import PSEUDO_LABEL_THRESHOLDS

    nyud = PSEUDO_LABEL_THRESHOLDS[
        "nyud_randomlabels" if setting == "random-labels" else "nyud_onelabel"
    ]
    pascal = PSEUDO_LABEL_THRESHOLDS["pascal_onelabel"]
    out = {}
    for t in tasks:
        out[t.name] = nyud.get(t.name, pascal.get(t.name, _FALLBACK_TAU[t.kind]))
    return out
