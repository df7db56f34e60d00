"""Shared encoders: an image batch (B, 3, H, W) in, the shared feature ``F_s`` out (Sec. 3.1).

=========  ====================================  ===============================================
name       output                                recipe
=========  ====================================  ===============================================
small      one map (B, 64w, ⌈H/8⌉, ⌈W/8⌉)        the CPU default (demo, tests, benchmarks)
segnet     one map (B, 64w, H, W)                NYUD-v2 / Cityscapes (SegNet as in MTAN)
resnet18   four maps at strides 4, 8, 16, 32     PASCAL-Context (ASPP heads, multi-scale tokens
           with (64, 128, 256, 512)w channels    of Appendix A.2)
=========  ====================================  ===============================================

``w`` is the width multiplier. Every backbone takes any H, W (SegNet pads to a multiple of 32
inside and crops its output back) and states its outputs in ``out_channels`` and ``strides``
(one entry for a single-scale backbone, whose ``forward`` returns a Tensor; four for ResNet-18,
whose ``forward`` returns a list, finest first). Weights start random; ``checkpoint`` loads a local
state dict and nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def scaled(channels: int, width: float) -> int:
    """``channels * width``, rounded, at least 4."""
    return max(4, int(round(channels * width)))


class ConvBNReLU(nn.Sequential):
    """Conv(k x k) -> BatchNorm -> ReLU, padded to keep the size at stride 1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Backbone(nn.Module):
    """What every shared encoder states about its output.

    Attributes:
        out_channels: Channels of each output map, finest first.
        strides: Input pixels per output pixel of each map, finest first.
    """

    out_channels: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def is_multiscale(self) -> bool:
        return len(self.out_channels) > 1


# ------------------------------------------------------------------------------------------------
# Small encoder (the CPU default)


class ResidualBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut: ``relu(x + bn(conv(relu(bn(conv(x))))))``."""

    def __init__(self, *, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels, dilation=dilation)
        self.conv2 = nn.Conv2d(
            channels, channels, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.bn2(self.conv2(self.conv1(x))))


class SmallEncoder(Backbone):
    """Four stages at strides 2, 4, 8, 8; the last one dilated (2, 4) to widen the view.

    About 0.27M parameters at width 1; output (B, 64w, ⌈H/8⌉, ⌈W/8⌉).
    """

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = scaled(16, width), scaled(32, width), scaled(64, width)
        self.stage1 = nn.Sequential(ConvBNReLU(3, c1, stride=2), ResidualBlock(channels=c1))
        self.stage2 = nn.Sequential(ConvBNReLU(c1, c2, stride=2), ResidualBlock(channels=c2))
        self.stage3 = nn.Sequential(ConvBNReLU(c2, c3, stride=2), ResidualBlock(channels=c3))
        self.stage4 = nn.Sequential(
            ResidualBlock(channels=c3, dilation=2), ResidualBlock(channels=c3, dilation=4)
        )
        self.out_channels = (c3,)
        self.strides = (8,)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage1(x)  # (B, c1, H/2, W/2)
        x = self.stage2(x)  # (B, c2, H/4, W/4)
        x = self.stage3(x)  # (B, c3, H/8, W/8)
        return self.stage4(x)  # (B, c3, H/8, W/8)


# ------------------------------------------------------------------------------------------------
# SegNet (MTAN's NYUD-v2 / Cityscapes backbone)


class SegNet(Backbone):
    """SegNet encoder-decoder as used by MTAN: VGG-16 layout, max-pool indices reused to unpool.

    Encoder stages k = 0..4 have (2, 2, 3, 3, 3) convs with (64, 128, 256, 512, 512)w channels,
    each followed by a 2x2 max pool; the decoder mirrors it. Output (B, 64w, H, W).
    """

    depth = 32  # five 2x2 pools

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        f = [scaled(c, width) for c in (64, 128, 256, 512, 512)]
        n_convs = (2, 2, 3, 3, 3)
        enc, dec = [], []
        for k in range(5):
            c_in = 3 if k == 0 else f[k - 1]
            enc.append(
                nn.Sequential(
                    ConvBNReLU(c_in, f[k]), *[ConvBNReLU(f[k], f[k]) for _ in range(n_convs[k] - 1)]
                )
            )
            c_out = f[max(k - 1, 0)]  # decoder stage k undoes encoder stage k
            dec.append(
                nn.Sequential(
                    ConvBNReLU(f[k], c_out),
                    *[ConvBNReLU(c_out, c_out) for _ in range(n_convs[k] - 1)],
                )
            )
        self.encoder = nn.ModuleList(enc)
        self.decoder = nn.ModuleList(dec)
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.out_channels = (f[0],)
        self.strides = (1,)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        x = F.pad(x, (0, (-W) % self.depth, 0, (-H) % self.depth))  # (B, 3, H', W'), H' % 32 == 0
        indices = []
        for stage in self.encoder:
            x, idx = self.pool(stage(x))
            indices.append(idx)
        for stage, idx in zip(reversed(self.decoder), reversed(indices), strict=True):
            x = stage(self.unpool(x, idx))
        return x[:, :, :H, :W]  # (B, 64w, H, W)


# ------------------------------------------------------------------------------------------------
# ResNet-18 (PASCAL-Context backbone); parameter names match the common ImageNet checkpoints


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs, a 1x1 projection shortcut when the shape changes."""

    def __init__(self, *, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNet18(Backbone):
    """ResNet-18 without its classifier; returns the outputs of layer1..layer4.

    Output: ``[(B, 64w, H/4, W/4), (B, 128w, H/8, W/8), (B, 256w, H/16, W/16),
    (B, 512w, H/32, W/32)]`` (sizes rounded up).
    """

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        c = [scaled(n, width) for n in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, c[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(c[0], c[0], stride=1)
        self.layer2 = self._layer(c[0], c[1], stride=2)
        self.layer3 = self._layer(c[1], c[2], stride=2)
        self.layer4 = self._layer(c[2], c[3], stride=2)
        self.out_channels = tuple(c)
        self.strides = (4, 8, 16, 32)
        init_weights(self)

    @staticmethod
    def _layer(in_channels: int, out_channels: int, *, stride: int) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(in_channels=in_channels, out_channels=out_channels, stride=stride),
            BasicBlock(in_channels=out_channels, out_channels=out_channels),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))  # (B, 64w, H/4, W/4)
        x1 = self.layer1(x)  # (B, 64w, H/4, W/4)
        x2 = self.layer2(x1)  # (B, 128w, H/8, W/8)
        x3 = self.layer3(x2)  # (B, 256w, H/16, W/16)
        x4 = self.layer4(x3)  # (B, 512w, H/32, W/32)
        return [x1, x2, x3, x4]


# ------------------------------------------------------------------------------------------------
# Weights and builders


def init_weights(module: nn.Module) -> None:
    """He-normal convs, unit BatchNorm, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def load_checkpoint(
    backbone: nn.Module, checkpoint: str | Path, *, ignore_prefixes: tuple[str, ...] = ("fc.",)
) -> None:
    """Load a local state dict into ``backbone`` (strict, once ``ignore_prefixes`` are dropped).

    Accepts a bare state dict or one stored under ``"state_dict"`` / ``"model"``.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: the file is not a state dict, or its keys or shapes do not match.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: does not fit {type(backbone).__name__}: {e}") from e


def build_small_encoder(*, width: float = 1.0, checkpoint: str | Path | None = None) -> Backbone:
    """The CPU default: one stride-8 map of 64w channels."""
    return _maybe_load(SmallEncoder(width=width), checkpoint)


def build_segnet(*, width: float = 1.0, checkpoint: str | Path | None = None) -> Backbone:
    """MTAN's SegNet: one full-resolution map of 64w channels."""
    return _maybe_load(SegNet(width=width), checkpoint)


def build_resnet18(*, width: float = 1.0, checkpoint: str | Path | None = None) -> Backbone:
    """ResNet-18: four maps at strides 4/8/16/32. A local ImageNet checkpoint loads as is."""
    return _maybe_load(ResNet18(width=width), checkpoint)


def _maybe_load(backbone: Backbone, checkpoint: str | Path | None) -> Backbone:
    if checkpoint is not None:
        load_checkpoint(backbone, checkpoint)
    return backbone


BACKBONES = {
    "small": build_small_encoder,
    "segnet": build_segnet,
    "resnet18": build_resnet18,
}
