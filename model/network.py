"""The HiTTs network (Sec. 3, Appendix A), its ablations (Table 5) and the STL / MTL baselines.

Every model is tensors in, dict out. ``model(x)`` with x (B, 3, H, W) returns, for every task it
predicts, a dict:

============  =================  =============================================================
key           shape              meaning
============  =================  =============================================================
logits        (B, C_p, H, W)     G'_i upsampled to the input size (C_p classes or bins)
feature       (B, C, h, w)       F'_i, the task feature the feature loss L_f compares (Eq. 6)
mf            (B, 1, h, w)       M_f = sigmoid(θ'_iᵀ F'_i) in (0, 1) (Sec. 3.3); all ones when
                                 the model has no global tokens (MTL, STL, w/o global tokens)
fine_score    (B, 1, H, W)       the fine score map at each pixel's predicted class, upsampled,
                                 for display; all ones without fine-grained tokens
fine_scores   (B, C_p, h, w)     Softplus(φ_i × F'_i), one positive map per fine token (Eq. 4);
                                 all ones without fine-grained tokens
============  =================  =============================================================

h x w is the grid the tokens work on: the backbone's (finest) output grid. Any H, W works; the
logits are bilinearly upsampled to exactly (H, W).

Data flow of :class:`HiTTsNet` for task i: backbone -> (1x1 projection to C when widths differ)
-> task query and inter-task learning (Eq. 1-2, or Eq. 14-18 on a multi-scale backbone) -> task
head (3x3 conv block, or ASPP for the PASCAL recipe) -> intra-task attention -> M_f -> fine
tokens (Eq. 3-4) -> upsampled logits. The head sits between inter- and intra-task learning as in
the authors' code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hitts.model.backbones import BACKBONES, Backbone, ConvBNReLU
from hitts.model.tokens import (
    FineGrainedTokens,
    GlobalTaskTokens,
    IntraTaskAttention,
    MultiScaleGlobalTaskTokens,
    feature_score,
)

HITTS, MTL, STL = "hitts", "mtl", "stl"
MODEL_KINDS = (HITTS, MTL, STL)
HEAD_KINDS = ("conv", "aspp")
# Intra-task key/value pooling per backbone: the token grid at the recipe's image size over this
# stride is about 16 x 24 (small at 96x128: 12x16 unpooled; SegNet at 288x384: 18x24; ResNet-18's
# stride-4 grid at 512x512: 16x16).
ATTN_STRIDE = {"small": 1, "segnet": 16, "resnet18": 8}
# Intra-task query pooling per backbone: SegNet's task features are at full resolution, where the
# intra-task block alone would add ~35% FLOPs over the MTL baseline (see IntraTaskAttention).
QUERY_STRIDE = {"small": 1, "segnet": 2, "resnet18": 1}


@dataclass
class ModelConfig:
    """Everything :func:`build_model` needs; plain values, so it saves as JSON with a checkpoint.

    Attributes:
        outputs: Task name -> C_p, its number of classes or bins; the order fixes the token order.
        kind: ``"hitts"``, or a baseline: ``"mtl"`` (shared backbone + per-task heads) or
            ``"stl"`` (backbone + head for ``stl_task`` alone).
        stl_task: The one task an ``"stl"`` model predicts.
        backbone: A key of :data:`hitts.model.backbones.BACKBONES`.
        width: Backbone width multiplier.
        channels: C, the width of the task features and the global tokens.
        head: ``"conv"`` or ``"aspp"``; None picks ASPP for a multi-scale backbone, else conv.
        backbone_checkpoint: Path of a local backbone state dict to start from.
        use_global: Global task tokens θ_i (Table 5, "w/o global task tokens" when False): with
            them off there is no task query, no inter-task learning (A is computed from Θ), M_f
            is all ones, intra-task attention runs over the pixels alone, and φ_i comes from the
            orthogonal embeddings alone.
        use_inter: Inter-task learning, Eq. 1-2 (A is the identity when False).
        use_intra: Intra-task attention (skipped when False).
        use_fine: Fine-grained tokens, Eq. 3-4; when False the logits are G_i, a 1x1 conv of F'_i.
        use_oe: The W_i^o o term of Eq. 3.
        attn_stride: Intra-task keys/values are average-pooled by this stride; None takes the
            recipe's value in :data:`ATTN_STRIDE`.
        query_stride: The intra-task block runs on the map pooled by this stride; None takes
            the recipe's value in :data:`QUERY_STRIDE`.
        fine_hidden: Width of MLP_i in Eq. 3.
        aspp_rates: Dilation rates of the three atrous ASPP branches.
    """

    outputs: dict[str, int]
    kind: str = HITTS  # the paper's model; the baselines are the STL / MTL rows of Tables 1-5
    stl_task: str | None = None  # only read when kind == "stl"
    backbone: str = "small"  # runs on a laptop CPU; "segnet" / "resnet18" for the paper recipes
    width: float = 1.0  # the recipes' widths; tests shrink it for speed
    channels: int = 64  # SegNet's output width, and enough for the generated scenes
    head: str | None = None  # None follows the recipe: ASPP with ResNet-18, conv otherwise
    backbone_checkpoint: str | None = None  # local file only; nothing is downloaded
    use_global: bool = True  # the full model of Table 5
    use_inter: bool = True
    use_intra: bool = True
    use_fine: bool = True
    use_oe: bool = True
    attn_stride: int | None = None  # None: about 16 x 24 keys at the recipe's image size
    query_stride: int | None = None  # None: the recipe's value in QUERY_STRIDE
    fine_hidden: int = 128  # the authors' MLP width
    aspp_rates: tuple[int, ...] = (12, 24, 36)  # the authors' ASPP rates

    def __post_init__(self) -> None:
        if not self.outputs:
            raise ValueError("outputs: need at least one task, got none")
        for name, n in self.outputs.items():
            if not name.isidentifier() or int(n) < 2:
                raise ValueError(f"outputs: need identifier -> C_p >= 2, got {name!r}: {n!r}")
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.kind == STL and self.stl_task not in self.outputs:
            raise ValueError(
                f"an 'stl' model needs stl_task from {list(self.outputs)}, got {self.stl_task!r}"
            )
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {self.backbone!r}")
        if self.head is not None and self.head not in HEAD_KINDS:
            raise ValueError(f"head must be one of {HEAD_KINDS} or None, got {self.head!r}")
        stride_ok = all(v is None or v >= 1 for v in (self.attn_stride, self.query_stride))
        if self.channels < 1 or self.width <= 0 or not stride_ok or len(self.aspp_rates) != 3:
            raise ValueError(
                f"need channels >= 1, width > 0, attn_stride >= 1 and three aspp_rates, got "
                f"{self.channels}, {self.width}, {self.attn_stride}, {self.aspp_rates}"
            )
        self.aspp_rates = tuple(self.aspp_rates)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**d)

    @property
    def task_outputs(self) -> dict[str, int]:
        """The tasks this model predicts: all of ``outputs``, or ``stl_task`` alone."""
        if self.kind == STL:
            return {self.stl_task: self.outputs[self.stl_task]}
        return dict(self.outputs)


# ------------------------------------------------------------------------------------------------
# Necks and task heads


class SharedNeck(nn.Module):
    """Backbone output -> one shared map F_s of C channels at the finest grid.

    Single scale: identity, or a 1x1 conv block when the widths differ. Multi-scale: the maps are
    upsampled to the finest grid, concatenated and fused by a 1x1 conv.
    """

    def __init__(self, *, in_channels: tuple[int, ...], dim: int) -> None:
        super().__init__()
        if len(in_channels) == 1 and in_channels[0] == dim:
            self.proj = nn.Identity()
        else:
            self.proj = ConvBNReLU(sum(in_channels), dim, kernel_size=1)

    def forward(self, feats: Tensor | list[Tensor]) -> Tensor:
        if isinstance(feats, Tensor):
            return self.proj(feats)  # (B, C, h, w)
        size = feats[0].shape[-2:]
        maps = [feats[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]
        ]
        return self.proj(torch.cat(maps, dim=1))  # (B, C, h_0, w_0)


class ConvHead(nn.Sequential):
    """Task head of the SegNet / CPU recipes: one 3x3 conv block, (B, C, h, w) -> same."""

    def __init__(self, *, dim: int) -> None:
        super().__init__(ConvBNReLU(dim, dim))


class ASPPHead(nn.Module):
    """Task head of the PASCAL recipe: ASPP (DeepLab-v3) then a 3x3 conv block; C -> C channels.

    Branches: 1x1 conv, three 3x3 atrous convs, image pooling; concatenated, fused by a 1x1 conv.
    The pooling branch has no BatchNorm, so a batch of one image trains too.
    """

    def __init__(self, *, dim: int, rates: tuple[int, ...] = (12, 24, 36), dropout: float = 0.5):
        super().__init__()
        atrous = [ConvBNReLU(dim, dim, dilation=r) for r in rates]
        self.branches = nn.ModuleList([ConvBNReLU(dim, dim, kernel_size=1), *atrous])
        self.pool = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU())
        self.project = nn.Sequential(
            ConvBNReLU(dim * (len(rates) + 2), dim, kernel_size=1), nn.Dropout(dropout)
        )
        self.conv = ConvBNReLU(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True)).expand_as(x)  # (B, C, h, w)
        x = torch.cat([b(x) for b in self.branches] + [pooled], dim=1)  # (B, 5C, h, w)
        return self.conv(self.project(x))  # (B, C, h, w)


# ------------------------------------------------------------------------------------------------
# Models


def _check_input(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an image batch (B, 3, H, W), got shape {tuple(x.shape)}")


def _upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class HiTTsNet(nn.Module):
    """Multi-task network with Hierarchical Task Tokens and the switches of Table 5.

    Args:
        backbone: Shared encoder (see :mod:`hitts.model.backbones`).
        heads: One task head per task, (B, C, h, w) -> (B, C, h, w); the keys fix the task order.
        outputs: Task name -> C_p.
        channels: C.
        use_global, use_inter, use_intra, use_fine, use_oe, attn_stride, fine_hidden: As in
            :class:`ModelConfig`.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        heads: nn.ModuleDict,
        outputs: dict[str, int],
        channels: int,
        use_global: bool = True,
        use_inter: bool = True,
        use_intra: bool = True,
        use_fine: bool = True,
        use_oe: bool = True,
        attn_stride: int = 1,
        query_stride: int = 1,
        fine_hidden: int = 128,
    ) -> None:
        super().__init__()
        if list(heads) != list(outputs):
            raise ValueError(f"heads {list(heads)} and outputs {list(outputs)} name other tasks")
        self.tasks = tuple(outputs)
        self.num_outputs = dict(outputs)
        self.backbone = backbone
        self.heads = heads
        T, C = len(self.tasks), channels
        self.neck = None
        self.global_tokens: GlobalTaskTokens | MultiScaleGlobalTaskTokens | None = None
        if use_global and backbone.is_multiscale:
            self.global_tokens = MultiScaleGlobalTaskTokens(
                num_tasks=T, in_channels=backbone.out_channels, dim=C, use_inter=use_inter
            )
        else:
            self.neck = SharedNeck(in_channels=backbone.out_channels, dim=C)
            if use_global:
                self.global_tokens = GlobalTaskTokens(num_tasks=T, dim=C, use_inter=use_inter)
        self.intra = None
        if use_intra:
            self.intra = nn.ModuleDict(
                {
                    t: IntraTaskAttention(
                        dim=C, stride=attn_stride, with_token=use_global, query_stride=query_stride
                    )
                    for t in self.tasks
                }
            )
        if use_fine:
            self.fine = nn.ModuleDict(
                {
                    t: FineGrainedTokens(dim=C, num_outputs=n, hidden=fine_hidden, use_oe=use_oe)
                    for t, n in outputs.items()
                }
            )
            self.classifiers = None
        else:
            self.fine = None
            self.classifiers = nn.ModuleDict({t: nn.Conv2d(C, n, 1) for t, n in outputs.items()})

    @property
    def has_global_tokens(self) -> bool:
        return self.global_tokens is not None

    @property
    def has_fine_tokens(self) -> bool:
        return self.fine is not None

    def task_affinity(self) -> Tensor | list[Tensor] | None:
        """A (1, T, T), one per scale on a multi-scale backbone; None without global tokens."""
        return None if self.global_tokens is None else self.global_tokens.task_affinity()

    def forward(self, x: Tensor) -> dict[str, dict[str, Tensor]]:
        """x: (B, 3, H, W) normalised image -> per task the dict of the module docstring."""
        _check_input(x)
        B, size = x.shape[0], (x.shape[-2], x.shape[-1])
        feats = self.backbone(x)  # (B, C_s, h, w), or a list of scales
        if self.neck is not None:
            feats = self.neck(feats)  # F_s, (B, C, h, w)
        if self.global_tokens is None:
            task_feats, tokens = [feats] * len(self.tasks), None
        else:
            task_feats, tokens, _ = self.global_tokens(feats)  # T x F'_i (B, C, h, w), Θ' (1, T, C)
        out = {}
        for i, task in enumerate(self.tasks):
            f = self.heads[task](task_feats[i])  # (B, C, h, w)
            t = None if tokens is None else tokens[:, i].expand(B, -1)  # θ'_i, (B, C)
            if self.intra is not None:
                f, t = self.intra[task](f, t)  # intra-task learning over [θ'_i; F'_i]
            ones = f.new_ones(B, 1, f.shape[-2], f.shape[-1])
            mf = ones if t is None else feature_score(t, f)  # M_f, (B, 1, h, w)
            if self.fine is not None:
                g, scores = self.fine[task](f, t)  # G'_i, S_i: (B, C_p, h, w) (Eq. 3-4)
                score = scores.gather(1, g.argmax(dim=1, keepdim=True))  # (B, 1, h, w)
            else:
                g = self.classifiers[task](f)  # G_i, (B, C_p, h, w)
                scores, score = ones.expand_as(g), ones
            out[task] = {
                "logits": _upsample(g, size),  # (B, C_p, H, W)
                "feature": f,  # F'_i, (B, C, h, w)
                "mf": mf,
                "fine_score": _upsample(score, size),  # (B, 1, H, W)
                "fine_scores": scores,
            }
        return out


