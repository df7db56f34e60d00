"""The paper's comparisons (Table 5 shape) on generated scenes, at CPU scale.

Usage:
    python examples/benchmark_synthetic.py --quick                 # minutes: one seed, tiny
    python examples/benchmark_synthetic.py                         # 3 seeds, the full table
    python examples/benchmark_synthetic.py --setting random-labels

Every method is trained on the same generated scenes, thinned by the partial-label setting, and
scored on a fully labelled validation split (final checkpoint, not the best epoch). Rows:

- STL: one single-task model per task, each on that task's labels only.
- MTL baseline; MTL w/ L_p* (stage 2 on the MTL model's pseudo-labels, no tokens, no L_f).
- HiTTs (stage 1); HiTTs w/ L_f, w/ L_p, w/ L_p + L_f (stage 2 on the stage-1 HiTTs' discovery).
- Ablations of HiTTs (stage 1): w/o OE, w/o inter-task, w/o intra-task, w/o global tokens,
  w/o fine-grained tokens.
- Full labels (MTL baseline on every label): the upper bound.

ΔMTL (Eq. 9, %) is against the STL row of the same seed; "gap" is the share of the one-label ->
full-label ΔMTL gap a method closes over the MTL baseline. Mean ± standard deviation over seeds.
The table is rewritten to ``OUT/table.md`` as runs finish; each run lives in ``OUT/runs/`` and a
rerun skips finished runs and resumes unfinished ones.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hitts.model.data.scenes import SceneConfig, generate_scenes
from hitts.model.metrics import delta_mtl
from hitts.model.network import ModelConfig
from hitts.model.pipeline import splits_from_source, train_stage2
from hitts.model.recipe import fit_quantizers, thresholds_for
from hitts.model.train import TrainConfig, train

# The metrics of Eq. 9 per task kind (as in Table 1; edge: odsF).
DELTA_METRICS = {
    "semseg": ("mIoU", "pAcc"),
    "depth": ("abs_err", "rmse"),
    "normal": ("mean", "rmse", "within_11.25", "within_22.5", "within_30"),
    "edge": ("odsF",),
}
SHOWN = [
    ("semseg", "mIoU"),
    ("semseg", "pAcc"),
    ("depth", "abs_err"),
    ("depth", "rmse"),
    ("normal", "mean"),
    ("normal", "within_11.25"),
    ("edge", "odsF"),
]


@dataclass(frozen=True)
class Job:
    name: str
    kind: str = "hitts"
    stl_task: str | None = None
    labels: str = "partial"  # "partial": the setting's labels; "full": every label
    stage: int = 1
    teacher: str | None = None
    use_lp: bool = True
    use_lf: bool = True
    switches: tuple[tuple[str, bool], ...] = field(default_factory=tuple)


TASKS = ("semseg", "depth", "normal", "edge")
STAGE1 = [
    *[Job(f"STL {t}", kind="stl", stl_task=t) for t in TASKS],
    Job("MTL baseline", kind="mtl"),
    Job("HiTTs"),
    Job("HiTTs w/o OE", switches=(("use_oe", False),)),
    Job("HiTTs w/o inter-task", switches=(("use_inter", False),)),
    Job("HiTTs w/o intra-task", switches=(("use_intra", False),)),
    Job("HiTTs w/o global tokens", switches=(("use_global", False),)),
    Job("HiTTs w/o fine-grained tokens", switches=(("use_fine", False),)),
    Job("Full labels (MTL)", kind="mtl", labels="full"),
]
STAGE2 = [
    Job("MTL w/ L_p*", kind="mtl", stage=2, teacher="MTL baseline", use_lf=False),
    Job("HiTTs w/ L_f", stage=2, teacher="HiTTs", use_lp=False),
    Job("HiTTs w/ L_p", stage=2, teacher="HiTTs", use_lf=False),
    Job("HiTTs w/ L_p + L_f", stage=2, teacher="HiTTs"),
]
ROWS = [
    "STL",
    "MTL baseline",
    "MTL w/ L_p*",
    "HiTTs",
    "HiTTs w/ L_f",
    "HiTTs w/ L_p",
    "HiTTs w/ L_p + L_f",
    "HiTTs w/o OE",
    "HiTTs w/o inter-task",
    "HiTTs w/o intra-task",
    "HiTTs w/o global tokens",
    "HiTTs w/o fine-grained tokens",
    "Full labels (MTL)",
]

CLAIMS = [
    ("HiTTs w/ L_p + L_f", "HiTTs"),
    ("HiTTs", "MTL baseline"),
    ("HiTTs w/ L_p + L_f", "MTL w/ L_p*"),
    ("HiTTs w/ L_p + L_f", "MTL baseline"),
]

_SETS: dict = {}  # filled before the worker pool forks: the splits are shared, not copied


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


def run_job(args: tuple[Job, int, dict]) -> tuple[str, int, dict]:
    job, seed, opts = args
    torch.set_num_threads(opts["threads"])
    run_dir = Path(opts["out"]) / "runs" / f"seed{seed}" / _slug(job.name)
    result = run_dir / "result.json"
    if result.exists():
        return job.name, seed, json.loads(result.read_text())
    train_set, val_set, quantizers = _SETS[("full" if job.labels == "full" else "partial", seed)]
    model_cfg = ModelConfig(
        outputs={n: q.num_bins for n, q in quantizers.items()},
        kind=job.kind,
        stl_task=job.stl_task,
        channels=opts["channels"],
        **dict(job.switches),
    )
    cfg = TrainConfig(
        epochs=opts["epochs"],
        seed=seed,
        use_lp=job.use_lp,
        use_lf=job.use_lf,
        thresholds=thresholds_for(train_set.tasks, opts["setting"]),
    )
    t0 = time.perf_counter()
    if job.stage == 1:
        metrics = train(
            cfg, model_cfg, quantizers, train_set, val_set, run_dir, resume=True, progress=False
        )
    else:
        teacher = run_dir.parent / _slug(job.teacher) / "last.pt"
        metrics = train_stage2(
            teacher, cfg, model_cfg, train_set, val_set, run_dir, resume=True, progress=False
        )
    payload = {"metrics": metrics, "seconds": round(time.perf_counter() - t0, 1)}
    result.write_text(json.dumps(payload))
    return job.name, seed, payload


def _row_metrics(results: dict, row: str, seed: int) -> dict | None:
    if row == "STL":
        parts = [results.get((f"STL {t}", seed)) for t in TASKS]
        if any(p is None for p in parts):
            return None
        return {t: p["metrics"][t] for t, p in zip(TASKS, parts, strict=False)}
    r = results.get((row, seed))
    return None if r is None else r["metrics"]


def _pick(m: dict) -> dict:
    return {t: {k: m[t][k] for k in DELTA_METRICS[t] if m[t].get(k) is not None} for t in TASKS}


def _fmt(values: list[float], digits: int = 2) -> str:
    if not values:
        return "…"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f}±{statistics.stdev(values):.{digits}f}"


def write_table(results: dict, seeds: list[int], opts: dict, path: Path) -> str:
    lines = [
        f"# {opts['setting']} on generated scenes: {opts['n_train']} train / {opts['n_val']} val "
        f"images at {opts['size'][0]}x{opts['size'][1]}, {opts['epochs']} epochs, seeds {seeds}",
        "",
        "| method | " + " | ".join(f"{t} {k}" for t, k in SHOWN) + " | ΔMTL % | gap % |",
        "|---|" + "---|" * (len(SHOWN) + 2),
    ]
    deltas: dict[str, dict[int, float]] = {}
    for row in ROWS:
        for s in seeds:
            stl, m = _row_metrics(results, "STL", s), _row_metrics(results, row, s)
            if stl is not None and m is not None:
                deltas.setdefault(row, {})[s] = delta_mtl(_pick(m), _pick(stl))
    for row in ROWS:
        cells = []
        for t, k in SHOWN:
            vals = [
                m[t][k]
                for s in seeds
                if (m := _row_metrics(results, row, s)) and m[t].get(k) is not None
            ]
            cells.append(_fmt(vals, 3 if t == "depth" else 2))
        d = deltas.get(row, {})
        gap = []
        for s, v in d.items():
            base, full = (
                deltas.get("MTL baseline", {}).get(s),
                deltas.get("Full labels (MTL)", {}).get(s),
            )
            if base is not None and full is not None and abs(full - base) > 1e-9:
                gap.append(100 * (v - base) / (full - base))
        lines.append(
            f"| {row} | " + " | ".join(cells) + f" | {_fmt(list(d.values()))} | {_fmt(gap, 0)} |"
        )
    lines += [
        "",
        "The paper's claims, as paired ΔMTL differences per seed (a claim holds when the mean "
        "difference exceeds its standard deviation):",
        "",
    ]
    for a, b in CLAIMS:
        diffs = [
            deltas[a][s] - deltas[b][s]
            for s in seeds
            if s in deltas.get(a, {}) and s in deltas.get(b, {})
        ]
        if diffs:
            holds = len(diffs) > 1 and statistics.mean(diffs) > statistics.stdev(diffs)
            lines.append(
                f"- {a} − {b}: {', '.join(f'{x:+.2f}' for x in diffs)} → {_fmt(diffs)}"
                f"{' (holds)' if holds else ''}"
            )
    lines += ["", "Per-class IoU (semseg, mean over seeds):", ""]
    for row in ROWS:
        per = [m["semseg"]["IoU"] for s in seeds if (m := _row_metrics(results, row, s))]
        if per:
            cols = list(zip(*per, strict=False))
            lines.append(
                f"- {row}: "
                + ", ".join(
                    "—" if any(v is None for v in c) else f"{statistics.mean(c):.1f}" for c in cols
                )
            )
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="one-label", choices=["one-label", "random-labels"])
    p.add_argument("--train", type=int, default=400, help="training images")
    p.add_argument("--val", type=int, default=300, help="validation images (fully labelled)")
    p.add_argument("--size", default="48x64", help="HxW")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--channels", type=int, default=32, help="token / task-feature width C")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    p.add_argument("--out", default=None, help="results folder (default examples/results/...)")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 seed, 120/60 images, 4 epochs"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.val, args.epochs, args.seeds = 120, 60, 4, [0]
    size = tuple(int(v) for v in args.size.split("x"))
    out = Path(
        args.out or f"examples/results/synthetic-{args.setting}{'-quick' if args.quick else ''}"
    )
    out.mkdir(parents=True, exist_ok=True)
    count = args.train + args.val
    scenes = out / "scenes"
    generate_scenes(
        scenes,
        count,
        SceneConfig(height=size[0], width=size[1]),
        seed=1234,
        val_fraction=args.val / count,
        progress=False,
    )
    for seed in args.seeds:
        for labels, setting in (("partial", args.setting), ("full", "full")):
            train_set, val_set = splits_from_source(scenes, setting=setting, seed=seed)
            _SETS[(labels, seed)] = (train_set, val_set, fit_quantizers(train_set, seed=seed))
    opts = {
        "out": str(out),
        "epochs": args.epochs,
        "channels": args.channels,
        "setting": args.setting,
        "threads": max(1, (os.cpu_count() or 1) // args.jobs),
        "n_train": args.train,
        "n_val": args.val,
        "size": size,
    }
    results: dict = {}
    t0 = time.perf_counter()
    ctx = mp.get_context("fork")
    for wave in (STAGE1, STAGE2):
        todo = [(job, seed, opts) for seed in args.seeds for job in wave]
        with ctx.Pool(args.jobs) as pool:
            for name, seed, payload in pool.imap_unordered(run_job, todo):
                results[(name, seed)] = payload
                print(
                    f"[{time.perf_counter() - t0:7.0f}s] seed {seed} {name}: {payload['seconds']}s",
                    flush=True,
                )
                write_table(results, args.seeds, opts, out / "table.md")
    (out / "results.json").write_text(json.dumps({f"{k[0]}|{k[1]}": v for k, v in results.items()}))
    print(write_table(results, args.seeds, opts, out / "table.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
