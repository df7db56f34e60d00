"""Every task as per-pixel classification (Appendix A.1).

A :class:`Quantizer` maps a task's canonical label to one class index per pixel (the one-hot
``Y^oh`` of Eq. 12) and maps the network's ``C_p`` logits back to a prediction (Eq. 10):

=============  ===============================  ==========================================
kind           bins ``C_p``                     ``decode(logits)``
=============  ===============================  ==========================================
segmentation   the classes (identity)           (B, H, W) int64 argmax class id
edge           the 2 classes (identity)         (B, H, W) int64 argmax class id
depth          log-spaced depth centres         (B, H, W) float metres, soft-weighted sum
normal         unit vectors on the sphere       (B, 3, H, W) float unit, soft-weighted sum
=============  ===============================  ==========================================

Depth stays (B, H, W) like its batched label, so prediction and target line up without a channel
axis; normals are (B, 3, H, W) in tensors, the transpose of the canonical (H, W, 3) array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hitts.model.tasks import DEPTH, KINDS, NORMAL, TaskSpec

# Sec. 3.3 takes the plain Max(Softmax(G')) as the pseudo-label confidence; the authors' public
# code multiplies the depth / normal logits by this factor first. Pass it as ``sharpen`` to match.
AUTHORS_REGRESSION_SHARPEN = 5.0


@dataclass
class QuantizeSettings:
    """How regression tasks are binned.

    Attributes:
        depth_bins: Number of log-spaced depth centres.
        depth_min: Smallest centre, in the unit of the depth label (metres).
        depth_max: Largest centre.
        normal_bins: Number of unit-normal centres when none are fitted.
        normal_hemisphere: Spread the uniform normal centres over the z >= 0 half only
            (normals of visible surfaces face the camera); the paper spreads them over the sphere.
    """

    depth_bins: int = 30  # NYUD-v2 (Appendix A.1)
    depth_min: float = 0.67  # NYUD-v2 range in the authors' code
    depth_max: float = 10.0
    normal_bins: int = 20  # NYUD-v2 k-means centres (Appendix A.1)
    normal_hemisphere: bool = False  # "uniformly from the space"

    def __post_init__(self) -> None:
        if self.depth_bins < 2 or self.normal_bins < 2:
            raise ValueError(
                f"need at least 2 bins, got depth_bins={self.depth_bins}, "
                f"normal_bins={self.normal_bins}"
            )
        if not 0 < self.depth_min < self.depth_max:
            raise ValueError(
                f"need 0 < depth_min < depth_max, got {self.depth_min}, {self.depth_max}"
            )

    @classmethod
    def preset(cls, dataset: str) -> QuantizeSettings:
        """A fresh copy of a paper recipe: ``"nyud"``, ``"cityscapes"`` or ``"pascal"``."""
        if dataset not in PRESETS:
            raise KeyError(f"unknown preset {dataset!r}; known: {sorted(PRESETS)}")
        return cls(**PRESETS[dataset])


# The paper's recipes. Cityscapes "depth" in the MTAN data is a normalised disparity (the authors'
# code bins it over 0.01..0.4922, with 50 bins where the paper says 100); PASCAL-Context uses 40
# uniform normal centres.
PRESETS: dict[str, dict] = {
    "nyud": {},
    "cityscapes": {"depth_bins": 100, "depth_min": 0.01, "depth_max": 0.4922},
    "pascal": {"normal_bins": 40},
}


def log_depth_centres(num_bins: int, d_min: float, d_max: float) -> Tensor:
    """(num_bins,) float32 centres ``exp(linspace(log d_min, log d_max))``, both ends included."""
    log_c = torch.linspace(math.log(d_min), math.log(d_max), num_bins, dtype=torch.float64)
    return log_c.exp().float()


def fibonacci_sphere(num_points: int, *, hemisphere: bool = False) -> Tensor:
    """(num_points, 3) float32 near-uniform unit vectors (the Fibonacci lattice).

    Args:
        num_points: How many vectors.
        hemisphere: Cover only z >= 0 instead of the whole sphere.
    """
    i = torch.arange(num_points, dtype=torch.float64) + 0.5
    z = (1 - i / num_points) if hemisphere else (1 - 2 * i / num_points)
    r = torch.sqrt((1 - z * z).clamp_min(0))
    phi = i * math.pi * (3 - math.sqrt(5))  # golden angle
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=1).float()


def fit_normal_centres(
    normals: Tensor, k: int, seed: int = 0, *, iters: int = 50, max_points: int = 200_000
) -> Tensor:
    """Spherical k-means over training normals (cosine similarity, centres kept unit).

    Args:
        normals: (N, 3) normals; all-zero rows (invalid pixels) are dropped, the rest normalised.
        k: Number of centres.
        seed: Seeds the subsampling and the k-means++ start; same seed, same centres.
        iters: Most Lloyd iterations; stops early when no assignment changes.
        max_points: Random subsample size above which the fit uses a subsample.

    Returns:
        (k, 3) float32 unit centres.
    """
    if normals.ndim != 2 or normals.shape[1] != 3:
        raise ValueError(f"normals must be (N, 3), got {tuple(normals.shape)}")
    x = normals.detach().to("cpu", torch.float64)
    x = x[x.norm(dim=1) > 1e-6]
    if x.shape[0] < k:
        raise ValueError(f"need at least k={k} valid normals, got {x.shape[0]}")
    x = F.normalize(x, dim=1)
    gen = torch.Generator().manual_seed(seed)
    if x.shape[0] > max_points:
        x = x[torch.randperm(x.shape[0], generator=gen)[:max_points]]

    # k-means++ start; 1 - cos is half the squared chord distance, the D^2 of k-means++
    centres = x[torch.randint(x.shape[0], (1,), generator=gen)]
    for _ in range(1, k):
        dist = (1 - x @ centres.T).min(dim=1).values.clamp_min(0)
        if dist.sum() <= 0:
            pick = torch.randint(x.shape[0], (1,), generator=gen)
        else:
            pick = torch.multinomial(dist, 1, generator=gen)
        centres = torch.cat([centres, x[pick]])

    assign = None
    for _ in range(iters):
        sim = x @ centres.T  # (N, k)
        best, new_assign = sim.max(dim=1)
        if assign is not None and torch.equal(new_assign, assign):
            break
        assign = new_assign
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        for j in torch.nonzero(counts == 0).flatten().tolist():  # an empty cluster restarts at
            far = int(best.argmin())  # the point farthest from its own centre
            sums[j] = x[far]
            best[far] = 2.0
        centres = F.normalize(sums, dim=1)
    return centres.float()


class Quantizer(nn.Module):
    """One task's bins: label -> class index (Eq. 12) and logits -> prediction (Eq. 10).

    ``centres`` is a buffer, so it follows the model across devices:
    (0,) for classification tasks (identity), (C_p,) metres for depth, (C_p, 3) unit for normal.
    Build one with :meth:`for_task`; store it with :meth:`to_dict`.
    """

    centres: Tensor
    class_weight: Tensor

    def __init__(
        self,
        *,
        name: str,
        kind: str,
        num_bins: int,
        centres: Tensor | None = None,
        class_weight: Tensor | None = None,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"{name}: kind must be one of {KINDS}, got {kind!r}")
        self.name = name
        self.kind = kind
        self.num_bins = int(num_bins)
        c = torch.empty(0) if centres is None else torch.as_tensor(centres, dtype=torch.float32)
        if kind == DEPTH:
            if c.shape != (self.num_bins,) or not bool((c > 0).all()):
                raise ValueError(
                    f"{name}: depth centres must be ({num_bins},) and > 0, got {tuple(c.shape)}"
                )
            if not bool((c[1:] > c[:-1]).all()):
                raise ValueError(f"{name}: depth centres must increase")
        elif kind == NORMAL:
            if c.shape != (self.num_bins, 3) or not bool((c.norm(dim=1) > 1e-6).all()):
                raise ValueError(
                    f"{name}: normal centres must be ({num_bins}, 3) non-zero, got {tuple(c.shape)}"
                )
            c = F.normalize(c, dim=1)
        elif c.numel():
            raise ValueError(f"{name}: a {kind} task has no centres")
        self.register_buffer("centres", c)
        self.register_buffer("class_weight", torch.empty(0))
        if class_weight is not None:
            self.set_class_weight(class_weight)

    def set_class_weight(self, weight: Tensor | None) -> None:
        """Record the cross-entropy class weights the model is trained with (``None``: none).

        A class-weighted cross-entropy is minimised by ``q_c ∝ w_c p_c`` rather than the
        posterior ``p_c`` itself, so every prediction divides the weights back out (logit
        adjustment, ``G' - log w``) before the argmax, the probabilities and the confidence. Without
        it, edge weights of 0.05 / 0.95 make the argmax call most pixels near a boundary an edge
        and the confident pseudo-labels of Eq. 7 teach thick edges. The loss keeps the raw logits.
        """
        if weight is None:
            self.class_weight = torch.empty(0, device=self.centres.device)
            return
        w = torch.as_tensor(weight, dtype=torch.float32).flatten()
        if not self.is_classification:
            raise ValueError(f"{self.name}: only class tasks take class weights")
        if w.shape != (self.num_bins,) or not bool((w > 0).all()):
            raise ValueError(
                f"{self.name}: class weights must be ({self.num_bins},) and > 0, got {w.tolist()}"
            )
        self.class_weight = w.to(self.centres.device)

    def adjusted(self, logits: Tensor) -> Tensor:
        """``logits - log w`` when class weights are set, else ``logits`` (see
        :meth:`set_class_weight`)."""
        if not self.class_weight.numel():
            return logits
        return logits - self.class_weight.to(logits.dtype).log().view(1, -1, 1, 1)

    @classmethod
    def for_task(
        cls,
        spec: TaskSpec,
        settings: QuantizeSettings | None = None,
        *,
        normal_centres: Tensor | None = None,
    ) -> Quantizer:
        """The quantizer of one task.

        Args:
            spec: The task.
            settings: Bin counts and depth range; defaults to the NYUD-v2 recipe.
            normal_centres: (C_p, 3) centres, e.g. from :func:`fit_normal_centres`; without them
                a normal task gets ``settings.normal_bins`` Fibonacci-sphere centres.
        """
        s = settings or QuantizeSettings()
        if spec.is_classification:
            return cls(name=spec.name, kind=spec.kind, num_bins=spec.num_classes)
        if spec.kind == DEPTH:
            c = log_depth_centres(s.depth_bins, s.depth_min, s.depth_max)
        else:
            c = (
                normal_centres
                if normal_centres is not None
                else fibonacci_sphere(s.normal_bins, hemisphere=s.normal_hemisphere)
            )
        return cls(name=spec.name, kind=spec.kind, num_bins=len(c), centres=c)

    @property
    def is_classification(self) -> bool:
        return self.kind not in (DEPTH, NORMAL)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, kind={self.kind!r}, num_bins={self.num_bins}"

    # ---- labels -> classes -------------------------------------------------------------------

    def valid_mask(self, target: Tensor, valid: Tensor | None = None) -> Tensor:
        """(B, H, W) bool: pixels whose canonical label carries a value, and-ed with ``valid``.

        Args:
            target: (B, H, W) class ids / metres, or (B, 3, H, W) normals.
            valid: Optional (B, H, W) bool mask to restrict it further.
        """
        self._check_target(target)
        if self.kind == DEPTH:
            m = target > 0
        elif self.kind == NORMAL:
            m = (target != 0).any(dim=1)
        else:
            m = target >= 0
        if valid is not None:
            if valid.shape != m.shape:
                raise ValueError(
                    f"{self.name}: valid must be {tuple(m.shape)}, got {tuple(valid.shape)}"
                )
            m = m & valid.bool()
        return m

    def to_class(self, target: Tensor, valid: Tensor | None = None) -> Tensor:
        """(B, H, W) int64 bin index of each pixel, -1 where invalid: ``Y^oh`` of Eq. 12.

        Depth takes the nearest centre in log space; a normal the centre of largest cosine.

        Args:
            target: (B, H, W) class ids / metres, or (B, 3, H, W) normals.
            valid: Optional (B, H, W) bool mask, and-ed with the label's own invalid marks.
        """
        m = self.valid_mask(target, valid)
        if self.kind == DEPTH:
            log_c = self.centres.log()
            edges = (log_c[1:] + log_c[:-1]) / 2  # (C_p - 1,) boundaries between nearest bins
            cls = torch.bucketize(target.float().clamp_min(1e-12).log(), edges)
        elif self.kind == NORMAL:
            cos = torch.einsum("bchw,kc->bkhw", target.to(self.centres.dtype), self.centres)
            cls = cos.argmax(dim=1)
        else:
            cls = target.long()
            if bool((cls[m] >= self.num_bins).any()):
                raise ValueError(f"{self.name}: class ids must be < {self.num_bins}")
        return torch.where(m, cls, torch.full_like(cls, -1))

    # ---- logits -> prediction ----------------------------------------------------------------

    def decode(self, logits: Tensor) -> Tensor:
        """Prediction from (B, C_p, H, W) logits.

        Returns:
            Classification: (B, H, W) int64 argmax. Depth: (B, H, W) metres,
            ``sum_k softmax_k c_k`` (Eq. 10). Normal: (B, 3, H, W), the Eq. 10 sum divided by its
            length; Eq. 10 itself stops before that renormalisation (the authors' code does it
            too), which keeps the prediction a unit normal.
        """
        self._check_logits(logits)
        if self.is_classification:
            return self.adjusted(logits).argmax(dim=1)
        p = logits.softmax(dim=1)  # (B, C_p, H, W)
        if self.kind == DEPTH:
            return torch.einsum("bkhw,k->bhw", p, self.centres.to(p.dtype))  # Eq. 10
        n = torch.einsum("bkhw,kc->bchw", p, self.centres.to(p.dtype))  # Eq. 10
        return n / n.norm(dim=1, keepdim=True).clamp_min(1e-6)

    def probabilities(self, logits: Tensor) -> Tensor:
        """(B, C_p, H, W) softmax over the bins (of the adjusted logits, for weighted classes)."""
        self._check_logits(logits)
        return self.adjusted(logits).softmax(dim=1)

    def confidence(self, logits: Tensor, sharpen: float = 1.0) -> Tensor:
        """(B, H, W) ``max softmax(sharpen * logits)``: the pseudo-label confidence of Sec. 3.3.

        Args:
            logits: (B, C_p, H, W).
            sharpen: Logit multiplier before the softmax. 1.0 is the paper's formula; the
                authors' code uses :data:`AUTHORS_REGRESSION_SHARPEN` for depth and normal.
        """
        self._check_logits(logits)
        return (self.adjusted(logits) * sharpen).softmax(dim=1).amax(dim=1)

    @torch.no_grad()
    def pseudo_label(self, logits: Tensor, sharpen: float = 1.0) -> tuple[Tensor, Tensor]:
        """The offline pseudo-label ``Y~`` in canonical form and its (B, H, W) confidence."""
        return self.decode(logits), self.confidence(logits, sharpen)

    # ---- storage -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain lists and numbers, safe in a ``weights_only=True`` checkpoint."""
        return {
            "name": self.name,
            "kind": self.kind,
            "num_bins": self.num_bins,
            "centres": self.centres.detach().cpu().tolist(),
            **(
                {"class_weight": self.class_weight.detach().cpu().tolist()}
                if self.class_weight.numel()
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Quantizer:
        centres = torch.tensor(d["centres"], dtype=torch.float32) if d.get("centres") else None
        weight = d.get("class_weight")
        return cls(
            name=d["name"],
            kind=d["kind"],
            num_bins=d["num_bins"],
            centres=centres,
            class_weight=torch.tensor(weight, dtype=torch.float32) if weight else None,
        )

    # ---- contracts ---------------------------------------------------------------------------

    def _check_logits(self, logits: Tensor) -> None:
        if logits.ndim != 4 or logits.shape[1] != self.num_bins:
            raise ValueError(
                f"{self.name}: logits must be (B, {self.num_bins}, H, W), got {tuple(logits.shape)}"
            )

    def _check_target(self, target: Tensor) -> None:
        want = "(B, 3, H, W)" if self.kind == NORMAL else "(B, H, W)"
        ok = target.ndim == 4 and target.shape[1] == 3 if self.kind == NORMAL else target.ndim == 3
        if not ok:
            raise ValueError(f"{self.name}: target must be {want}, got {tuple(target.shape)}")
