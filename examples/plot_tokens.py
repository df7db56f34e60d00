"""The paper's token figures from a trained HiTTs checkpoint: Fig. 7 and Fig. 11.

Usage:
    python examples/plot_tokens.py --checkpoint runs/hitts/last.pt
    python examples/plot_tokens.py --checkpoint runs/hitts/last.pt --scenes data/scenes --out figs

Writes into ``--out`` (default: the checkpoint's folder):

- ``fig7_fine_tokens.png`` (Fig. 7): per task, the self-affinity of its C_p fine-grained tokens
  φ_i (cosine similarity between token vectors, averaged over the images), and a 2-D PCA of the
  token vectors of every task over every image, one colour per task. φ_i depends on the image
  through θ'_i, the global token after intra-task attention (Eq. 3).
- ``fig11_score_maps_<key>.png`` (Fig. 11), one per shown image: per task (rows) the image, the
  global-token score map ``M_f = sigmoid(θ'_iᵀ F'_i)``, the fine score map (the Softplus score of
  the token of the predicted class, Eq. 4) and the prediction.

The images come from a source folder (``--scenes``, its val split when it has one) resized to
the checkpoint's size; without ``--scenes``, a few scenes are generated at that size into a
temporary folder. Only the images are read; the labels are not needed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn

from hitts.model.data.formats import FORMATS, open_reader
from hitts.model.data.scenes import SceneConfig, generate_scenes
from hitts.model.data.torch_dataset import LabelledImage, MultiTaskDataset
from hitts.model.quantize import Quantizer
from hitts.model.tasks import DEPTH, EDGE, NORMAL, SEGMENTATION, TaskSpec
from hitts.model.tensor_set import load_tensor_set
from hitts.model.train import load_checkpoint, model_from_checkpoint

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# Tokens and score maps out of the model


def require_fine_tokens(model: nn.Module) -> None:
    """ValueError unless ``model`` has fine-grained tokens (the figures are about them)."""
    if not getattr(model, "has_fine_tokens", False):
        raise ValueError(
            f"the token figures need a HiTTs model with fine-grained tokens, got a "
            f"{type(model).__name__} without them (a baseline or the 'w/o fine-grained tokens' "
            "ablation)"
        )


@torch.no_grad()
def run_with_tokens(
    model: nn.Module, images: Tensor, *, batch_size: int = 8
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """The model's outputs and every task's fine-grained tokens φ_i for a batch of images.

    The network's output holds the score maps but not φ_i, so a forward pre-hook on each
    task's :class:`hitts.model.tokens.FineGrainedTokens` module catches its input token θ'_i
    (after intra-task attention) and φ_i = ``fine_tokens(θ'_i)`` (Eq. 3) is computed from it.

    Args:
        model: A HiTTs model with fine-grained tokens, in eval mode.
        images: (N, 3, H, W) uint8.

    Returns:
        ``(phi, outputs)``: task -> φ_i (N, C_p, C); task -> the network's output dict, each
        tensor concatenated over the batches (see :mod:`hitts.model.network`).
    """
    require_fine_tokens(model)
    tokens: dict[str, list[Tensor | None]] = {t: [] for t in model.tasks}

    def catch(task: str):
        def hook(module: nn.Module, args: tuple) -> None:
            feature, token = args  # F'_i (B, C, h, w), θ'_i (B, C) or None
            phi = module.fine_tokens(token)  # (B or 1, C_p, C)
            tokens[task].append(phi.expand(feature.shape[0], -1, -1))

        return hook

    handles = [model.fine[t].register_forward_pre_hook(catch(t)) for t in model.tasks]
    device = next(model.parameters()).device
    chunks = []
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).float().div_(255.0)
            chunks.append({t: {k: v.cpu() for k, v in o.items()} for t, o in model(x).items()})
    finally:
        for h in handles:
            h.remove()
    outputs = {
        t: {k: torch.cat([c[t][k] for c in chunks]) for k in chunks[0][t]} for t in chunks[0]
    }
    phi = {t: torch.cat(v).cpu() for t, v in tokens.items()}
    return phi, outputs


def token_affinity(phi: Tensor) -> Tensor:
    """Cosine similarity between the tokens, averaged over the images.

    Args:
        phi: φ_i of N images, (N, C_p, C).

    Returns:
        (C_p, C_p), 1 on the diagonal.
    """
    unit = F.normalize(phi, dim=-1)  # (N, C_p, C)
    return (unit @ unit.transpose(1, 2)).mean(dim=0)  # (C_p, C_p)


def token_pca(phi: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
    """2-D PCA of every task's token vectors over every image.

    Returns:
        ``(points, explained)``: task -> (N * C_p, 2) projections; (2,) shares of the variance.
    """
    flat = {t: p.reshape(-1, p.shape[-1]) for t, p in phi.items()}  # (N * C_p, C)
    X = torch.cat(list(flat.values()))
    mean = X.mean(dim=0, keepdim=True)
    _, S, Vh = torch.linalg.svd(X - mean, full_matrices=False)
    var = S**2
    explained = var[:2] / var.sum().clamp_min(1e-12)
    return {t: (x - mean) @ Vh[:2].T for t, x in flat.items()}, explained


# ------------------------------------------------------------------------------------------------
# Drawing


def _save(fig: Figure, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return path


def draw_fig7(phi: dict[str, Tensor], tasks: dict[str, TaskSpec], path: Path) -> Path:
    """Per-task token self-affinity heatmaps and the 2-D PCA of all tokens (Fig. 7)."""
    n = len(phi)
    fig = Figure(figsize=(3.6 * (n + 1), 3.6), layout="constrained")
    axes = fig.subplots(1, n + 1)
    n_images = next(iter(phi.values())).shape[0]
    for ax, (task, p) in zip(axes[:-1], phi.items(), strict=True):
        aff = token_affinity(p).numpy()
        im = ax.imshow(aff, cmap="RdBu_r", vmin=-1, vmax=1)
        spec = tasks.get(task)
        ax.set_title(f"{task}: {p.shape[1]} fine tokens")
        if spec is not None and spec.classes and len(spec.classes) <= 16:
            ax.set_xticks(range(len(spec.classes)), spec.classes, rotation=90, fontsize=7)
            ax.set_yticks(range(len(spec.classes)), spec.classes, fontsize=7)
        else:
            ax.set_xlabel("token (bin)")
            ax.set_ylabel("token (bin)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(im, ax=ax, shrink=0.8, label="cosine similarity")
    ax = axes[-1]
    points, explained = token_pca(phi)
    colours = [f"C{i}" for i in range(len(points))]
    for (task, pts), colour in zip(points.items(), colours, strict=True):
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.6, color=colour, label=task, linewidths=0)
    ax.set_title("2-D PCA, tokens of all tasks")
    ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)")
    ax.legend(fontsize=8, markerscale=2)
    fig.suptitle(
        f"Fine-grained task tokens $\\varphi_i$: self-affinity and PCA over {n_images} "
        "images (Fig. 7)"
    )
    return _save(fig, path)


COLUMNS = (
    "image",
    "global token: $M_f = \\sigma(\\theta_i'^{\\top} F_i')$",
    "fine tokens: Softplus$(\\varphi_i F_i')$\nat the predicted class",
    "prediction",
)


def _prediction(ax, fig: Figure, spec: TaskSpec | None, quantizer: Quantizer, logits: Tensor):
    """Draw the decoded prediction of (C_p, H, W) logits on ``ax``, with its colour key."""
    pred = quantizer.decode(logits[None])[0]
    kind = quantizer.kind
    if kind == NORMAL:
        ax.imshow(((pred.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
        ax.set_xlabel("RGB = (n + 1) / 2", fontsize=8)
        return
    if kind == DEPTH:
        im = ax.imshow(pred.numpy(), cmap="magma_r")
        fig.colorbar(im, ax=ax, shrink=0.9, label="depth (m)")
        return
    n = quantizer.num_bins
    if kind == EDGE:
        cmap = ListedColormap(["#202020", "#f0f0f0"][:n] if n == 2 else colormaps["gray"](range(n)))
    else:
        cmap = ListedColormap(colormaps["tab10" if n <= 10 else "tab20"].colors[:n])
    im = ax.imshow(pred.numpy(), cmap=cmap, vmin=-0.5, vmax=n - 0.5, interpolation="nearest")
    bar = fig.colorbar(im, ax=ax, shrink=0.9, ticks=range(n))
    if spec is not None and kind in (SEGMENTATION, EDGE) and len(spec.classes) == n:
        bar.ax.set_yticklabels(spec.classes, fontsize=7)


def draw_fig11(
    image: Tensor,
    outputs: dict[str, dict[str, Tensor]],
    tasks: dict[str, TaskSpec],
    quantizers: dict[str, Quantizer],
    key: str,
    path: Path,
    *,
    has_global: bool = True,
) -> Path:
    """One image's score maps (Fig. 11): per task, image | M_f | fine score | prediction.

    Args:
        image: (3, H, W) uint8.
        outputs: Task -> this image's output dict (the batch axis removed).
        has_global: False for a model without global tokens, whose M_f is all ones.
    """
    H, W = image.shape[-2:]
    rgb = image.permute(1, 2, 0).numpy()
    fig = Figure(figsize=(14, 0.6 + 2.7 * len(outputs)), layout="constrained")
    axes = fig.subplots(len(outputs), 4, squeeze=False)
    titles = list(COLUMNS)
    if not has_global:
        titles[1] = "no global tokens: $M_f = 1$"
    for title, ax in zip(titles, axes[0], strict=True):
        ax.set_title(title, fontsize=9)
    for row, (task, o) in zip(axes, outputs.items(), strict=True):
        mf = F.interpolate(o["mf"][None], size=(H, W), mode="bilinear", align_corners=False)
        row[0].imshow(rgb)
        row[0].set_ylabel(task, fontsize=12)
        im = row[1].imshow(mf[0, 0].numpy(), cmap="viridis", vmin=0, vmax=1)
        fig.colorbar(im, ax=row[1], shrink=0.9)
        im = row[2].imshow(o["fine_score"][0].numpy(), cmap="viridis")
        fig.colorbar(im, ax=row[2], shrink=0.9)
        _prediction(row[3], fig, tasks.get(task), quantizers[task], o["logits"])
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"Score maps of the global and fine-grained task tokens (Fig. 11): {key}")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# Images and the whole run


def load_images(
    root: Path, size: tuple[int, int], *, fmt: str = "folder", limit: int = 64
) -> tuple[Tensor, list[str]]:
    """Up to ``limit`` images of a source, its val split first, at (H, W): (N, 3, H, W) uint8."""
    reader = open_reader(fmt, root)
    items = reader.items()
    val = [it for it in items if it.split == "val"]
    chosen = (val or items)[:limit]
    if not chosen:
        raise ValueError(f"{root}: the source holds no images")
    records = [LabelledImage(it.key, it.image) for it in chosen]
    data = load_tensor_set(MultiTaskDataset(records, reader.tasks, size=size))
    return data.images, data.keys


def _slug(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in key)


def plot_tokens(
    checkpoint: Path,
    out: Path,
    *,
    scenes: Path | None = None,
    fmt: str = "folder",
    max_images: int = 64,
    shown: int = 3,
    generate: int = 8,
    seed: int = 99,
) -> list[Path]:
    """Draw Fig. 7 and Fig. 11 for a checkpoint; returns the PNG paths written."""
    state = load_checkpoint(checkpoint)
    model, quantizers, specs = model_from_checkpoint(state)
    size = tuple(state["size"])
    tasks = {t.name: t for t in specs}
    require_fine_tokens(model)
    with tempfile.TemporaryDirectory(prefix="hitts-scenes-") as tmp:
        if scenes is None:
            scenes = generate_scenes(
                Path(tmp) / "scenes",
                generate,
                SceneConfig(height=size[0], width=size[1]),
                seed=seed,
                val_fraction=0.0,
                progress=False,
            )
        images, keys = load_images(Path(scenes), size, fmt=fmt, limit=max_images)
    phi, outputs = run_with_tokens(model, images)
    out.mkdir(parents=True, exist_ok=True)
    written = [draw_fig7(phi, tasks, out / "fig7_fine_tokens.png")]
    for i in range(min(shown, len(keys))):
        one = {t: {k: v[i] for k, v in o.items()} for t, o in outputs.items()}
        path = out / f"fig11_score_maps_{_slug(keys[i])}.png"
        written.append(
            draw_fig11(
                images[i], one, tasks, quantizers, keys[i], path, has_global=model.has_global_tokens
            )
        )
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="last.pt of a HiTTs run")
    p.add_argument(
        "--scenes",
        default=None,
        help="source folder of the images (default: generate --generate scenes at the "
        "checkpoint's size into a temporary folder)",
    )
    p.add_argument(
        "--format",
        default="folder",
        choices=sorted(FORMATS),
        help="layout of --scenes (default: folder, what generate_scenes writes)",
    )
    p.add_argument("--out", default=None, help="folder of the PNGs (default: the checkpoint's)")
    p.add_argument(
        "--max-images",
        type=int,
        default=64,
        help="images the token statistics of Fig. 7 average over",
    )
    p.add_argument("--shown", type=int, default=3, help="images drawn in Fig. 11, one PNG each")
    p.add_argument(
        "--generate", type=int, default=8, help="scenes to generate when --scenes is not given"
    )
    p.add_argument("--seed", type=int, default=99, help="seed of the generated scenes")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint.parent
    written = plot_tokens(
        checkpoint,
        out,
        scenes=Path(args.scenes) if args.scenes else None,
        fmt=args.format,
        max_images=args.max_images,
        shown=args.shown,
        generate=args.generate,
        seed=args.seed,
    )
    for path in written:
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
