"""Scoring suggestions against the hidden ground truth a partial-label setting kept.

Per task, over the samples that have both a suggestion and hidden truth: the task's metrics
(Sec. 4.1) inside the confident mask ``M_p``, the coverage (share of valid truth pixels inside
``M_p``), and the coverage-versus-error curve over τ, drawn to a PNG, so a user can pick the τ that
gives the precision they need. The curve comes from a 256-bin histogram of the stored 8-bit
confidence, so it costs one pass and constant memory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from hitts.app import store
from hitts.model.data.label_io import read_label
from hitts.model.metrics import make_meter
from hitts.model.tasks import DEPTH, EDGE, NORMAL, valid_mask

log = logging.getLogger(__name__)

ERROR_NAME = {DEPTH: "abs. error (m)", NORMAL: "mean angle (°)"}  # others: pixel error rate (%)


def _path(label) -> Path:
    return Path(getattr(label, "map_path", None) or label.mask_path)


def _u8(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def _pixel_error(kind: str, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    if kind == DEPTH:
        return np.abs(pred - truth)
    if kind == NORMAL:
        cos = np.clip((pred * truth).sum(-1), -1.0, 1.0)
        return np.degrees(np.arccos(cos))
    return 100.0 * (pred != truth)


def evaluate_suggestions(name: str, out_dir: Path | None = None) -> dict[str, dict]:
    """Task -> {"samples", "coverage", "tau", "metrics_in_mp", "curve": [(tau, coverage, error)],
    "curve_png"}; tasks without any scorable sample are left out."""
    ds = store.load_dataset(name)
    info = store.dataset_info(ds)
    out_dir = out_dir or store.files_dir(name) / "reports"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    schema = ds.get_field_schema()
    for task in info.tasks:
        if store.hidden_field(task.name) not in schema or store.pred_field(task.name) not in schema:
            continue
        view = ds.exists(store.hidden_field(task.name)).exists(store.pred_field(task.name))
        if len(view) == 0:
            continue
        meter = make_meter(task)
        counts = np.zeros(256)
        errors = np.zeros(256)
        taus = []
        fields = [
            store.hidden_field(task.name),
            store.pred_field(task.name),
            store.conf_field(task.name),
            store.mp_field(task.name),
            f"{task.name}_tau",
        ]
        for hidden, pred_l, conf_l, mp_l, tau in zip(*view.values(fields), strict=True):
            truth = read_label(task, _path(hidden), depth_unit=info.depth_unit)
            hw = truth.shape[:2]
            pred = read_label(task, _path(pred_l), hw, info.depth_unit)
            conf = _u8(_path(conf_l))
            m_p = _u8(_path(mp_l)).astype(bool)
            valid = valid_mask(task.kind, truth)
            if task.kind == NORMAL:
                valid &= np.any(pred != 0, axis=-1)
            err = _pixel_error(task.kind, pred, truth)
            counts += np.bincount(conf[valid].ravel(), minlength=256)
            errors += np.bincount(conf[valid].ravel(), weights=err[valid].ravel(), minlength=256)
            _update(meter, task.kind, pred, truth, valid & m_p)
            taus.append(tau)
        total = counts.sum()
        # pixels with confidence > τ are those in bins > round(255 τ)
        curve = []
        for tau in np.round(np.arange(0.0, 1.0, 0.02), 2):
            above = np.arange(256) > np.floor(tau * 255)
            n = counts[above].sum()
            curve.append(
                (
                    float(tau),
                    float(n / total) if total else 0.0,
                    float(errors[above].sum() / n) if n else None,
                )
            )
        tau_used = float(np.median(taus))
        in_mp = np.arange(256) > np.floor(tau_used * 255)
        results[task.name] = {
            "samples": len(view),
            "tau": tau_used,
            "coverage": float(counts[in_mp].sum() / total) if total else 0.0,
            "metrics_in_mp": meter.compute(),
            "error_all_pixels": float(errors.sum() / total) if total else None,
            "curve": curve,
        }
        png = out_dir / f"coverage-error-{task.name}.png"
        _plot(task.name, task.kind, curve, tau_used, png)
        results[task.name]["curve_png"] = str(png)
    (out_dir / "suggestions.json").write_text(json.dumps(results, indent=2))
    return results


def _update(meter, kind: str, pred: np.ndarray, truth: np.ndarray, keep: np.ndarray) -> None:
    """Feed the meter the pixels in ``keep`` only (others marked invalid)."""
    t = truth.copy()
    if kind == NORMAL:
        t[~keep] = 0
        meter.update(
            torch.from_numpy(pred).permute(2, 0, 1)[None],
            torch.from_numpy(t).permute(2, 0, 1)[None],
        )
        return
    if kind == DEPTH:
        t[~keep] = 0
        meter.update(torch.from_numpy(pred)[None], torch.from_numpy(t)[None])
        return
    t[~keep] = -1
    p = torch.from_numpy(pred)[None]
    meter.update(p.float() if kind == EDGE else p, torch.from_numpy(t)[None])


def _plot(task: str, kind: str, curve, tau_used: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(c, e, t) for t, c, e in curve if e is not None]
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    if pts:
        ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker=".", lw=1)
        for c, e, t in pts[::5]:
            ax.annotate(
                f"τ={t:.1f}", (c * 100, e), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
        used = min(pts, key=lambda p: abs(p[2] - tau_used))
        ax.plot(
            [used[0] * 100], [used[1]], "o", color="crimson", label=f"τ in use = {tau_used:.2f}"
        )
        ax.legend(fontsize=7)
    ax.set_xlabel("coverage: pixels kept (%)")
    ax.set_ylabel(ERROR_NAME.get(kind, "pixel error rate (%)"))
    ax.set_title(f"{task}: error of suggestions vs coverage")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def evaluate_on_hidden(
    name: str, predictor, *, batch_size: int = 16, skip: dict[str, set[str]] | None = None
) -> dict[str, dict]:
    """Task -> metrics of ``predictor`` against the hidden ground truth, over every valid pixel of
    the samples whose label for that task a setting hid: how well a model round fills in.

    ``skip``: task -> sample keys left out of that task's score (e.g. labels an annotator fixed
    from the hidden truth, which a later round trained on)."""
    from fiftyone import ViewField as F

    from hitts.model.data.label_io import read_image

    ds = store.load_dataset(name)
    info = store.dataset_info(ds)
    schema = ds.get_field_schema()
    results = {}
    for task in predictor.tasks:
        field = store.hidden_field(task.name)
        if field not in schema:
            continue
        view = ds.match(F(field) != None)  # noqa: E711  (a MongoDB null test)
        if skip and skip.get(task.name):
            view = view.match(~F("key").is_in(sorted(skip[task.name])))
        view = view.sort_by("key")
        if len(view) == 0:
            continue
        meter = make_meter(task)
        paths = view.values("filepath")
        labels = view.values(field)
        for start in range(0, len(paths), batch_size):
            images = [read_image(p) for p in paths[start : start + batch_size]]
            outs = predictor.predict(images)
            for out, label in zip(outs, labels[start : start + batch_size], strict=True):
                truth = read_label(task, _path(label), depth_unit=info.depth_unit)
                pred = out[task.name]["label"]
                if task.kind == EDGE:  # the meter sweeps thresholds over P(edge), from 2 classes
                    conf = out[task.name]["confidence"]
                    pred = np.where(pred == 1, conf, 1.0 - conf).astype(np.float32)
                _update(meter, task.kind, pred, truth, valid_mask(task.kind, truth))
        results[task.name] = {"samples": len(view), **meter.compute()}
    return results
