"""Arrays to what the review page shows, and brush strokes back to labels.

Everything here is numpy in, numpy (or a short HTML string) out: no FiftyOne, no Gradio. Images stay
at the sample's own size; the page scales them up in the browser (``image-rendering: pixelated``),
which keeps the PNGs the server sends small.

Colours:

- Class ids: one fixed palette colour per class (:func:`palette`); invalid pixels are black
  (:data:`INVALID_RGB`), and black is also the brush swatch that paints "invalid".
- Depth: a perceptual colour map between the 2nd and 98th percentile of the valid depths, with an
  HTML scale bar in metres (:func:`depth_legend_html`); invalid pixels are black.
- Normals: the stored RGB encoding ``(n + 1) / 2 * 255`` as it is; invalid (0, 0, 0) is black.
- Score maps (confidence, ``M_f``, fine-grained score), stored as uint8 = value * 255: viridis.
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
from functools import cache

import numpy as np
from PIL import Image

from hitts.model.tasks import DEPTH, NORMAL, TaskSpec

INVALID_RGB = (0, 0, 0)
INVALID_HEX = "#000000"
# tab10 and its light variants: well separated, none close to black
_BASE = (
    "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf "
    "aec7e8 ffbb78 98df8a ff9896 c5b0d5 c49c94 f7b6d2 c7c7c7 dbdb8d 9edae5"
).split()
MIN_COLOUR_DISTANCE = 24.0  # palette colours (and black) are at least this far apart in RGB
PAINT_TOLERANCE = 10.0  # a painted pixel within this RGB distance of a swatch is that swatch
PAINTED_ALPHA = 128  # layer pixels at least this opaque count as painted
MAX_PALETTE = 255  # more classes than this cannot be told apart by colour


# ----------------------------------------------------------------------------------------------
# colour tables


@cache
def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 class colours, the same for every call with the same count.

    Raises:
        ValueError: More classes than :data:`MAX_PALETTE`.
    """
    if num_classes > MAX_PALETTE:
        raise ValueError(
            f"{num_classes} classes are more than the {MAX_PALETTE} colours a brush palette can "
            "keep apart"
        )
    colours = [tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in _BASE]
    k = 0
    while len(colours) < num_classes:  # golden-ratio hues, varied saturation and value
        k += 1
        hue = (k * 0.618033988749895) % 1.0
        sat = (0.95, 0.6, 0.8)[k % 3]
        val = (0.95, 0.7, 0.5, 0.85)[k % 4]
        c = tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(hue, sat, val))
        if _min_distance(c, colours + [INVALID_RGB]) >= MIN_COLOUR_DISTANCE:
            colours.append(c)
    out = np.array(colours[:num_classes], dtype=np.uint8).reshape(-1, 3)
    out.setflags(write=False)
    return out


def _min_distance(c: tuple[int, ...], others: list[tuple[int, ...]]) -> float:
    a = np.asarray(others, dtype=np.float64)
    return float(np.sqrt(((a - np.asarray(c, dtype=np.float64)) ** 2).sum(axis=1)).min())


def to_hex(rgb) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def brush_colours(task: TaskSpec) -> list[str]:
    """The swatches of the fix brush: class colours then black for "invalid"; black alone for
    depth and normals, where fixing means marking regions invalid."""
    if task.is_classification:
        return [to_hex(c) for c in palette(task.num_classes)] + [INVALID_HEX]
    return [INVALID_HEX]


@cache
def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 colour table of a matplotlib colour map (imported on first use)."""
    from matplotlib import colormaps

    table = (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    table.setflags(write=False)
    return table


DEPTH_CMAP = "turbo"
SCORE_CMAP = "viridis"


# ----------------------------------------------------------------------------------------------
# labels and maps to RGB


def invalid_code(task: TaskSpec, encoded: np.ndarray):
    """The value of an invalid pixel in the stored encoding of ``task``."""
    if task.is_classification:
        return 65535 if encoded.dtype == np.uint16 else 255
    return 0  # depth counts and normal RGB


def invalid_mask(task: TaskSpec, encoded: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of a stored label that carry no value."""
    if task.kind == NORMAL:
        return np.all(encoded == 0, axis=-1)
    return encoded == invalid_code(task, encoded)


def classes_rgb(task: TaskSpec, ids: np.ndarray) -> np.ndarray:
    """(H, W) stored class ids -> (H, W, 3) uint8 palette colours, invalid (or unknown) black."""
    pal = palette(task.num_classes)
    known = ids < task.num_classes
    out = np.zeros(ids.shape + (3,), dtype=np.uint8)
    out[known] = pal[ids[known].astype(np.intp)]
    return out


