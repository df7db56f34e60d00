"""Hierarchical task tokens: global tokens θ_i (Sec. 3.1, Appendix A.2), fine tokens φ_i (Sec. 3.2).

Shapes: B batch, T tasks, C channels of the task features and global tokens, h x w the feature
grid, C_p a task's number of classes or bins.

Attention is written with plain matmuls (no ``nn.MultiheadAttention``) so the modules export with
``torch.onnx.export(..., dynamo=True)``. Every softmax attention is scaled by 1/sqrt(C), as in the
authors' code; the sigmoid gates and scores (task query, ``M_f``) are not scaled, as printed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def token_score(token: Tensor, feature: Tensor) -> Tensor:
    """``θᵀ F`` at every pixel.

    Args:
        token: (B or 1, C).
        feature: (B, C, h, w).

    Returns:
        (B, 1, h, w).
    """
    return (feature * token[:, :, None, None]).sum(dim=1, keepdim=True)


def task_query(shared: Tensor, token: Tensor) -> Tensor:
    """Task feature ``F_i = F_s · sigmoid(θ_iᵀ F_s)``: θ_i gates every pixel of F_s (Sec. 3.1).

    Args:
        shared: F_s, (B, C, h, w).
        token: θ_i, (1, C) or (B, C).

    Returns:
        F_i, (B, C, h, w).
    """
    return shared * torch.sigmoid(token_score(token, shared))


def feature_score(token: Tensor, feature: Tensor) -> Tensor:
    """Feature-discovery mask ``M_f = sigmoid(θ'_iᵀ F'_i)`` (Sec. 3.3), (B, 1, h, w) in (0, 1)."""
    return torch.sigmoid(token_score(token, feature))


class InterTaskAffinity(nn.Module):
    """Cross-task affinity ``A = softmax(Q Kᵀ / sqrt(C))`` with Q, K linear maps of Θ (Eq. 1).

    Θ is a parameter, so A is the same for every image: (1, T, T), each row summing to 1.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.scale = dim**-0.5

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: Θ (T, C) -> A (1, T, T)."""
        q, k = self.q(tokens), self.k(tokens)  # (T, C)
        return torch.softmax(q @ k.transpose(0, 1) * self.scale, dim=-1).unsqueeze(0)  # Eq. 1


def mix_tasks(affinity: Tensor, features: list[Tensor]) -> list[Tensor]:
    """``F' = A F`` (Eq. 2): task i's new feature is Σ_j A_ij F_j.

    Args:
        affinity: A, (1, T, T).
        features: T maps, each (B, C, h, w).

    Returns:
        T maps, each (B, C, h, w).
    """
    stacked = torch.stack(features, dim=1)  # (B, T, C, h, w)
    B, T, C, h, w = stacked.shape
    mixed = (affinity @ stacked.reshape(B, T, C * h * w)).reshape(B, T, C, h, w)  # Eq. 2
    return list(mixed.unbind(dim=1))


class GlobalTaskTokens(nn.Module):
    """Global token learning on one shared map: task query and inter-task learning (Eq. 1-2).

    Intra-task learning is per task and follows the task head; see :class:`IntraTaskAttention`.
    """

    def __init__(self, *, num_tasks: int, dim: int, use_inter: bool = True) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(num_tasks, dim) * dim**-0.5)  # Θ (T, C)
        self.affinity = InterTaskAffinity(dim=dim) if use_inter else None

    def forward(self, shared: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """
        Args:
            shared: F_s, (B, C, h, w).

        Returns:
            ``(F', Θ', A)``: T task features (B, C, h, w), tokens (1, T, C), affinity (1, T, T)
            (the identity without inter-task learning).
        """
        Theta = self.tokens  # (T, C)
        features = [task_query(shared, t.unsqueeze(0)) for t in Theta]  # F_i, T x (B, C, h, w)
        A = self.task_affinity()  # (1, T, T)
        if self.affinity is not None:
            features = mix_tasks(A, features)  # F' = A F (Eq. 2)
        return features, A @ Theta, A  # Θ' = A Θ (Eq. 2), (1, T, C)

    def task_affinity(self) -> Tensor:
        """A, (1, T, T); the identity without inter-task learning."""
        if self.affinity is None:
            return torch.eye(self.tokens.shape[0], device=self.tokens.device).unsqueeze(0)
        return self.affinity(self.tokens)


class MultiScaleGlobalTaskTokens(nn.Module):
    """Multi-scale global token learning (Appendix A.2, Eq. 14-18).

    Per scale j: tokens θ_i^(j) = W_i^{s→m(j)} θ_i (Eq. 14), task query of F_s^(j), inter-task
    learning with its own A^(j) (Eq. 15-16 and Eq. 1-2). Then per task the scales are fused at the
    finest grid: F'_i = Conv1x1([F'_i^(0); up(F'_i^(1)); ...]) (Eq. 17) and
    θ'_i = Σ_j W_i^{m→s(j)} θ'_i^(j) (Eq. 18, with the tokens after inter-task learning).
    """

    def __init__(
        self, *, num_tasks: int, in_channels: tuple[int, ...], dim: int, use_inter: bool = True
    ) -> None:
        super().__init__()
        T = num_tasks
        self.tokens = nn.Parameter(torch.randn(T, dim) * dim**-0.5)  # Θ (T, C)
        self.to_scale = nn.ModuleList(  # W_i^{s→m(j)}, Eq. 14
            nn.ModuleList(nn.Linear(dim, c) for c in in_channels) for _ in range(T)
        )
        self.from_scale = nn.ModuleList(  # W_i^{m→s(j)}, Eq. 18
            nn.ModuleList(nn.Linear(c, dim) for c in in_channels) for _ in range(T)
        )
        self.affinity = (
            nn.ModuleList(InterTaskAffinity(dim=c) for c in in_channels) if use_inter else None
        )
        self.fuse = nn.ModuleList(  # Conv_i^{1x1}, Eq. 17
            nn.Conv2d(sum(in_channels), dim, 1) for _ in range(T)
        )

    def scale_tokens(self) -> list[Tensor]:
        """Θ^(j) for every scale j: (T, C_j) each (Eq. 14, 16)."""
        T, S = len(self.to_scale), len(self.to_scale[0])
        return [
            torch.stack([self.to_scale[i][j](self.tokens[i]) for i in range(T)]) for j in range(S)
        ]

    def task_affinity(self) -> list[Tensor]:
        """A^(j) for every scale, (1, T, T) each; identities without inter-task learning."""
        tokens = self.scale_tokens()
        if self.affinity is None:
            eye = torch.eye(self.tokens.shape[0], device=self.tokens.device).unsqueeze(0)
            return [eye for _ in tokens]
        return [aff(t) for aff, t in zip(self.affinity, tokens, strict=True)]

    def forward(self, shared: list[Tensor]) -> tuple[list[Tensor], Tensor, list[Tensor]]:
        """
        Args:
            shared: F_s^(j), (B, C_j, h_j, w_j) each, finest first.

        Returns:
            ``(F', Θ', [A^(j)])``: T task features (B, C, h_0, w_0), tokens (1, T, C), one
            affinity (1, T, T) per scale.
        """
        T = self.tokens.shape[0]
        size = shared[0].shape[-2:]
        tokens, affinities = self.scale_tokens(), self.task_affinity()
        per_scale = []  # per scale j: T task features (B, C_j, h_j, w_j)
        new_tokens = []  # per scale j: Θ'^(j), (1, T, C_j)
        for fs, Theta, A in zip(shared, tokens, affinities, strict=True):
            feats = [task_query(fs, t.unsqueeze(0)) for t in Theta]  # F_i^(j) (Eq. 15)
            if self.affinity is not None:
                feats = mix_tasks(A, feats)  # F'^(j) = A^(j) F^(j)
            per_scale.append(feats)
            new_tokens.append(A @ Theta)  # Θ'^(j) = A^(j) Θ^(j)
        features, fused_tokens = [], []
        for i in range(T):
            maps = [per_scale[0][i]] + [
                F.interpolate(s[i], size=size, mode="bilinear", align_corners=False)
                for s in per_scale[1:]
            ]
            features.append(self.fuse[i](torch.cat(maps, dim=1)))  # Eq. 17, (B, C, h_0, w_0)
            restore = zip(self.from_scale[i], new_tokens, strict=True)
            fused_tokens.append(sum(proj(t[:, i]) for proj, t in restore))  # Eq. 18, (1, C)
        return features, torch.stack(fused_tokens, dim=1), affinities  # Θ' (1, T, C)


class IntraTaskAttention(nn.Module):
    """Intra-task learning: self-attention over the hw + 1 tokens ``[θ'_i; F'_i]`` (Sec. 3.1).

    Every pixel and the task token query; the keys and values are the token plus the feature map
    average-pooled by ``stride`` (spatial reduction: the cost is O((hw)² / stride²) rather than
    O((hw)²)). A fixed stride, not a fixed key grid, so an exported graph stays exact at every
    input size. Pre-norm residual attention, then a residual 3x3 conv block on the map and a
    residual MLP on the token. Single head, scaled by 1/sqrt(C).

    With ``with_token=False`` (no global tokens) it is plain self-attention over the hw pixels and
    ``forward`` takes ``token=None``.

    ``query_stride`` > 1 runs the whole block on the map average-pooled by that stride (the keys
    keep their ``stride`` relative to the full map) and adds the bilinearly upsampled change back
    to the full-resolution map: on SegNet's full-resolution features the block otherwise costs
    more than half of what HiTTs adds over the MTL baseline (Table 8 budget: +20.8% FLOPs).
    """

    def __init__(
        self, *, dim: int, stride: int = 1, with_token: bool = True, query_stride: int = 1
    ) -> None:
        super().__init__()
        self.stride = stride
        self.query_stride = query_stride
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.scale = dim**-0.5
        self.feature_ffn = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim), nn.ReLU()
        )
        self.token_mlp = None
        if with_token:
            self.token_mlp = nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)
            )

    def forward(self, feature: Tensor, token: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """See :meth:`_attend`; with ``query_stride`` > 1 it runs on the pooled map."""
        qs = self.query_stride
        if qs <= 1:
            return self._attend(feature, token, self.stride)
        small = F.avg_pool2d(feature, qs, stride=qs, ceil_mode=True)  # (B, C, h/qs, w/qs)
        updated, token = self._attend(small, token, max(1, self.stride // qs))
        delta = F.interpolate(
            updated - small, size=feature.shape[-2:], mode="bilinear", align_corners=False
        )
        return feature + delta, token

    def _attend(
        self, feature: Tensor, token: Tensor | None, kv_stride: int
    ) -> tuple[Tensor, Tensor | None]:
        """
        Args:
            feature: F'_i, (B, C, h, w).
            token: θ'_i, (B, C) or (1, C), or None.

        Returns:
            ``(F'_i, θ'_i)`` updated: (B, C, h, w) and (B, C) (None stays None).
        """
        B, C, h, w = feature.shape
        if (token is None) != (self.token_mlp is None):
            raise ValueError("pass a token exactly when the module was built with_token=True")
        pixels = feature.flatten(2).transpose(1, 2)  # (B, hw, C)
        reduced = feature
        if kv_stride > 1:
            reduced = F.avg_pool2d(feature, kv_stride, stride=kv_stride, ceil_mode=True)
        kv = reduced.flatten(2).transpose(1, 2)  # (B, g, C), g = ⌈h/stride⌉⌈w/stride⌉
        x = pixels
        if token is not None:
            token = token.expand(B, C).unsqueeze(1)  # (B, 1, C)
            x = torch.cat([token, pixels], dim=1)  # [θ'_i; F'_i], (B, hw + 1, C)
            kv = torch.cat([token, kv], dim=1)  # (B, g + 1, C)
        q = self.q(self.norm(x))  # (B, N, C)
        kv = self.norm(kv)
        k, v = self.k(kv), self.v(kv)  # (B, M, C)
        attn = torch.softmax(q @ k.transpose(1, 2) * self.scale, dim=-1)  # (B, N, M)
        x = x + self.proj(attn @ v)  # (B, N, C)
        if token is not None:
            token, x = x[:, 0], x[:, 1:]  # (B, C), (B, hw, C)
            token = token + self.token_mlp(token)
        feature = x.transpose(1, 2).reshape(B, C, h, w)
        feature = feature + self.feature_ffn(feature)
        return feature, token


class FineGrainedTokens(nn.Module):
    """Fine-grained tokens of one task (Sec. 3.2): φ_i from θ'_i (Eq. 3), then G'_i (Eq. 4).

    Eq. 3: ``φ_i = MLP_i(W_i^o o + [θ'_i; ...; θ'_i])ᵀ``. The input is the C x C_p matrix whose
    column k is ``W_i^o o_k + θ'_i``; as in the authors' code, the MLP runs along the C_p axis
    (each of the C rows is mapped R^{C_p} -> R^{C_p}), and the transposed result holds the C_p
    tokens φ_i (C_p, C). ``o`` is the standard basis of R^{C_p} (any orthonormal basis gives the
    same family, since W_i^o is learnt). Without OE the W_i^o o term is dropped; without global
    tokens (``token=None``) the θ'_i term is dropped.

    Eq. 4: ``G'_i = Conv3x3(G_i ⊙ Softplus(φ_i × F'_i))``. ``G_i`` is the 1x1-conv projection of
    F'_i to C_p channels and ``φ_i × F'_i`` is the (C_p, C) x (C, hw) product: one score map per
    token, so the gate multiplies G_i channel by channel. The paper prints ``φ_i × G_i``, whose
    shapes do not multiply; this reading is the one the authors' code uses. Everything runs at
    the feature grid h x w; the network upsamples the logits to the input size.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_outputs: int,
        hidden: int = 128,
        use_oe: bool = True,
    ) -> None:
        super().__init__()
        Cp = num_outputs
        self.project = nn.Conv2d(dim, Cp, 1)  # G_i
        self.register_buffer("basis", torch.eye(Cp), persistent=False)  # o, (C_p, C_p)
        self.embed = nn.Linear(Cp, dim, bias=False) if use_oe else None  # W_i^o
        self.mlp = nn.Sequential(  # MLP_i along the C_p axis
            nn.Linear(Cp, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, Cp),
        )
        self.refine = nn.Conv2d(Cp, Cp, 3, padding=1)  # Conv_i^{3x3}
        self.dim = dim
        self.scale = dim**-0.5

    def fine_tokens(self, token: Tensor | None) -> Tensor:
        """φ_i (Eq. 3).

        Args:
            token: θ'_i, (B, C) or (1, C); None without global tokens.

        Returns:
            (B or 1, C_p, C).
        """
        Cp = self.basis.shape[0]
        x = torch.zeros(1, self.dim, Cp, device=self.basis.device, dtype=self.basis.dtype)
        if self.embed is not None:
            x = x + self.embed(self.basis).transpose(0, 1).unsqueeze(0)  # W_i^o o, (1, C, C_p)
        if token is not None:
            x = x + token.unsqueeze(-1)  # + [θ'_i; ...; θ'_i], (B, C, C_p)
        return self.mlp(x).transpose(1, 2)  # Eq. 3, (B, C_p, C)

    def forward(self, feature: Tensor, token: Tensor | None) -> tuple[Tensor, Tensor]:
        """
        Args:
            feature: F'_i, (B, C, h, w).
            token: θ'_i, (B, C) or (1, C), or None.

        Returns:
            ``(G'_i, S_i)``: logits (B, C_p, h, w) and the fine score map
            ``S_i = Softplus(φ_i × F'_i)``, (B, C_p, h, w), positive.
        """
        B, C, h, w = feature.shape
        G = self.project(feature)  # G_i, (B, C_p, h, w)
        phi = self.fine_tokens(token).expand(B, -1, -1)  # φ_i, (B, C_p, C)
        # φ_i × F'_i, scaled by 1/sqrt(C) like the attention logits: unscaled, the products of
        # C-dimensional vectors reach magnitudes where Softplus is flat and a task's gate can die
        # (every score ~0, constant logits) early in training, which we saw on edges
        score = F.softplus(phi @ feature.reshape(B, C, h * w) * self.scale)  # (B, C_p, hw)
        score = score.reshape(B, -1, h, w)  # one map per token, (B, C_p, h, w)
        return self.refine(G * score), score  # Eq. 4
