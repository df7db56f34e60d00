"""Offline label discovery (Sec. 3.3, Sec. 4.1 "Training Pipeline").

A trained model, frozen, labels the clean (un-augmented) training images: per task the pseudo-label
``Y~`` with its confidence (max softmax, the basis of ``M_p`` of Eq. 7), the updated task feature
``F~ = F'_i`` that ``L_f`` pulls towards (Eq. 6), and ``M_f`` (Sec. 3.3). A model without global
tokens (the MTL / STL baselines) gives ``M_f`` = 1 and no feature target is used with it.

Training flips images left-right. A pseudo-label flips with its image, but a task feature does not:
convolution features are not mirror-symmetric (an oriented filter answers a mirrored pattern in
another channel), and the teacher's features of a flipped image differ from its flipped features
about as much as two unrelated images' features do. So the teacher also sees each clean image
flipped, and a flipped training image is pulled towards those features and ``M_f``
(``feature_hflip``, ``mf_hflip``, already in the flipped image's orientation).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from hitts.model.evaluate import forward_images
from hitts.model.quantize import Quantizer
from hitts.model.tensor_set import TensorSet


@torch.no_grad()
def discover(
    model: nn.Module,
    quantizers: dict[str, Quantizer],
    data: TensorSet,
    *,
    batch_size: int = 16,
    sharpen: float = 1.0,
    keep_features: bool = True,
    hflip_features: bool = True,
    progress: bool = False,
) -> dict[str, dict[str, Tensor]]:
    """Task -> {"label", "confidence", "feature", "mf", "feature_hflip", "mf_hflip"} over every
    image of ``data``, on the CPU.

    Shapes: label (N, H, W) or (N, 3, H, W) canonical; confidence (N, H, W) float16; feature
    (N, C, h, w) float16; mf (N, 1, h, w) float16; the ``_hflip`` pair is the same of the
    left-right flipped images (only with ``keep_features`` and ``hflip_features``). Features are
    stored at half precision to halve the memory; the squared error of Eq. 6 is computed in
    float32 after loading.
    """
    device = next(model.parameters()).device
    model.eval()
    keys = ("label", "confidence", "feature", "mf", "feature_hflip", "mf_hflip")
    parts: dict[str, dict[str, list[Tensor]]] = {}
    starts = range(0, len(data), batch_size)
    for start in tqdm(starts, desc="discover", disable=not progress):
        images = data.images[start : start + batch_size]
        out = forward_images(model, images, device)
        flipped = (
            forward_images(model, images.flip(-1), device)
            if keep_features and hflip_features
            else {}
        )
        for name, o in out.items():
            label, conf = quantizers[name].pseudo_label(o["logits"], sharpen)
            p = parts.setdefault(name, {k: [] for k in keys})
            p["label"].append(label.cpu())
            p["confidence"].append(conf.half().cpu())
            if keep_features:
                p["feature"].append(o["feature"].half().cpu())
                p["mf"].append(o["mf"].half().cpu())
            if name in flipped:
                p["feature_hflip"].append(flipped[name]["feature"].half().cpu())
                p["mf_hflip"].append(flipped[name]["mf"].half().cpu())
    return {name: {k: torch.cat(v) for k, v in p.items() if v} for name, p in parts.items()}


def save_discovery(
    path: Path, found: dict[str, dict[str, Tensor]], keys: list[str], meta: dict
) -> None:
    """Write atomically; loadable with ``weights_only=True``."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"keys": list(keys), "meta": meta, "tasks": found}, tmp)
    tmp.replace(path)


def load_discovery(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
