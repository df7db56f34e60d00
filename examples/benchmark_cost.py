"""Parameters, FLOPs per image and peak training memory of HiTTs against the baselines (Table 8).

Usage:
    python examples/benchmark_cost.py --small              # seconds: the CPU recipe
    python examples/benchmark_cost.py                      # the paper's NYUD-v2 setting
    python examples/benchmark_cost.py --batch 1 --memory main

The paper's setting (Table 8): SegNet at 288x384 with three tasks, 13 classes, 30 depth bins and
20 normal centres; it reports +1.0% parameters and +20.8% FLOPs over the MTL baseline. ``--small``
is the default CPU recipe: the small encoder at 96x128 and the four tasks of the generated scenes
(6 classes, 30 depth bins, 20 normal centres, 2 edge classes).

How each column is measured:

- parameters: :func:`hitts.model.network.count_parameters` (trainable).
- FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` over one forward at batch 1, run on
  the meta device (shapes only, no arithmetic, so the paper's size counts instantly). It counts
  convolutions and matrix products (conv, mm, addmm, bmm) at 2 FLOPs per multiply-add; norms,
  activations, softmax, pooling and element-wise products are not counted. Table 8's "FLOPs"
  are multiply-adds: its 68.81 G baseline is our 137.8 GFLOPs / 2, hence the GMACs column.
- peak training memory: one stage-1 training step (forward, cross-entropy on every task,
  backward, Adam step) at batch N, each model in a fresh subprocess. On CUDA it is
  ``torch.cuda.max_memory_allocated``; on CPU the growth of the peak resident set size
  (``ru_maxrss``) over the process's size after imports, which also holds weights, gradients and
  Adam's moments, and is only as exact as the allocator's reuse of freed memory.

STL is the sum over one single-task network per task for parameters and FLOPs; its memory is that
of the widest single-task network, as the networks are trained one at a time. After the table,
the FLOPs of HiTTs are split by component, to show where the extra cost over MTL goes.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hitts.model.network import HITTS, MTL, STL, ModelConfig, build_model, count_parameters
from hitts.model.train import pick_device

log = logging.getLogger(__name__)

PAPER = {
    "backbone": "segnet",
    "size": (288, 384),
    "outputs": {"semseg": 13, "depth": 30, "normal": 20},
}
SMALL = {
    "backbone": "small",
    "size": (96, 128),
    "outputs": {"semseg": 6, "depth": 30, "normal": 20, "edge": 2},
}
ABLATIONS = {
    "HiTTs w/o OE": {"use_oe": False},
    "HiTTs w/o inter-task": {"use_inter": False},
    "HiTTs w/o intra-task": {"use_intra": False},
    "HiTTs w/o global tokens": {"use_global": False},
    "HiTTs w/o fine-grained tokens": {"use_fine": False},
}
# Table 8 of the paper: parameters (M), "FLOPs" (G, multiply-adds), training memory (GB, batch 8).
PAPER_TABLE8 = {"MTL baseline": (25.06, 68.81, 9.36), "HiTTs": (25.32, 83.14, 21.19)}
MIB = 2**20


@dataclass
class Cost:
    """What one forward costs.

    Attributes:
        params: Trainable parameters.
        flops: FLOPs of one forward at batch 1 (conv and matmul only, 2 per multiply-add).
        parts: Component -> ``(params, flops)``: the model's direct children (``backbone``,
            ``intra``, ...) and, for the per-task ones, their sub-modules summed over the tasks
            (``intra/feature_ffn``) plus the products written in the module's own forward
            (``intra/(own matmuls)``, e.g. the attention products).
    """

    params: int
    flops: int
    parts: dict[str, tuple[int, int]]


def model_cost(config: ModelConfig, size: tuple[int, int]) -> Cost:
    """Parameters and FLOPs of one forward at batch 1 of an (H, W) image, on the meta device."""
    with torch.device("meta"):
        model = build_model(config)
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, *size, device="meta"))
    return Cost(count_parameters(model), counter.get_total_flops(), _parts(model, counter))


def _parts(model: nn.Module, counter: FlopCounterMode) -> dict[str, tuple[int, int]]:
    flops = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__
    parts: dict[str, tuple[int, int]] = {}

    def add(name: str, params: int, n: int) -> None:
        p0, n0 = parts.get(name, (0, 0))
        parts[name] = (p0 + params, n0 + n)

    for name, child in model.named_children():
        if not isinstance(child, nn.ModuleDict):  # called as a whole: counted under its name
            add(name, count_parameters(child), flops.get(f"{root}.{name}", 0))
            continue
        for task, module in child.items():  # a ModuleDict is never called: sum its tasks
            prefix = f"{root}.{name}.{task}"
            add(name, count_parameters(module), flops.get(prefix, 0))
            subs = list(module.named_children())
            if len(subs) < 2:
                continue
            inner = 0
            for sub, m in subs:
                n = flops.get(f"{prefix}.{sub}", 0)
                add(f"{name}/{sub}", count_parameters(m), n)
                inner += n
            add(f"{name}/(own matmuls)", 0, flops.get(prefix, 0) - inner)
    return parts


# ------------------------------------------------------------------------------------------------
# Peak training memory, one fresh process per model


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def train_step_peak(config: ModelConfig, size: tuple[int, int], batch: int) -> dict:
    """Peak memory of one training step in this process: forward, cross-entropy, backward, Adam.

    Returns:
        ``{"peak_bytes", "seconds", "device", "measure"}``; run it in a fresh process (see
        :func:`measure_memory`), since the CPU figure is the growth of the process's peak RSS.
    """
    device = pick_device()
    base = _rss_bytes()
    model = build_model(config).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, *size, device=device)  # (B, 3, H, W)
    targets = {
        t: torch.randint(n, (batch, *size), device=device) for t, n in config.task_outputs.items()
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the peak restarts from the weights
    t0 = time.perf_counter()
    out = model(x)
    loss = sum(F.cross_entropy(out[t]["logits"], y) for t, y in targets.items())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak, measure = torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    else:
        peak, measure = _rss_bytes() - base, "peak RSS growth"
    return {
        "peak_bytes": int(peak),
        "seconds": time.perf_counter() - t0,
        "device": str(device),
        "measure": measure,
    }


def measure_memory(config: ModelConfig, size: tuple[int, int], batch: int, threads: int) -> dict:
    """:func:`train_step_peak` of ``config`` in a fresh Python process."""
    spec = {"model": config.to_dict(), "size": list(size), "batch": batch, "threads": threads}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {config.kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    config = ModelConfig.from_dict(spec["model"])
    print(json.dumps(train_step_peak(config, tuple(spec["size"]), spec["batch"])))
    return 0


# ------------------------------------------------------------------------------------------------
# The table


@dataclass
class Row:
    """One line of the table; ``cost`` and ``memory`` are filled in as they are measured."""

    name: str
    configs: list[ModelConfig]  # STL: one per task; otherwise one
    memory_config: ModelConfig | None = None  # the model whose training step is measured
    main: bool = False  # STL, MTL or HiTTs, as opposed to an ablation
    cost: Cost | None = None
    memory: dict | None = None


def table_rows(
    outputs: dict[str, int],
    backbone: str,
    *,
    ablations: bool = True,
    attn_stride: int | None = None,
) -> list[Row]:
    """STL, the MTL baseline, HiTTs and (optionally) its ablations, in print order."""
    base = ModelConfig(outputs=outputs, backbone=backbone, attn_stride=attn_stride)
    stl = [replace(base, kind=STL, stl_task=t) for t in outputs]
    widest = max(outputs, key=outputs.get)
    rows = [
        Row(f"STL ({len(stl)} nets)", stl, replace(base, kind=STL, stl_task=widest), main=True),
        Row("MTL baseline", [replace(base, kind=MTL)], main=True),
        Row("HiTTs", [replace(base, kind=HITTS)], main=True),
    ]
    if ablations:
        rows += [Row(name, [replace(base, **switches)]) for name, switches in ABLATIONS.items()]
    for row in rows:
        row.memory_config = row.memory_config or row.configs[0]
    return rows


def count_rows(rows: list[Row], size: tuple[int, int]) -> None:
    """Fill every row's :class:`Cost` (summed over the networks of a row)."""
    for row in rows:
        costs = [model_cost(c, size) for c in row.configs]
        parts: dict[str, tuple[int, int]] = {}
        for c in costs:
            for k, (params, flops) in c.parts.items():
                p0, f0 = parts.get(k, (0, 0))
                parts[k] = (p0 + params, f0 + flops)
        row.cost = Cost(sum(c.params for c in costs), sum(c.flops for c in costs), parts)


