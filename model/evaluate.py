"""Metrics of a model over a split (Sec. 4.1, "Evaluation Metrics")."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hitts.model.metrics import make_meter, metric_input
from hitts.model.quantize import Quantizer
from hitts.model.tensor_set import TensorSet


def forward_images(model: nn.Module, images: Tensor, device: torch.device) -> dict:
    """Run the model on a (B, 3, H, W) uint8 batch."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    return model(x)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    quantizers: dict[str, Quantizer],
    data: TensorSet,
    *,
    batch_size: int = 16,
    device: torch.device | None = None,
) -> dict[str, dict]:
    """Task -> metrics dict over every valid pixel of ``data`` (ground truth only).

    Only tasks the model predicts are scored; each meter pools the whole split.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    specs = {t.name: t for t in data.tasks}
    meters = {}
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        out = forward_images(model, data.images[sl], device)
        for name, o in out.items():
            meter = meters.setdefault(name, make_meter(specs[name]))
            pred = metric_input(quantizers[name], o["logits"]).cpu()
            target = data.targets[name][sl].clone()
            invalid = ~data.valid[name][sl]
            if target.ndim == 4:
                target[invalid[:, None].expand_as(target)] = 0
            elif target.dtype.is_floating_point:
                target[invalid] = 0
            else:
                target[invalid] = -1
            meter.update(pred, target)
    model.train(was_training)
    return {name: m.compute() for name, m in meters.items()}