def depth_range(counts: np.ndarray, depth_unit: float) -> tuple[float, float]:
    """The colour map's span in metres: 2nd to 98th percentile of the valid depths."""
    valid = counts[counts > 0]
    if valid.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(valid, (2, 98)) * depth_unit
    return float(lo), float(max(hi, lo + depth_unit))


def depth_rgb(counts: np.ndarray, depth_unit: float, span: tuple[float, float]) -> np.ndarray:
    """(H, W) 16-bit depth counts -> (H, W, 3) uint8 colours over ``span`` metres; 0 is black."""
    lo, hi = span
    metres = counts.astype(np.float32) * np.float32(depth_unit)
    t = np.clip((metres - lo) / (hi - lo), 0.0, 1.0)
    out = _lut(DEPTH_CMAP)[(t * 255).round().astype(np.intp)]
    out[counts == 0] = INVALID_RGB
    return out


def score_rgb(u8: np.ndarray) -> np.ndarray:
    """(H, W) uint8 score map (value * 255) -> (H, W, 3) viridis colours."""
    return _lut(SCORE_CMAP)[u8]


def label_rgb(task: TaskSpec, encoded: np.ndarray, depth_unit: float) -> np.ndarray:
    """A stored label in any task's encoding -> (H, W, 3) uint8 for display."""
    if task.is_classification:
        return classes_rgb(task, encoded)
    if task.kind == DEPTH:
        return depth_rgb(encoded, depth_unit, depth_range(encoded, depth_unit))
    if task.kind == NORMAL:
        return np.ascontiguousarray(encoded[..., :3], dtype=np.uint8)
    raise ValueError(f"unknown task kind {task.kind!r}")


def blend(image: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - alpha) * image + alpha * colours, both (H, W, 3) uint8."""
    a = float(np.clip(alpha, 0.0, 1.0))
    out = image.astype(np.float32) * (1.0 - a) + colours.astype(np.float32) * a
    return out.round().astype(np.uint8)


def confident_preview(image: np.ndarray, colours: np.ndarray, confident: np.ndarray) -> np.ndarray:
    """The suggestion where ``confident`` (H, W) is set; elsewhere the image, greyed and darkened,
    so the pixels an accept-confident would make invalid stand out."""
    grey = image.astype(np.float32).mean(axis=-1, keepdims=True) * 0.45
    out = np.repeat(grey, 3, axis=-1).round().astype(np.uint8)
    out[confident] = colours[confident]
    return out


def editor_scale(width: int, target: int = 480, most: int = 16) -> int:
    """Integer upscale that makes a ``width``-pixel image about ``target`` pixels wide (the
    editor draws with smoothing, so small images are enlarged by repetition first)."""
    return int(np.clip(-(-target // max(width, 1)), 1, most))


def upscale(image: np.ndarray, k: int) -> np.ndarray:
    """Repeat every pixel k x k times."""
    if k == 1:
        return image
    return np.repeat(np.repeat(image, k, axis=0), k, axis=1)


# ----------------------------------------------------------------------------------------------
# legends (HTML, crisp at any zoom)


def class_legend_html(task: TaskSpec) -> str:
    pal = palette(task.num_classes)
    items = [
        f'<span class="swatch"><i style="background:{to_hex(c)}"></i>{html.escape(name)}</span>'
        for name, c in zip(task.classes, pal, strict=True)
    ]
    items.append(f'<span class="swatch"><i style="background:{INVALID_HEX}"></i>invalid</span>')
    return '<div class="legend">' + " ".join(items) + "</div>"


def gradient_legend_html(cmap: str, lo: str, hi: str, title: str) -> str:
    stops = ", ".join(to_hex(c) for c in _lut(cmap)[::32].tolist() + [_lut(cmap)[-1].tolist()])
    return (
        f'<div class="legend"><span>{html.escape(title)}</span> <span>{html.escape(lo)}</span>'
        f'<i class="bar" style="background:linear-gradient(to right, {stops})"></i>'
        f"<span>{html.escape(hi)}</span></div>"
    )


def depth_legend_html(span: tuple[float, float]) -> str:
    return gradient_legend_html(
        DEPTH_CMAP, f"{span[0]:.2f} m", f"{span[1]:.2f} m", "depth (black: invalid)"
    )


def normal_legend_html() -> str:
    return (
        '<div class="legend">normals as RGB = (n + 1) / 2 · 255: red +x (right), green +y, '
        "blue +z; black: invalid</div>"
    )


def label_legend_html(task: TaskSpec, encoded: np.ndarray, depth_unit: float) -> str:
    if task.is_classification:
        return class_legend_html(task)
    if task.kind == DEPTH:
        return depth_legend_html(depth_range(encoded, depth_unit))
    return normal_legend_html()


def score_legend_html() -> str:
    return gradient_legend_html(SCORE_CMAP, "0", "1", "score")


# ----------------------------------------------------------------------------------------------
# panels: small PNGs inline in the page


def png_data_uri(image: np.ndarray) -> str:
    """(H, W, 3) uint8 -> ``data:image/png;base64,...`` (fast compression: these are tiny)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def panels_html(panels: list[tuple[str, str, np.ndarray | None, str]]) -> str:
    """A grid of captioned images: (element id, caption, image or None, HTML under it).

    The images are the sample's own size; the browser enlarges them without smoothing.
    """
    cells = []
    for elem_id, caption, image, below in panels:
        if image is None:
            body = '<div class="empty">none</div>'
        else:
            body = f'<img alt="{html.escape(caption)}" src="{png_data_uri(image)}">'
        cells.append(
            f'<figure class="panel" id="{elem_id}">{body}'
            f"<figcaption>{html.escape(caption)}</figcaption>{below}</figure>"
        )
    return '<div class="panels">' + "".join(cells) + "</div>"


