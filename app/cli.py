"""The ``hitts`` command line: flags map onto plain function arguments and dataclass fields.

Heavy imports (torch, FiftyOne) happen inside the command that needs them, so ``hitts --help`` is
instant and a command that does not touch the database never starts it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("hitts")


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 96x128, got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return h, w


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# ----------------------------------------------------------------------------------------------
# commands


def cmd_generate(args: argparse.Namespace) -> int:
    from hitts.model.data.scenes import SceneConfig, generate_scenes

    h, w = args.size
    out = generate_scenes(
        Path(args.out),
        args.count,
        SceneConfig(height=h, width=w),
        seed=args.seed,
        val_fraction=args.val_fraction,
        progress=not args.quiet,
    )
    print(f"wrote {args.count} scenes to {out}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from hitts.app.ingest import ingest

    report = ingest(
        args.src,
        args.name,
        args.format,
        setting=args.setting,
        split_file=args.split_file,
        seed=args.seed,
        skip_bad=args.skip_bad,
        progress=not args.quiet,
    )
    print(
        f"dataset {report.name!r}: added {report.added} samples, "
        f"{report.already_there} were already there"
    )
    if report.skipped:
        print(f"skipped {len(report.skipped)} bad item(s):")
        for err in report.skipped:
            print(f"  {err}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from hitts.app.store import STATUSES, status_report

    report = status_report(args.name)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(
        f"dataset {report.name}: {report.num_samples} samples "
        f"({', '.join(f'{k} {v}' for k, v in report.splits.items())}); "
        f"source {report.source_format}, setting {report.setting}"
    )
    width = max(len(t) for t in report.tasks) + 2
    print("task".ljust(width) + "".join(s.rjust(11) for s in STATUSES))
    for task, counts in report.tasks.items():
        print(task.ljust(width) + "".join(str(counts[s]).rjust(11) for s in STATUSES))
    return 0


def _tau(text: str) -> tuple[str, float]:
    try:
        task, value = text.split("=")
        tau = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected TASK=VALUE, e.g. depth=0.45, got {text!r}"
        ) from None
    if not 0 < tau < 1:
        raise argparse.ArgumentTypeError(f"τ must be in (0, 1), got {text!r}")
    return task, tau


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from hitts.app.training import train_on_dataset
    from hitts.model.train import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage == 2 and not args.teacher:
        raise ValueError(
            "--stage 2 needs --teacher, the stage-1 checkpoint whose discovery it learns from"
        )
    if args.stage == 1 and args.teacher:
        raise ValueError("--teacher is for --stage 2")
    cfg = TrainConfig(
        stage=args.stage,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        use_lp=not args.no_lp,
        use_lf=not args.no_lf,
        thresholds=dict(args.tau or []),
    )
    model_args = dict(
        kind=args.model,
        stl_task=args.stl_task,
        backbone=args.backbone,
        channels=args.channels,
        use_oe=not args.no_oe,
        use_inter=not args.no_inter,
        use_intra=not args.no_intra,
        use_global=not args.no_global,
        use_fine=not args.no_fine,
    )
    metrics = train_on_dataset(
        args.name,
        Path(args.out),
        cfg,
        model_args,
        teacher=Path(args.teacher) if args.teacher else None,
        size=args.size,
        resume=args.resume,
        progress=not args.quiet,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one report
        print(
            f"checkpoint: {Path(args.out) / 'last.pt'}; log: {Path(args.out) / 'log.jsonl'}; "
            f"curves: {Path(args.out) / 'curves.png'}"
        )
        _print_metrics(metrics)
    return 0


def _print_metrics(metrics: dict) -> None:
    for task, m in metrics.items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, (int, float)))
        print(f"  {task}: {shown}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hitts.app.training import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.name, Path(args.checkpoint), args.split, progress=not args.json
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{args.checkpoint} on {args.name} ({args.split}):")
        _print_metrics(metrics)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hitts.app.ingest import ingest
    from hitts.app.store import hitts_home
    from hitts.model.data.scenes import SceneConfig, generate_scenes

    h, w = args.size
    scenes = Path(
        args.workdir or hitts_home() / "demo" / f"scenes-{args.count}-{h}x{w}-s{args.seed}"
    )
    print(f"[1/2] generating {args.count} scenes in {scenes}")
    generate_scenes(
        scenes, args.count, SceneConfig(height=h, width=w), seed=args.seed, progress=True
    )
    print(f"[2/2] ingesting them into dataset {args.name!r} in the one-label setting")
    report = ingest(scenes, args.name, "folder", setting="one-label", seed=args.seed, progress=True)
    print(f"dataset {args.name!r}: added {report.added}, {report.already_there} already there")
    cmd_status(argparse.Namespace(name=args.name, json=False))
    print(
        "\nThis version stops here: training, suggestions and the review page are not part of it "
        f"yet. The dataset is ready; look at it with `hitts status {args.name}`."
    )
    return 0


# ----------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hitts",
        description="Annotation assist for dense tasks: learn from partial labels with Hierarchical "
        "Task Tokens and suggest the missing ones.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser(
        "generate",
        help="write procedural scenes with exact labels for 4 tasks",
        description="Write procedural indoor scenes (RGB + semseg, depth, normal, edge) "
        "in the folder layout `hitts ingest --format folder` reads. Same seed, same bytes.",
    )
    g.add_argument("out", help="output folder (created; a rerun skips finished scenes)")
    g.add_argument("--count", type=_positive, default=100, help="number of scenes (default 100)")
    g.add_argument("--size", type=_size, default=(96, 128), help="HxW in pixels (default 96x128)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of scenes in the val split (default 0.2)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    from hitts.model.data.formats import FORMATS  # light: the readers import lazily

    i = sub.add_parser(
        "ingest",
        help="load a partially annotated dataset into FiftyOne",
        description="Load a dataset into a persistent FiftyOne dataset. Idempotent: "
        "samples already there are skipped, so a rerun after a crash finishes the job.",
    )
    i.add_argument("src", help="source folder")
    i.add_argument("--name", required=True, help="FiftyOne dataset name")
    i.add_argument(
        "--format", default="folder", choices=sorted(FORMATS), help="source layout (default folder)"
    )
    i.add_argument(
        "--setting",
        default="full",
        help="partial-label setting applied to the train split: full, one-label, "
        "random-labels or few-shot:TASK:K; hidden labels are kept as hidden ground truth "
        "(default full)",
    )
    i.add_argument(
        "--split-file",
        help="a published MTPSL split file (.pth or .npy) saying which "
        "labels each train image keeps; replaces --setting",
    )
    i.add_argument("--seed", type=int, default=0, help="seed of the setting's draw (default 0)")
    i.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip items with bad files and list them at the end, instead of stopping",
    )
    i.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    i.set_defaults(func=cmd_ingest)

    s = sub.add_parser(
        "status",
        help="per task: labelled / missing / suggested / reviewed counts",
        description="Print, per task, how many samples are labeled, missing, "
        "suggested, accepted, fixed and rejected, and the splits.",
    )
    s.add_argument("name", help="dataset name")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_status)

    t = sub.add_parser(
        "train",
        help="train a HiTTs (or baseline) model on a dataset",
        description="Train on the labels a FiftyOne dataset has (stage 1, Eq. 5), or "
        "a fresh model on labels plus a stage-1 teacher's discovered pseudo-labels and "
        "feature targets (stage 2, Eq. 8). Checkpoints every epoch; --resume continues.",
    )
    t.add_argument("name", help="dataset name")
    t.add_argument("--out", required=True, help="run folder: last.pt, log.jsonl, curves.png")
    t.add_argument(
        "--model",
        default="hitts",
        choices=["hitts", "mtl", "stl"],
        help="HiTTs, or the multi-task / single-task baseline (default hitts)",
    )
    t.add_argument("--stl-task", help="the task of an --model stl run")
    t.add_argument(
        "--stage",
        type=int,
        default=1,
        choices=[1, 2],
        help="1: ground truth only; 2: plus the teacher's discovery (default 1)",
    )
    t.add_argument(
        "--teacher", help="stage 2: the stage-1 checkpoint (last.pt) to discover labels with"
    )
    t.add_argument("--epochs", type=_positive, default=30, help="epochs (default 30)")
    t.add_argument("--size", type=_size, help="train at HxW (default: the images' own size)")
    t.add_argument("--batch-size", type=_positive, default=8, help="batch size (default 8)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out after a stop")
    t.add_argument(
        "--backbone",
        default="small",
        choices=["small", "segnet", "resnet18"],
        help="shared encoder (default small, for CPUs; segnet/resnet18: the paper's)",
    )
    t.add_argument(
        "--channels", type=_positive, default=64, help="task feature / token width C (default 64)"
    )
    t.add_argument(
        "--tau",
        type=_tau,
        action="append",
        help="pseudo-label threshold TASK=VALUE (repeatable; default: the paper's)",
    )
    t.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    for flag, what in (
        ("oe", "orthogonal embeddings (Eq. 3)"),
        ("inter", "inter-task learning (Eq. 1-2)"),
        ("intra", "intra-task self-attention"),
        ("global", "global task tokens"),
        ("fine", "fine-grained task tokens (Eq. 3-4)"),
    ):
        t.add_argument(f"--no-{flag}", action="store_true", help=f"ablation: without {what}")
    t.add_argument(
        "--no-lp", action="store_true", help="stage 2: without the pseudo-label loss L_p (Eq. 7)"
    )
    t.add_argument(
        "--no-lf", action="store_true", help="stage 2: without the feature loss L_f (Eq. 6)"
    )
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="score a checkpoint on a split's ground truth",
        description="mIoU/pAcc, depth errors, normal angles, edge odsF (Sec. 4.1).",
    )
    e.add_argument("name", help="dataset name")
    e.add_argument("--checkpoint", required=True, help="a checkpoint written by hitts train")
    e.add_argument("--split", default="val", help="split to score (default val)")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser(
        "demo",
        help="the whole job on generated scenes",
        description="Generate scenes and ingest them in the one-label setting.",
    )
    d.add_argument("--name", default="hitts-demo", help="dataset name (default hitts-demo)")
    d.add_argument("--count", type=_positive, default=300, help="number of scenes (default 300)")
    d.add_argument("--size", type=_size, default=(96, 128), help="HxW (default 96x128)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--workdir", help="where the scenes go (default under $HITTS_HOME/demo)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # FiftyOne warns on every start that MongoDB 6 is its oldest supported version; the embedded
    # database we install is 6.0, so the notice is noise. A user's own setting wins.
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    from hitts.model.data.errors import BadInput

    try:
        return args.func(args)
    except (BadInput, ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; rerun the same command to continue where it stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
