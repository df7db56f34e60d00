"""The whole loop with hidden ground truth, and the proof that a reviewed round helps.

Generated scenes -> ingest (one-label, the hidden labels kept) -> train round 0 -> suggest ->
accept the confident region of the most confident half of each task's suggestions through the
review store, as an annotator on the page would (``accept_confident`` at τ) -> export ->
retrain (round 1: L_s on ground truth + accepted labels, L_p, L_f) -> suggest. Both rounds are
scored against the hidden ground truth on the training images whose label was hidden, and a table
of both rounds is printed.

Usage:
    python examples/e2e_rounds.py                      # 300 scenes at 48x64, 15 epochs
    python examples/e2e_rounds.py --count 80 --size 32x48 --epochs 4    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
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
    report = retrain(name, workdir / "round1", epochs=epochs, seed=seed, progress=progress)
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


def table(result: dict) -> str:
    lines = [
        "| round | " + " | ".join(f"{t} {m}" for t, (m, _) in SHOWN.items()) + " |",
        "|---|" + "---|" * len(SHOWN),
    ]
    for r in ("round0", "round1"):
        cells = [f"{result[r][t][m]:.3f}" if t in result[r] else "—" for t, (m, _) in SHOWN.items()]
        lines.append(f"| {r[-1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--size", default="48x64")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = p.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="hitts-e2e-"))
    os.environ.setdefault("HITTS_HOME", str(work / "home"))
    os.environ.setdefault("FIFTYONE_DATABASE_DIR", str(work / "db"))
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    size = tuple(int(v) for v in args.size.split("x"))
    t0 = time.perf_counter()
    result = run(
        work, count=args.count, size=size, epochs=args.epochs, seed=args.seed, progress=True
    )
    print(
        f"\n{args.count} scenes at {size[0]}x{size[1]}, one-label, {args.epochs} epochs per round, "
        f"seed {args.seed}; scored on the hidden labels of the training images "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    print(
        f"accepted (confident region) per task: {result['accepted']}; round {result['new_round']} "
        "suggested the rest"
    )
    print(table(result))
    print(
        "round 1 better on: "
        + ", ".join(
            f"{t} {'yes' if better(t, result['round0'][t], result['round1'][t]) else 'NO'}"
            for t in SHOWN
            if t in result["round0"]
        )
    )
    (work / "e2e.json").write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