# ----------------------------------------------------------------------------------------------
# brush strokes back to a label


class UnknownColour(ValueError):
    """A painted colour that is not one of the task's swatches."""


def painted_pixels(layers: list[np.ndarray], hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flatten editor layers (RGBA, bottom first) into (H, W) painted mask and (H, W, 3) colours.

    Layers of another size (a browser that scaled the canvas) are resampled to ``hw`` by nearest
    neighbour.
    """
    h, w = hw
    painted = np.zeros((h, w), dtype=bool)
    colours = np.zeros((h, w, 3), dtype=np.uint8)
    for layer in layers:
        if layer is None:
            continue
        layer = np.asarray(layer)
        if layer.ndim != 3 or layer.shape[-1] not in (3, 4):
            raise ValueError(f"an editor layer must be (H, W, 3 or 4), got shape {layer.shape}")
        if layer.shape[:2] != (h, w):
            # the centre of each pixel's block (the page sends the editor an upscaled background)
            rows = ((np.arange(h) + 0.5) * layer.shape[0] / h).astype(np.intp)
            cols = ((np.arange(w) + 0.5) * layer.shape[1] / w).astype(np.intp)
            layer = layer[rows][:, cols]
        alpha = layer[..., 3] if layer.shape[-1] == 4 else np.full((h, w), 255, np.uint8)
        on = alpha >= PAINTED_ALPHA
        painted |= on
        colours[on] = layer[..., :3][on]
    return painted, colours


def paint_to_label(task: TaskSpec, encoded: np.ndarray, layers: list[np.ndarray]) -> np.ndarray:
    """The suggestion ``encoded`` (stored encoding) with the painted strokes applied.

    Segmentation-like tasks: a pixel painted with a class colour becomes that class, painted black
    becomes invalid. Depth and normals: every painted pixel becomes invalid. Unpainted pixels keep
    the suggestion.

    Raises:
        UnknownColour: A stroke whose colour is not a swatch of this task (names the colour).
        ValueError: Nothing painted, or a layer of the wrong form.
    """
    hw = encoded.shape[:2]
    painted, colours = painted_pixels(layers, hw)
    if not painted.any():
        raise ValueError("nothing is painted: paint over the pixels to change, then save the fix")
    out = encoded.copy()
    swatches = np.array(
        [tuple(int(h[i : i + 2], 16) for i in (1, 3, 5)) for h in brush_colours(task)],
        dtype=np.float32,
    )
    got = colours[painted].astype(np.float32)  # (P, 3)
    dist = np.sqrt(((got[:, None, :] - swatches[None, :, :]) ** 2).sum(-1))  # (P, S)
    nearest = dist.argmin(axis=1)
    unknown = dist[np.arange(len(got)), nearest] > PAINT_TOLERANCE
    if unknown.any():
        bad = sorted({to_hex(c) for c in got[unknown].round().astype(int).tolist()})
        raise UnknownColour(
            f"{int(unknown.sum())} painted pixel(s) have colour(s) {', '.join(bad[:3])}, which "
            f"are not {task.name} swatches; paint with the palette "
            f"({', '.join(brush_colours(task))}); nothing was saved"
        )
    is_invalid = nearest == len(swatches) - 1  # black is the last swatch
    if task.is_classification:
        values = nearest.astype(out.dtype)
        values[is_invalid] = invalid_code(task, encoded)
        out[painted] = values
    else:
        out[painted] = 0
    return out
