"""The whole loop with hidden ground truth, and the proof that a reviewed round helps.

Generated scenes -> ingest (one-label, the hidden labels kept) -> train round 0 -> suggest ->
an annotator accepts the most confident half of each task's suggestions through the review store,
as on the page (``accept_confident`` at τ by default; ``--accept whole`` clicks "accept"), and
with ``--fix-share`` fixes the least confident ones with the correct label -> export -> retrain
(round 1: L_s on ground truth + reviewed labels, L_p, L_f) -> suggest. Both rounds are scored
against the hidden ground truth on the training images whose label was hidden (less the fixed
ones). ``--control`` also retrains a copy of the dataset with nothing reviewed, from the same
teacher with the same seed: the paper's plain stage 2, which separates the review's share of the
gain from stage 2's.

An accepted confident region holds the pixels ``L_p`` already trains on, with the same weight, so
on its own it leaves round 1 exactly the plain stage-2 model: what the review adds to training
comes from whole accepts (the annotator vouches for the unconfident pixels too), fixes and rejects.

Each seed draws its own scenes, label split and training seeds; the table gives each round's mean
± standard deviation over the seeds and the paired round 1 - round 0 difference, and calls round 1
better on a task only when every seed improved and the mean difference exceeds its standard
deviation (BENCHMARKS.md).

Usage:
    python examples/e2e_rounds.py                      # 3 seeds, 300 scenes at 48x64, 25 epochs
    python examples/e2e_rounds.py --control --accept whole --fix-share 0.1
    python examples/e2e_rounds.py --seeds 0 --count 80 --size 32x48 --epochs 4    # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

SHOWN = {
    "semseg": ("mIoU", True),
    "depth": ("abs_err", False),
    "normal": ("mean", False),
    "edge": ("odsF", True),
}


def run(
    workdir: Path,
    *,
    count: int,
    size: tuple[int, int],
    epochs: int,
    seed: int = 0,
    name: str = "e2e",
    review_share: float = 0.5,
    accept: str = "region",
    fix_share: float = 0.0,
    control: bool = False,
    progress: bool = False,
) -> dict:
    """Run the loop in ``workdir`` (HITTS_HOME and FIFTYONE_DATABASE_DIR must already be set by
    the caller when it wants them elsewhere); returns {"round0", "round1", "accepted", ...}.

    The annotator works down each task's queue, most confident first, for ``review_share`` of it:
    ``accept="region"`` accepts the confident region (the page's "accept confident"), ``"whole"``
    the whole suggestion (the page's "accept"). With ``fix_share`` they also fix that share of the
    queue from its least confident end, drawing the correct label (the hidden truth, as the
    brush would); those labels are left out of every round's score.

    ``control``: also retrain a copy of the dataset taken before any review (the paper's plain
    stage 2 from the same teacher, same seed) and return its scores as "plain"."""
    if accept not in ("region", "whole"):
        raise ValueError(f"accept must be 'region' or 'whole', got {accept!r}")
    import fiftyone as fo

    from hitts.app.export import export_dataset
    from hitts.app.ingest import ingest
    from hitts.app.retrain import retrain
    from hitts.app.review_store import QueueFilter, ReviewStore, read_raw
    from hitts.app.suggest import suggest
    from hitts.app.suggestion_eval import evaluate_on_hidden
    from hitts.app.training import train_on_dataset
    from hitts.model.data.scenes import SceneConfig, generate_scenes
    from hitts.model.predictor import TorchPredictor
    from hitts.model.train import TrainConfig

    for old in (name, f"{name}-plain"):
        if fo.dataset_exists(old):
            fo.delete_dataset(old)
    scenes = generate_scenes(
        workdir / "scenes",
        count,
        SceneConfig(height=size[0], width=size[1]),
        seed=seed,
        progress=progress,
    )
    ingest(scenes, name, setting="one-label", seed=seed, progress=progress)
    r0 = workdir / "round0"
    train_on_dataset(
        name, r0, TrainConfig(epochs=epochs, seed=seed), {"kind": "hitts"}, progress=progress
    )
    checkpoint = r0 / "last.pt"
    teacher = TorchPredictor(checkpoint)
    suggest(name, teacher, checkpoint, progress=progress)
    tasks = [t.name for t in teacher.tasks]
    plain_ck = None
    if control:  # the same stage 2 with nothing reviewed
        copy = fo.load_dataset(name).clone(f"{name}-plain")
        copy.persistent = True
        plain_ck = retrain(copy.name, workdir / "round1-plain", epochs=epochs, progress=progress)

    review = ReviewStore(name)
    truth_files = _hidden_files(fo.load_dataset(name), tasks) if fix_share > 0 else {}
    accepted, fixed = {}, {}
    for task in tasks:
        total = review.counts(QueueFilter(task=task), "annotator", None).total
        fixed[task] = []
        if fix_share > 0:  # the least confident end first, as the page's default order
            queue = QueueFilter(task=task, descending=False)
            while len(fixed[task]) < round(fix_share * total) and (
                item := review.next_item(queue, "annotator")
            ):
                outcome = review.fix(item, "annotator", read_raw(truth_files[task][item.key]))
                assert outcome.ok, outcome.message
                fixed[task].append(item.key)
        queue = QueueFilter(task=task, descending=True)
        n = 0
        while n < round(review_share * total) and (item := review.next_item(queue, "annotator")):
            if accept == "region":
                outcome = review.accept_confident(item, "annotator", item.tau)
            else:
                outcome = review.accept(item, "annotator")
            assert outcome.ok, outcome.message
            n += 1
        accepted[task] = n
    manifest = export_dataset(name, workdir / "export", "folder", progress=progress)
    report = retrain(name, workdir / "round1", epochs=epochs, progress=progress)  # seed + 1
    skip = {t: set(keys) for t, keys in fixed.items()}
    round0 = evaluate_on_hidden(name, teacher, skip=skip)
    round1 = evaluate_on_hidden(name, TorchPredictor(report.checkpoint), skip=skip)
    plain = None
    if plain_ck is not None:
        plain = evaluate_on_hidden(copy.name, TorchPredictor(plain_ck.checkpoint), skip=skip)
    sources = {}
    for s in manifest["samples"]:
        for t, info in s["labels"].items():
            sources[f"{t}:{info['source']}"] = sources.get(f"{t}:{info['source']}", 0) + 1
    return {
        "round0": round0,
        "round1": round1,
        **({"plain": plain} if plain is not None else {}),
        "accepted": accepted,
        "fixed": {t: len(k) for t, k in fixed.items()},
        "export_sources": sources,
        "new_round": report.new_round,
    }


def _hidden_files(ds, tasks: list[str]) -> dict[str, dict[str, str]]:
    """Task -> sample key -> file of the label the setting hid (what a fix paints)."""
    from hitts.app import store

    keys = ds.values("key")
    out = {}
    for t in tasks:
        paths = store._paths(ds, store.hidden_field(t)) or [None] * len(keys)
        out[t] = {k: p for k, p in zip(keys, paths, strict=True) if p}
    return out


def better(task: str, r0: dict, r1: dict) -> bool:
    metric, higher = SHOWN[task]
    return r1[metric] > r0[metric] if higher else r1[metric] < r0[metric]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return m, sd


def summary(results: list[dict]) -> dict:
    """Task -> {"round0": (mean, sd), "round1": (mean, sd), "diff": (mean, sd), "wins": n,
    "better": bool} over the seeds' results (diff: round 1 - round 0, paired by seed)."""
    out = {}
    for task, (metric, higher) in SHOWN.items():
        if not all(task in r["round0"] for r in results):
            continue
        r0 = [r["round0"][task][metric] for r in results]
        r1 = [r["round1"][task][metric] for r in results]
        diff = [b - a for a, b in zip(r0, r1, strict=True)]
        wins = sum(better(task, r["round0"][task], r["round1"][task]) for r in results)
        d = _mean_sd(diff)
        gain = d[0] if higher else -d[0]
        out[task] = {
            "round0": _mean_sd(r0),
            "round1": _mean_sd(r1),
            "diff": d,
            "wins": wins,
            "better": wins == len(results) and gain > d[1],
        }
        if all("plain" in r for r in results):  # the review's own share: round 1 - plain stage 2
            plain = [r["plain"][task][metric] for r in results]
            out[task]["plain"] = _mean_sd(plain)
            out[task]["review_gain"] = _mean_sd([b - a for a, b in zip(plain, r1, strict=True)])
    return out


def table(results: dict | list[dict]) -> str:
    """Markdown: a row per round (mean ± sd over seeds), the paired difference, and the verdict."""
    results = [results] if isinstance(results, dict) else results
    s = summary(results)
    names = [t for t in SHOWN if t in s]
    head = " | ".join(
        f"{t} {SHOWN[t][0]} ({'higher' if SHOWN[t][1] else 'lower'} is better)" for t in names
    )
    lines = ["| | " + head + " |", "|---|" + "---|" * len(names)]

    def cell(pair):
        return f"{pair[0]:.3f}" + (f" ± {pair[1]:.3f}" if len(results) > 1 else "")

    lines.append("| round 0 | " + " | ".join(cell(s[t]["round0"]) for t in names) + " |")
    lines.append("| round 1 | " + " | ".join(cell(s[t]["round1"]) for t in names) + " |")
    if all("plain" in s[t] for t in names):
        lines.append(
            "| round 1, nothing reviewed | " + " | ".join(cell(s[t]["plain"]) for t in names) + " |"
        )
        lines.append(
            "| round 1 - nothing reviewed | "
            + " | ".join(
                f"{s[t]['review_gain'][0]:+.3f} ± {s[t]['review_gain'][1]:.3f}" for t in names
            )
            + " |"
        )
    lines.append(
        "| round 1 - round 0 | "
        + " | ".join(f"{s[t]['diff'][0]:+.3f} ± {s[t]['diff'][1]:.3f}" for t in names)
        + " |"
    )
    lines.append(
        "| seeds improved | " + " | ".join(f"{s[t]['wins']}/{len(results)}" for t in names) + " |"
    )
    lines.append(
        "| round 1 better | " + " | ".join("yes" if s[t]["better"] else "NO" for t in names) + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--size", default="48x64")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    p.add_argument(
        "--accept",
        choices=["region", "whole"],
        default="region",
        help="what the annotator accepts: the confident region of a suggestion, or all of it",
    )
    p.add_argument(
        "--review-share",
        type=float,
        default=0.5,
        help="share of each task's queue accepted, most confident first (default 0.5)",
    )
    p.add_argument(
        "--fix-share",
        type=float,
        default=0.0,
        help="share of each task's queue also fixed from its least confident end, with the "
        "correct label (left out of the scores); default 0",
    )
    p.add_argument(
        "--control",
        action="store_true",
        help="also retrain a copy with nothing reviewed (plain stage 2), to separate the review's "
        "gain from stage 2's",
    )
    args = p.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="hitts-e2e-"))
    os.environ.setdefault("HITTS_HOME", str(work / "home"))
    os.environ.setdefault("FIFTYONE_DATABASE_DIR", str(work / "db"))
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    size = tuple(int(v) for v in args.size.split("x"))
    # FiftyOne runs one database service per machine: a second run started while another's service
    # is up joins it whatever its FIFTYONE_DATABASE_DIR, so names carry the work folder
    run_id = hashlib.sha1(str(work.resolve()).encode()).hexdigest()[:6]
    t0 = time.perf_counter()
    results = []
    for seed in args.seeds:
        done = work / f"seed-{seed}" / "e2e.json"
        if done.is_file():  # finished in an earlier run of this command: resume after it
            results.append(json.loads(done.read_text()))
        else:  # a seed cut short starts over
            shutil.rmtree(done.parent, ignore_errors=True)
            result = run(
                work / f"seed-{seed}",
                count=args.count,
                size=size,
                epochs=args.epochs,
                seed=seed,
                name=f"e2e-{run_id}-seed-{seed}",
                review_share=args.review_share,
                accept=args.accept,
                fix_share=args.fix_share,
                control=args.control,
                progress=True,
            )
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1, default=str))
            tmp.replace(done)
            results.append(json.loads(done.read_text()))
        print(
            f"seed {seed}: accepted ({args.accept}) per task: {results[-1]['accepted']}, "
            f"fixed: {results[-1].get('fixed', {})}"
        )
        print(table(results[-1]), flush=True)
    print(
        f"\n{args.count} scenes at {size[0]}x{size[1]}, one-label, {args.epochs} epochs per round, "
        f"seeds {args.seeds}; scored on the hidden labels of the training images "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    text = table(results)
    print(text)
    (work / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
