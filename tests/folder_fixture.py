"""Tiny datasets in the project's folder layout, written with the project's own encoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hitts.model.data.label_io import write_label, write_png
from hitts.model.tasks import scene_tasks

CLASSES = ("floor", "wall", "ceiling", "box", "sphere", "cylinder")


def random_labels(rng: np.random.Generator, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    h, w = hw
    semseg = rng.integers(0, len(CLASSES), size=hw).astype(np.int64)
    semseg[0, 0] = -1
    depth = rng.uniform(0.5, 8.0, size=hw).astype(np.float32)
    depth[0, 1] = 0.0
    n = rng.normal(size=(h, w, 3)).astype(np.float32)
    n[..., 2] = -np.abs(n[..., 2]) - 0.1
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[0, 2] = 0.0
    edge = (rng.random(hw) < 0.1).astype(np.int64)
    return {"semseg": semseg, "depth": depth, "normal": n, "edge": edge}


def make_folder(
    root: Path,
    n: int = 6,
    hw: tuple[int, int] = (12, 16),
    tasks: tuple[str, ...] = ("semseg", "depth", "normal", "edge"),
    val: int = 2,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Write ``n`` images with every task in ``tasks``; the last ``val`` go to the val split.

    Returns stem -> the labels written (canonical form, before encoding).
    """
    rng = np.random.default_rng(seed)
    specs = {t.name: t for t in scene_tasks(CLASSES)}
    written = {}
    stems = [f"img_{i:03d}" for i in range(n)]
    for stem in stems:
        write_png(
            root / "images" / f"{stem}.png", rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
        )
        labels = random_labels(rng, hw)
        for t in tasks:
            write_label(specs[t], root / t / f"{stem}.png", labels[t])
        written[stem] = {t: labels[t] for t in tasks}
    if "semseg" in tasks:
        (root / "classes.json").write_text(json.dumps({"semseg": list(CLASSES)}))
    (root / "splits").mkdir(parents=True, exist_ok=True)
    (root / "splits" / "train.txt").write_text("\n".join(stems[: n - val]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(stems[n - val :]) + "\n")
    return written