def _ratio(value: float | None, ref: float | None) -> str:
    return "—" if value is None or not ref else f"{value / ref:.3f} ({value / ref - 1:+.1%})"


def format_table(rows: list[Row], title: str) -> str:
    """The Markdown table of every row, ratios against the MTL baseline, and its notes."""
    mtl = next(r for r in rows if r.name == "MTL baseline")
    mtl_mem = mtl.memory["peak_bytes"] if mtl.memory else None
    lines = [
        f"## {title}",
        "",
        "| model | params (M) | × MTL | GFLOPs / image | GMACs | × MTL | peak train memory (MiB) "
        "| × MTL | step (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem = r.memory["peak_bytes"] if r.memory else None
        seconds = "—" if r.memory is None else f"{r.memory['seconds']:.1f}"
        lines.append(
            f"| {r.name} | {r.cost.params / 1e6:.3f} | {_ratio(r.cost.params, mtl.cost.params)} "
            f"| {r.cost.flops / 1e9:.2f} | {r.cost.flops / 2e9:.2f} "
            f"| {_ratio(r.cost.flops, mtl.cost.flops)} "
            f"| {'—' if mem is None else f'{mem / MIB:.0f}'} | {_ratio(mem, mtl_mem)} "
            f"| {seconds} |"
        )
    stl = rows[0].memory_config.stl_task
    lines += [
        "",
        "FLOPs: conv and matmul only (2 per multiply-add), one forward at batch 1; GMACs = "
        "GFLOPs / 2. STL: parameters and FLOPs summed over its single-task networks, memory of "
        f"the widest one ({stl}).",
    ]
    return "\n".join(lines)


def format_breakdown(rows: list[Row]) -> str:
    """HiTTs' parameters and FLOPs per component next to MTL's, with each one's share of the
    extra FLOPs; indented rows split the per-task modules (summed over the tasks)."""
    mtl = next(r for r in rows if r.name == "MTL baseline").cost
    hitts = next(r for r in rows if r.name == "HiTTs").cost
    extra = hitts.flops - mtl.flops
    lines = [
        f"## Where HiTTs' FLOPs go (extra over MTL: {extra / 1e9:.2f} GFLOPs)",
        "",
        "| component | HiTTs params (k) | HiTTs GFLOPs | MTL GFLOPs | share of the extra FLOPs |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys([*hitts.parts, *mtl.parts]):
        (hp, h), (_, m) = hitts.parts.get(name, (0, 0)), mtl.parts.get(name, (0, 0))
        if hp == 0 and h == 0 and m == 0:
            continue
        share = f"{(h - m) / extra:.1%}" if extra else "—"
        label = f"&nbsp;&nbsp;{name}" if "/" in name else f"**{name}**"
        lines.append(f"| {label} | {hp / 1e3:.1f} | {h / 1e9:.3f} | {m / 1e9:.3f} | {share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--small",
        action="store_true",
        help="the CPU recipe (small encoder, 96x128, 4 tasks) instead of the paper's",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="batch of the measured training step (default 2 on CPU, 8 on CUDA)",
    )
    p.add_argument(
        "--memory",
        choices=["all", "main", "none"],
        default="all",
        help="rows whose training memory is measured: all, main (STL, MTL, HiTTs), "
        "or none (parameters and FLOPs only)",
    )
    p.add_argument("--no-ablations", action="store_true", help="leave out the ablation rows")
    p.add_argument(
        "--attn-stride",
        type=int,
        default=None,
        help="intra-task key/value pooling stride of the HiTTs rows (default: the "
        "backbone's, see hitts.model.network.ATTN_STRIDE)",
    )
    p.add_argument("--size", default=None, help="HxW instead of the setting's image size")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of each measurement")
    p.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    p.add_argument(
        "--measure",
        default=None,
        metavar="JSON",
        help="measure one training step of the JSON spec in this process and print "
        "the result as JSON (how the table runs each model in a fresh process)",
    )
    args = p.parse_args(argv)
    if (args.batch is not None and args.batch < 1) or args.threads < 1:
        p.error(f"--batch and --threads must be >= 1, got {args.batch} and {args.threads}")
    if args.measure:
        return _measure_main(args.measure)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    setting = SMALL if args.small else PAPER
    size = tuple(int(v) for v in args.size.split("x")) if args.size else setting["size"]
    device = pick_device()
    batch = args.batch or (8 if device.type == "cuda" else 2)
    rows = table_rows(
        setting["outputs"],
        setting["backbone"],
        ablations=not args.no_ablations,
        attn_stride=args.attn_stride,
    )
    count_rows(rows, size)
    for row in rows:
        if args.memory == "all" or (args.memory == "main" and row.main):
            log.info("measuring one training step of %s at batch %d on %s", row.name, batch, device)
            row.memory = measure_memory(row.memory_config, size, batch, args.threads)
    tasks = ", ".join(f"{t} {n}" for t, n in setting["outputs"].items())
    memory = next((r.memory for r in rows if r.memory), None)
    measure = "not measured" if memory is None else f"{memory['measure']} on {memory['device']}"
    title = (
        f"{setting['backbone']} at {size[0]}x{size[1]}, tasks: {tasks}; memory: one training "
        f"step at batch {batch}, {measure}"
    )
    text = format_table(rows, title) + "\n\n" + format_breakdown(rows) + "\n"
    if not args.small:
        text += "\nTable 8 of the paper (FLOPs column = multiply-adds, memory in GB at batch 8):\n"
        for name, (params, gmacs, mem) in PAPER_TABLE8.items():
            text += f"- {name}: {params} M params, {gmacs} G, {mem} GB\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
