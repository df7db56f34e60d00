"""Predictors: numpy images in, per-task suggestions out, the same for every engine.

:class:`SuggestionHead` wraps a trained network with its quantizers and turns logits into what the
store keeps: the decoded pseudo-label (Eq. 10), its confidence (max softmax, the basis of ``M_p``,
Eq. 7), the global-token score map ``M_f`` (Sec. 3.3) and the fine-grained score map. The same
module is what :mod:`hitts.exporters.onnx` exports, so PyTorch and ONNX Runtime give the same
outputs by construction.

:class:`TorchPredictor` owns the rest (the segment-anything ``Predictor`` pattern): resizing to
the model's training size and back, batching, device choice, numpy in and out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hitts.model.quantize import Quantizer
from hitts.model.tasks import NORMAL, TaskSpec
from hitts.model.train import load_checkpoint, model_from_checkpoint, pick_device

OUTPUT_KEYS = ("label", "confidence", "mf", "fine_score")


class SuggestionHead(nn.Module):
    """Network + decoding, tensors in and a flat tuple out (traceable for ONNX export).

    Args:
        model: A network from :func:`hitts.model.network.build_model`.
        quantizers: Its tasks' bins.
        sharpen: Logit multiplier before the confidence softmax (1.0: the paper's max softmax).

    ``forward(x)`` with x (B, 3, H, W) float in [0, 1] returns, for each task in ``self.tasks``
    order, four tensors: label (B, H, W) int64 class ids / float metres, or (B, 3, H, W) unit
    normals; confidence (B, H, W); M_f (B, H, W) upsampled bilinearly; fine score (B, H, W).
    """

    def __init__(self, model: nn.Module, quantizers: dict[str, Quantizer], sharpen: float = 1.0):
        super().__init__()
        self.model = model
        self.tasks = tuple(model.tasks)
        self.quantizers = nn.ModuleDict({t: quantizers[t] for t in self.tasks})
        self.sharpen = sharpen

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        size = (x.shape[-2], x.shape[-1])
        out = self.model(x)
        flat = []
        for task in self.tasks:
            o, q = out[task], self.quantizers[task]
            label = q.decode(o["logits"])  # Eq. 10 (argmax for classes)
            conf = q.confidence(o["logits"], self.sharpen)  # max softmax, (B, H, W)
            mf = F.interpolate(o["mf"], size=size, mode="bilinear", align_corners=False)[:, 0]
            flat += [label, conf, mf, o["fine_score"][:, 0]]
        return tuple(flat)


class Predictor(ABC):
    """What every engine offers: batches of images in, suggestions out.

    Attributes:
        tasks: The model's tasks, in output order.
        size: (H, W) the model runs at (its training size); inputs are resized to it and the
            outputs back to each image's size.
    """

    tasks: tuple[TaskSpec, ...]
    size: tuple[int, int]
    engine: str = ""

    @abstractmethod
    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        """(B, 3, H, W) float32 in [0, 1] at ``size`` -> the flat outputs of SuggestionHead."""

    def predict(self, images: list[np.ndarray]) -> list[dict[str, dict[str, np.ndarray]]]:
        """Suggestions for a batch of (H, W, 3) uint8 images (sizes may differ).

        Returns, per image, task -> {"label", "confidence", "mf", "fine_score"} at the image's own
        size: label in the canonical form of :mod:`hitts.model.tasks` ((H, W) int64 or float32,
        (H, W, 3) normals), the three maps (H, W) float32 in [0, 1] (fine score: >= 0).
        """
        if not images:
            return []
        for im in images:
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] != 3:
                raise ValueError(f"images must be (H, W, 3) uint8 RGB, got {im.dtype} {im.shape}")
        x = torch.stack([_to_input(im, self.size) for im in images]).numpy()
        flat = self._run(x)
        results = []
        for b, im in enumerate(images):
            hw = im.shape[:2]
            per_task = {}
            for i, task in enumerate(self.tasks):
                label, conf, mf, fine = (
                    torch.from_numpy(np.asarray(a[b])) for a in flat[4 * i : 4 * i + 4]
                )
                per_task[task.name] = {
                    "label": _label_to_size(task, label, hw),
                    "confidence": _map_to_size(conf, hw),
                    "mf": _map_to_size(mf, hw),
                    "fine_score": _map_to_size(fine, hw),
                }
            results.append(per_task)
        return results


class TorchPredictor(Predictor):
    """PyTorch eager on CUDA when present, else CPU."""

    engine = "torch"

    def __init__(
        self, checkpoint: str | Path, *, sharpen: float = 1.0, device: torch.device | None = None
    ):
        state = load_checkpoint(checkpoint)
        model, quantizers, tasks = model_from_checkpoint(state)
        self.device = device or pick_device()
        self.head = SuggestionHead(model, quantizers, sharpen).to(self.device).eval()
        by_name = {t.name: t for t in tasks}
        self.tasks = tuple(by_name[t] for t in self.head.tasks)
        self.all_tasks = tasks
        self.size = tuple(state["size"])
        self.metadata = {k: state[k] for k in ("model_config", "epoch", "extra") if k in state}

    @torch.no_grad()
    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        out = self.head(torch.from_numpy(x).to(self.device))
        return [o.cpu().numpy() for o in out]


def _to_input(image: np.ndarray, size: tuple[int, int]) -> Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
    return x


def _map_to_size(m: Tensor, hw: tuple[int, int]) -> np.ndarray:
    if tuple(m.shape) != tuple(hw):
        m = F.interpolate(m[None, None].float(), size=hw, mode="bilinear", align_corners=False)[
            0, 0
        ]
    return m.float().numpy()


def _label_to_size(task: TaskSpec, label: Tensor, hw: tuple[int, int]) -> np.ndarray:
    if task.kind == NORMAL:
        n = label.float()  # (3, h, w)
        if tuple(n.shape[-2:]) != tuple(hw):
            n = F.interpolate(n[None], size=hw, mode="bilinear", align_corners=False)[0]
            n = n / n.norm(dim=0, keepdim=True).clamp_min(1e-6)
        return n.permute(1, 2, 0).numpy().astype(np.float32)  # (H, W, 3)
    if tuple(label.shape) != tuple(hw):
        mode = "nearest" if task.is_classification else "bilinear"
        kw = {} if mode == "nearest" else {"align_corners": False}
        label = F.interpolate(label[None, None].float(), size=hw, mode=mode, **kw)[0, 0]
    return label.numpy().astype(np.int64 if task.is_classification else np.float32)
