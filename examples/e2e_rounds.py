"""The whole loop with hidden ground truth, and the proof that a reviewed round helps.

Generated scenes -> ingest (one-label, the hidden labels kept) -> train round 0 -> suggest ->
accept the confident region of the most confident half of each task's suggestions through the
review store, as an annotator on the page would (``accept_confident`` at τ) -> export ->
retrain (round 1: L_s on ground truth + accepted labels, L_p, L_f) -> suggest. Both rounds are
scored against the hidden ground truth on the training images whose label was hidden.

Each seed draws its own scenes, label split and training seeds; the table gives each round's mean
± standard deviation over the seeds and the paired round 1 - round 0 difference, and calls round 1
better on a task only when every seed improved and the mean difference exceeds its standard
deviation (BENCHMARKS.md).

Usage:
    python examples/e2e_rounds.py                      # 3 seeds, 300 scenes at 48x64, 25 epochs
    python examples/e2e_rounds.py --seeds 0 --count 80 --size 32x48 --epochs 4    # a quick look
"""

from __future__ import annotations

import argparse
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
    progress: bool = False,
) -> dict:
    """Run the loop in ``workdir`` (HITTS_HOME and FIFTYONE_DATABASE_DIR must already be set by
    the caller when it wants them elsewhere); returns {"round0", "round1", "accepted", ...}."""
    import fiftyone as fo

    from hitts.app.export import export_dataset
    from hitts.app.ingest import ingest
    from hitts.app.retrain import retrain
    from hitts.app.review_store import QueueFilter, ReviewStore
    from hitts.app.suggest import suggest
    from hitts.app.suggestion_eval import evaluate_on_hidden
    from hitts.app.training import train_on_dataset
    from hitts.model.data.scenes import SceneConfig, generate_scenes
    from hitts.model.predictor import TorchPredictor
    from hitts.model.train import TrainConfig

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
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
    suggest(name, TorchPredictor(checkpoint), checkpoint, progress=progress)
    round0 = evaluate_on_hidden(name, TorchPredictor(checkpoint))

    # an annotator works down each task's queue, most confident first, for a share of it
    review = ReviewStore(name)
    accepted = {}
    for task in round0:
        queue = QueueFilter(task=task, descending=True)
        todo = round(review_share * review.counts(queue, "annotator", None).total)
        n = 0
        while n < todo and (item := review.next_item(queue, "annotator")) is not None:
            outcome = review.accept_confident(item, "annotator", item.tau)
            assert outcome.ok, outcome.message
            n += 1
        accepted[task] = n
    manifest = export_dataset(name, workdir / "export", "folder", progress=progress)
    report = retrain(name, workdir / "round1", epochs=epochs, progress=progress)  # seed + 1
    round1 = evaluate_on_hidden(name, TorchPredictor(report.checkpoint))
    sources = {}
    for s in manifest["samples"]:
        for t, info in s["labels"].items():
            sources[f"{t}:{info['source']}"] = sources.get(f"{t}:{info['source']}", 0) + 1
    return {
        "round0": round0,
        "round1": round1,
        "accepted": accepted,
        "export_sources": sources,
        "new_round": report.new_round,
    }


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
    args = p.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="hitts-e2e-"))
    os.environ.setdefault("HITTS_HOME", str(work / "home"))
    os.environ.setdefault("FIFTYONE_DATABASE_DIR", str(work / "db"))
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    size = tuple(int(v) for v in args.size.split("x"))
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
                name=f"e2e-seed-{seed}",
                progress=True,
            )
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1, default=str))
            tmp.replace(done)
            results.append(json.loads(done.read_text()))
        print(f"seed {seed}: accepted (confident region) per task: {results[-1]['accepted']}")
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
