"""The ``hitts`` command line: flags map onto plain function arguments and dataclass fields.

Heavy imports (torch, FiftyOne) happen inside the command that needs them, so ``hitts --help`` is
instant and a command that does not touch the database never starts it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
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
        flip_features=not args.no_flip_features,
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
    if args.suggestions == bool(args.checkpoint):
        raise ValueError("give either --checkpoint C (score a model) or --suggestions")
    if args.suggestions:
        from hitts.app.suggestion_eval import evaluate_suggestions

        results = evaluate_suggestions(args.name)
        if not results:
            raise ValueError(
                f"dataset {args.name!r} has no suggestion with hidden ground truth to score it "
                "against (ingest with --setting to keep hidden truth, then run hitts suggest)"
            )
        if args.json:
            print(json.dumps(results, indent=2))
            return 0
        for task, r in results.items():
            print(
                f"{task}: {r['samples']} samples, τ {r['tau']:.2f}, coverage {100 * r['coverage']:.1f}%"
                f" of valid pixels; curve: {r['curve_png']}"
            )
            _print_metrics({"  inside M_p": r["metrics_in_mp"]})
        return 0
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


def cmd_suggest(args: argparse.Namespace) -> int:
    from hitts.app.suggest import suggest
    from hitts.exporters.onnx import load_predictor

    predictor = load_predictor(Path(args.checkpoint), args.engine)
    report = suggest(
        args.name,
        predictor,
        Path(args.checkpoint),
        batch_size=args.batch_size,
        taus=dict(args.tau or []),
        progress=not args.quiet,
    )
    if report.round < 0:
        print(f"dataset {args.name!r}: nothing is missing for {report.tasks}; nothing written")
        return 0
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"round {report.round}: {report.labels} suggestions on {report.samples} samples in "
            f"{report.seconds:.1f} s ({report.engine}, {report.provider}); "
            f"{report.already_done} samples were already done"
        )
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    from hitts.exporters.onnx import export_onnx

    report = export_onnx(Path(args.checkpoint), Path(args.out))
    sizes = ", ".join(f"{h}x{w}: {d:.1e}" for (h, w), d in report.max_abs_diff.items())
    print(f"wrote {report.path}; onnx.checker passed; parity with PyTorch (max abs diff) {sizes}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hitts.app.export import export_dataset

    manifest = export_dataset(
        args.name,
        Path(args.out),
        args.format,
        include_pseudo=bool(args.include),
        split=args.split,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    counts: dict[str, int] = {}
    for sample in manifest["samples"]:
        for info in sample["labels"].values():
            counts[info["source"]] = counts.get(info["source"], 0) + 1
    print(
        f"wrote {len(manifest['samples'])} samples to {args.out} ({args.format}); labels by "
        f"source: {', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none'}"
    )
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from hitts.app.retrain import retrain

    report = retrain(
        args.name,
        Path(args.out) if args.out else None,
        epochs=args.epochs,
        taus=dict(args.tau or []),
        seed=args.seed,
        flip_features=not args.no_flip_features,
        progress=not args.quiet,
    )
    print(
        f"retrained from round {report.teacher_round} with {report.reviewed} reviewed and "
        f"{report.rejected} rejected labels; checkpoint {report.checkpoint}"
    )
    _print_metrics(report.metrics)
    if report.new_round >= 0:
        print(
            f"round {report.new_round} suggestions written; review them with hitts review {args.name}"
        )
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from hitts.app.viewer import serve_app

    serve_app(args.name, host=args.host, port=args.port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hitts.app.ingest import ingest
    from hitts.app.store import hitts_home
    from hitts.app.suggest import suggest
    from hitts.app.training import train_on_dataset
    from hitts.model.data.scenes import SceneConfig, generate_scenes
    from hitts.model.predictor import TorchPredictor
    from hitts.model.train import TrainConfig

    h, w = args.size
    work = Path(args.workdir or hitts_home() / "demo")
    scenes = work / f"scenes-{args.count}-{h}x{w}-s{args.seed}"
    run = work / f"run-{args.name}"
    print(f"[1/4] generating {args.count} scenes in {scenes}")
    generate_scenes(scenes, args.count, SceneConfig(height=h, width=w), seed=args.seed)
    print(f"[2/4] ingesting them into dataset {args.name!r} in the one-label setting")
    report = ingest(scenes, args.name, "folder", setting="one-label", seed=args.seed)
    print(f"dataset {args.name!r}: added {report.added}, {report.already_there} already there")
    print(f"[3/4] training HiTTs on the labels that exist ({args.epochs} epochs) into {run}")
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed)
    metrics = train_on_dataset(
        args.name, run, cfg, {"kind": "hitts"}, resume=(run / "last.pt").exists()
    )
    print("validation metrics of the model:")
    _print_metrics(metrics)
    print("[4/4] suggesting every missing label")
    checkpoint = run / "last.pt"
    done = suggest(args.name, TorchPredictor(checkpoint), checkpoint)
    print(f"round {done.round}: {done.labels} suggestions written")
    cmd_status(argparse.Namespace(name=args.name, json=False))
    return _demo_serve(args)


def _demo_serve(args: argparse.Namespace) -> int:
    from hitts.app.review_page import serve_review

    print(
        f"\nScore the suggestions against the hidden labels: hitts evaluate {args.name} --suggestions"
    )
    if args.no_serve:
        print(f"Review them with: hitts review {args.name}")
        return 0
    session = None
    if args.app_port:
        from hitts.app.viewer import serve_app

        session = serve_app(args.name, host="127.0.0.1", port=args.app_port, wait=False)
    try:
        serve_review(args.name, host="127.0.0.1", port=args.port)  # prints its URL, blocks
    finally:
        if session is not None:
            session.close()
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from hitts.app.review_page import cmd_review as serve

    return serve(args)


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
        "--no-flip-features",
        action="store_true",
        help="stage 2: skip the teacher's pass over the flipped training images; halves the "
        "memory its discovered features take, at the cost of a poorer L_f target on flipped images",
    )
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

    sg = sub.add_parser(
        "suggest",
        help="suggest labels for every task a sample lacks",
        description="Run a trained model over the dataset and write, for every "
        "missing task, the pseudo-label, its confidence, the confident mask M_p at τ, "
        "the global-token (M_f) and fine-grained score maps. A rerun with the same "
        "checkpoint finishes an interrupted round; a new checkpoint starts a new round.",
    )
    sg.add_argument("name", help="dataset name")
    sg.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint from hitts train (--engine torch) or an .onnx file from "
        "hitts export-model (--engine onnx)",
    )
    sg.add_argument(
        "--engine",
        default="torch",
        choices=["torch", "onnx"],
        help="PyTorch (CUDA when present) or ONNX Runtime (default torch)",
    )
    sg.add_argument("--batch-size", type=_positive, default=8, help="images per batch (default 8)")
    sg.add_argument(
        "--tau",
        type=_tau,
        action="append",
        help="confidence threshold TASK=VALUE for M_p (repeatable; default: the paper's)",
    )
    sg.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sg.set_defaults(func=cmd_suggest)

    x = sub.add_parser(
        "export-model",
        help="export a checkpoint to ONNX, checked against PyTorch",
        description="Export with the torch dynamo exporter (dynamic batch, height "
        "and width), run onnx.checker and a parity check against PyTorch at several "
        "sizes; the export fails if outputs differ by more than 1e-4.",
    )
    x.add_argument("checkpoint", help="a checkpoint from hitts train")
    x.add_argument("--out", required=True, help="the .onnx file to write")
    x.set_defaults(func=cmd_export_model)

    ex = sub.add_parser(
        "export",
        help="write the completed labels in a standard layout",
        description="Write ground truth plus accepted and fixed suggestions (and "
        "optionally the unreviewed confident pseudo-labels), each with its validity "
        "mask, and a manifest saying where every label came from.",
    )
    ex.add_argument("name", help="dataset name")
    ex.add_argument(
        "--format",
        required=True,
        choices=["folder", "fiftyone-segmentation", "nyuv2-mtan"],
        help="folder (reads back with hitts ingest), fiftyone-segmentation "
        "(ImageSegmentationDirectory), nyuv2-mtan (.npy benchmark layout)",
    )
    ex.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    ex.add_argument(
        "--include",
        choices=["confident-suggestions"],
        help="also export unreviewed suggestions, restricted to their confident mask",
    )
    ex.add_argument("--split", help="export one split only")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing export whole")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ex.set_defaults(func=cmd_export)

    rt = sub.add_parser(
        "retrain",
        help="train a new round on reviewed labels and suggestions",
        description="Stage 2 from scratch: L_s on ground truth plus accepted and "
        "fixed labels, L_p on the remaining suggestions inside M_p, L_f on the "
        "latest model's features weighted by M_f; rejected suggestions are excluded. "
        "Then suggest again as a new round. A rerun resumes an interrupted run.",
    )
    rt.add_argument("name", help="dataset name")
    rt.add_argument("--out", help="run folder (default $HITTS_HOME/datasets/NAME/runs/round-N)")
    rt.add_argument(
        "--epochs", type=_positive, help="epochs (default: as the latest round's model)"
    )
    rt.add_argument(
        "--tau",
        type=_tau,
        action="append",
        help="pseudo-label threshold TASK=VALUE (default: the τ the suggestions used)",
    )
    rt.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed (default: the latest round's model's seed + 1, so the new model does "
        "not start from its teacher's initial weights)",
    )
    rt.add_argument(
        "--no-flip-features",
        action="store_true",
        help="stage 2: skip the teacher's pass over the flipped training images; halves the "
        "memory its discovered features take, at the cost of a poorer L_f target on flipped images",
    )
    rt.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    rt.set_defaults(func=cmd_retrain)

    a = sub.add_parser(
        "app",
        help="open the FiftyOne App on the dataset",
        description="Serve the FiftyOne App with the dataset: suggestions, confidence "
        "and score maps as overlays. Stops with Ctrl-C.",
    )
    a.add_argument("name", help="dataset name")
    a.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    a.add_argument("--port", type=int, default=5151, help="port (default 5151)")
    a.set_defaults(func=cmd_app)

    e = sub.add_parser(
        "evaluate",
        help="score a checkpoint, or the stored suggestions",
        description="mIoU/pAcc, depth errors, normal angles, edge odsF (Sec. 4.1).",
    )
    e.add_argument("name", help="dataset name")
    e.add_argument("--checkpoint", help="a checkpoint written by hitts train, scored on --split")
    e.add_argument(
        "--suggestions",
        action="store_true",
        help="score the stored suggestions against the hidden ground truth instead: "
        "metrics inside M_p, coverage, and a coverage-vs-error curve PNG per task",
    )
    e.add_argument("--split", default="val", help="split to score (default val)")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser(
        "review",
        help="open the review page: accept, reject or fix suggestions",
        description="Serve a page where annotators walk the suggestions (by task, status and "
        "confidence), compare them with the image, confidence and token score maps, and accept, "
        "accept the confident region, reject or fix each one. Every decision is written to the "
        "FiftyOne dataset at once; two annotators get different samples, and a decision made "
        "on an out-of-date view is refused. Stops with Ctrl-C.",
    )
    r.add_argument("name", help="dataset name")
    r.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    r.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    r.add_argument(
        "--auth",
        action="append",
        metavar="USER:PASS",
        help="require a login; repeat for several annotators (the login name goes on decisions)",
    )
    r.add_argument(
        "--auth-file",
        metavar="F",
        help="a file of USER:PASS lines (# starts a comment), with or instead of --auth",
    )
    r.set_defaults(func=cmd_review)

    d = sub.add_parser(
        "demo",
        help="the whole job on generated scenes",
        description="Generate scenes, ingest them in the one-label setting, train HiTTs on them, "
        "suggest every missing label, and serve the review page (and the FiftyOne App) on "
        "127.0.0.1. Rerunning continues where it stopped.",
    )
    d.add_argument("--name", default="hitts-demo", help="dataset name (default hitts-demo)")
    d.add_argument("--count", type=_positive, default=300, help="number of scenes (default 300)")
    d.add_argument("--size", type=_size, default=(96, 128), help="HxW (default 96x128)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--epochs", type=_positive, default=10, help="training epochs (default 10)")
    d.add_argument("--workdir", help="where scenes and the run go (default $HITTS_HOME/demo)")
    d.add_argument("--port", type=int, default=7860, help="review page port (default 7860)")
    d.add_argument(
        "--app-port", type=int, default=5151, help="FiftyOne App port (default 5151; 0: no App)"
    )
    d.add_argument(
        "--no-serve",
        action="store_true",
        help="stop after suggesting instead of serving the review page",
    )
    d.set_defaults(func=cmd_demo)
    return p


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


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

    # `kill` stops a long command like Ctrl-C does: servers close, children (the App) end with it
    signal.signal(signal.SIGTERM, _raise_interrupt)

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
