"""Suggestion speed on this CPU: PyTorch eager (TorchPredictor) against ONNX Runtime (OnnxPredictor).

Usage:
    python examples/benchmark_suggest.py --quick --threads 1   # about a minute on a busy machine
    python examples/benchmark_suggest.py                       # every core, more repeats

The model is the default CPU recipe (small encoder, C = 64, the four tasks of the generated scenes:
6 classes, 30 depth bins, 20 normal centres, 2 edge classes) with fresh random weights, which run
exactly as fast as trained ones. One checkpoint per image size (the predictors run at the
checkpoint's training size), each exported with :func:`hitts.exporters.onnx.export_onnx`.

How each column is measured:

- img/s: ``predictor.predict(images)`` on a batch of random uint8 images at the model's size
  (so no resizing), after warm-up calls; the median of the timed repeats, the two engines
  taking turns on every repeat. ``predict`` includes the shared pre- and post-processing
  (uint8 -> float, per-image numpy outputs), the same code for both engines.
- ONNX/eager: the ratio of the two img/s.
- % peak: FLOPs per image x img/s over the machine's measured float32 matmul rate (the fastest
  of five 2048x2048 ``torch.mm`` at the same thread count). FLOPs per image come from
  :class:`torch.utils.flop_counter.FlopCounterMode` over ``SuggestionHead`` at batch 1 on the
  meta device: convolutions and matrix products at 2 FLOPs per multiply-add; interpolation,
  softmax, norms and element-wise work are not counted.
- RSS MiB: peak resident set size (``VmHWM``) of a fresh process that loads one predictor and
  runs that row's batch twice, imports included (both engines import torch: the shared pre- and
  post-processing uses it).

PyTorch and ONNX Runtime both get ``--threads`` intra-op threads. On a machine busy with other
work, pass ``--threads 1`` for stable figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from hitts.exporters.onnx import OnnxPredictor, export_onnx
from hitts.model.network import ModelConfig, build_model
from hitts.model.predictor import Predictor, SuggestionHead, TorchPredictor
from hitts.model.quantize import Quantizer
from hitts.model.tasks import scene_tasks
from hitts.model.train import CHECKPOINT_FORMAT, load_checkpoint, model_from_checkpoint

SIZES = ((96, 128), (288, 384))  # the CPU recipe's size, and the paper's NYUD-v2 size
BATCHES = (1, 8)
ENGINES = ("torch", "onnx")


@dataclass
class Row:
    size: tuple[int, int]
    batch: int
    gflops: float  # per image
    ips: dict[str, float]  # engine -> images per second
    rss_mib: dict[str, float]  # engine -> peak RSS of the measuring process


# ------------------------------------------------------------------------------------------------
# The model


def make_checkpoint(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A checkpoint of the default CPU recipe with random weights, trained size ``size``."""
    tasks = scene_tasks()
    quantizers = {t.name: Quantizer.for_task(t) for t in tasks}  # 6 / 30 / 20 / 2 outputs
    config = ModelConfig(outputs={n: q.num_bins for n, q in quantizers.items()})
    torch.manual_seed(seed)
    model = build_model(config)
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "model_config": config.to_dict(),
        "quantizers": {n: q.to_dict() for n, q in quantizers.items()},
        "tasks": [t.to_dict() for t in tasks],
        "size": list(size),
        "epoch": 0,
        "metrics": {},
        "extra": {"note": "random weights for speed measurements"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def flops_per_image(checkpoint: Path) -> int:
    """Conv + matmul FLOPs of SuggestionHead on one image at the checkpoint's size."""
    state = load_checkpoint(checkpoint)
    model, quantizers, _ = model_from_checkpoint(state)
    head = SuggestionHead(model, quantizers).eval().to("meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        head(torch.empty(1, 3, *state["size"], device="meta"))
    return counter.get_total_flops()


def matmul_flops_per_second(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul rate at ``threads`` threads: 2 n^3 over the fastest of
    ``repeats`` products (the limit, so the best time, not the median)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


# ------------------------------------------------------------------------------------------------
# Measuring


def load(engine: str, path: str | Path, threads: int) -> Predictor:
    """The CPU predictor of ``engine``."""
    if engine == "torch":
        return TorchPredictor(path, device=torch.device("cpu"))
    return OnnxPredictor(path, providers=["CPUExecutionProvider"], threads=threads)


def random_images(size: tuple[int, int], batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(batch)]


def images_per_second(
    predictors: dict[str, Predictor], batch: int, warmup: int, repeats: int
) -> dict[str, float]:
    """Median images per second of each predictor's ``predict``. The engines take turns on
    every repeat, so a change in the machine's load hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in predictors}
    images = {name: random_images(p.size, batch) for name, p in predictors.items()}
    for name, p in predictors.items():
        for _ in range(warmup):
            p.predict(images[name])
    for _ in range(repeats):
        for name, p in predictors.items():
            t0 = time.perf_counter()
            p.predict(images[name])
            times[name].append(time.perf_counter() - t0)
    return {name: batch / statistics.median(t) for name, t in times.items()}


def peak_memory(engine: str, path: str, batch: int, threads: int) -> float:
    """Peak RSS (MiB) of a process that loads one predictor and runs ``batch`` images twice."""
    torch.set_num_threads(threads)
    predictor = load(engine, path, threads)
    images = random_images(predictor.size, batch)
    for _ in range(2):
        predictor.predict(images)
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """This process's peak resident set size. Linux's ``VmHWM`` belongs to the process's own
    address space; ``ru_maxrss`` would carry the parent's peak over fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def in_fresh_process(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# ------------------------------------------------------------------------------------------------
# Tables


def speed_table(rows: list[Row], peak: float, threads: int) -> str:
    lines = [
        f"Suggestion speed, {threads} thread(s); matmul peak {peak / 1e9:.1f} GFLOP/s",
        "",
        "| size | batch | GFLOPs/img | eager img/s | ONNX img/s | ONNX/eager | eager % peak "
        "| ONNX % peak | eager RSS MiB | ONNX RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, o = r.ips["torch"], r.ips["onnx"]
        lines.append(
            f"| {r.size[0]}x{r.size[1]} | {r.batch} | {r.gflops:.2f} | {t:.1f} | {o:.1f} "
            f"| {o / t:.2f}x | {100 * r.gflops * 1e9 * t / peak:.0f}% "
            f"| {100 * r.gflops * 1e9 * o / peak:.0f}% | {r.rss_mib['torch']:.0f} "
            f"| {r.rss_mib['onnx']:.0f} |"
        )
    return "\n".join(lines)


def machine_line(threads: int) -> str:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores (load {load}); torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; {threads} thread(s)"
    )


def run_speed(args: argparse.Namespace, work: Path) -> list[Row]:
    warmup, repeats = (1, 3) if args.quick else (2, 9)
    rows = []
    for size in SIZES:
        ckpt = make_checkpoint(work / f"model-{size[0]}x{size[1]}.pt", size)
        onnx_path = work / f"model-{size[0]}x{size[1]}.onnx"
        t0 = time.perf_counter()
        report = export_onnx(ckpt, onnx_path, parity_sizes=(size,))
        print(
            f"exported {onnx_path.name} in {time.perf_counter() - t0:.0f} s "
            f"(parity max abs diff {report.max_abs_diff[size]:.1e})",
            flush=True,
        )
        gflops = flops_per_image(ckpt) / 1e9
        paths = {"torch": ckpt, "onnx": onnx_path}
        predictors = {e: load(e, paths[e], args.threads) for e in ENGINES}
        for batch in BATCHES:
            ips = images_per_second(predictors, batch, warmup, repeats)
            rss = {
                e: in_fresh_process(peak_memory, e, str(paths[e]), batch, args.threads)
                for e in ENGINES
            }
            rows.append(Row(size, batch, gflops, ips, rss))
            print(
                f"{size[0]}x{size[1]} batch {batch}: eager {ips['torch']:.1f} img/s, "
                f"ONNX {ips['onnx']:.1f} img/s",
                flush=True,
            )
        del predictors
    return rows


def suggest_into_fiftyone(work: str, count: int, threads: int) -> tuple[float, float, int]:
    """Suggest ``count`` generated 96x128 samples (one-label: 3 missing tasks each) into a fresh
    FiftyOne dataset; returns (seconds of ``hitts suggest``, peak RSS MiB, labels written)."""
    work_path = Path(work)
    os.environ["HITTS_HOME"] = str(work_path / f"home-{count}")
    os.environ.setdefault("FIFTYONE_DATABASE_DIR", str(work_path / "db"))
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    torch.set_num_threads(threads)
    from hitts.app.ingest import ingest
    from hitts.app.suggest import suggest
    from hitts.model.data.scenes import SceneConfig, generate_scenes
    from hitts.model.predictor import TorchPredictor

    scenes = generate_scenes(
        work_path / f"scenes-{count}",
        count,
        SceneConfig(),
        seed=0,
        val_fraction=0.0,
        progress=False,
    )
    name = f"bench-suggest-{count}"
    ingest(scenes, name, setting="one-label", progress=False)
    checkpoint = make_checkpoint(work_path / "store.pt", (96, 128))
    predictor = TorchPredictor(checkpoint)
    t0 = time.perf_counter()
    report = suggest(name, predictor, checkpoint, batch_size=8, progress=False)
    seconds = time.perf_counter() - t0
    import fiftyone as fo

    fo.delete_dataset(name)
    return seconds, peak_rss_mib(), report.labels


def store_table(work: Path, threads: int, counts: tuple[int, ...] = (250, 1000)) -> str:
    lines = [
        "hitts suggest into FiftyOne (96x128, one-label: 3 missing tasks per sample, 5 files each;"
        " torch eager; a fresh process per row)",
        f"{'samples':>8} {'labels':>7} {'seconds':>8} {'samples/s':>10} {'peak RSS MiB':>13}",
    ]
    for count in counts:
        seconds, rss, labels = in_fresh_process(suggest_into_fiftyone, str(work), count, threads)
        lines.append(
            f"{count:>8} {labels:>7} {seconds:>8.1f} {count / seconds:>10.1f} {rss:>13.0f}"
        )
    lines.append("memory flat in the number of samples when the peak RSS stays put as rows grow")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="intra-op threads for PyTorch and ONNX Runtime (default: all cores)",
    )
    p.add_argument("--quick", action="store_true", help="1 warm-up call and 3 timed repeats")
    p.add_argument("--store-only", action="store_true", help="only the FiftyOne write table")
    p.add_argument(
        "--workdir", default=None, help="keep the checkpoints and .onnx files here (default: temp)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine_line(args.threads), flush=True)
    with tempfile.TemporaryDirectory(prefix="hitts-suggest-bench-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [] if args.store_only else run_speed(args, work)
        store = store_table(work, args.threads)
    peak = matmul_flops_per_second(args.threads)
    sections = [] if args.store_only else [speed_table(rows, peak, args.threads)]
    sections.append(store)
    print("\n" + "\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