class BaselineNet(nn.Module):
    """The MTL baseline (shared backbone + one head and 1x1 classifier per task) and, with one
    task, the STL baseline. No tokens; ``mf``, ``fine_score`` and ``fine_scores`` are all ones.

    Args:
        backbone: Shared encoder.
        heads: One task head per task; the keys fix the task order.
        outputs: Task name -> C_p.
        channels: C.
    """

    def __init__(
        self, *, backbone: Backbone, heads: nn.ModuleDict, outputs: dict[str, int], channels: int
    ) -> None:
        super().__init__()
        if list(heads) != list(outputs):
            raise ValueError(f"heads {list(heads)} and outputs {list(outputs)} name other tasks")
        self.tasks = tuple(outputs)
        self.num_outputs = dict(outputs)
        self.backbone = backbone
        self.neck = SharedNeck(in_channels=backbone.out_channels, dim=channels)
        self.heads = heads
        self.classifiers = nn.ModuleDict({t: nn.Conv2d(channels, n, 1) for t, n in outputs.items()})

    has_global_tokens = False
    has_fine_tokens = False

    def task_affinity(self) -> None:
        return None

    def forward(self, x: Tensor) -> dict[str, dict[str, Tensor]]:
        """x: (B, 3, H, W) normalised image -> per task the dict of the module docstring."""
        _check_input(x)
        B, size = x.shape[0], (x.shape[-2], x.shape[-1])
        shared = self.neck(self.backbone(x))  # F_s, (B, C, h, w)
        out = {}
        for task in self.tasks:
            f = self.heads[task](shared)  # (B, C, h, w)
            g = self.classifiers[task](f)  # (B, C_p, h, w)
            ones = f.new_ones(B, 1, f.shape[-2], f.shape[-1])
            out[task] = {
                "logits": _upsample(g, size),
                "feature": f,
                "mf": ones,
                "fine_score": x.new_ones(B, 1, size[0], size[1]),
                "fine_scores": ones.expand_as(g),
            }
        return out


# ------------------------------------------------------------------------------------------------
# Builders


def build_head(head: str, *, dim: int, rates: tuple[int, ...]) -> nn.Module:
    """A task head, (B, C, h, w) -> (B, C, h, w)."""
    return ASPPHead(dim=dim, rates=rates) if head == "aspp" else ConvHead(dim=dim)


def build_model(config: ModelConfig) -> HiTTsNet | BaselineNet:
    """The model ``config`` describes, with fresh weights (plus the local backbone checkpoint)."""
    backbone = BACKBONES[config.backbone](width=config.width, checkpoint=config.backbone_checkpoint)
    outputs = config.task_outputs
    head = config.head or ("aspp" if backbone.is_multiscale else "conv")
    heads = nn.ModuleDict(
        {t: build_head(head, dim=config.channels, rates=config.aspp_rates) for t in outputs}
    )
    if config.kind != HITTS:
        return BaselineNet(
            backbone=backbone, heads=heads, outputs=outputs, channels=config.channels
        )
    return HiTTsNet(
        backbone=backbone,
        heads=heads,
        outputs=outputs,
        channels=config.channels,
        use_global=config.use_global,
        use_inter=config.use_inter,
        use_intra=config.use_intra,
        use_fine=config.use_fine,
        use_oe=config.use_oe,
        attn_stride=config.attn_stride or ATTN_STRIDE[config.backbone],
        query_stride=config.query_stride or QUERY_STRIDE[config.backbone],
        fine_hidden=config.fine_hidden,
    )


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
