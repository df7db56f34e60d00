"""ONNX export of a checkpoint's :class:`~hitts.model.predictor.SuggestionHead`, and its predictor.

:func:`export_onnx` exports network + decoding as one graph with dynamic batch, height and width,
stores everything a predictor needs in the model's ``metadata_props`` (so the ``.onnx`` file alone
is enough), runs ``onnx.checker`` and a numeric parity check against PyTorch at several sizes. An
export that fails the check raises and leaves no file behind.

:class:`OnnxPredictor` runs such a file with ONNX Runtime (CUDA when the installed build offers
it, else CPU) behind the same :class:`~hitts.model.predictor.Predictor` interface as PyTorch.

Graph interface:

==================  ==================  ==================================================
name                shape               meaning
==================  ==================  ==================================================
image               (B, 3, H, W) f32    RGB in [0, 1]; any B >= 1, H and W >= 16
{task}.label        (B, H, W) i64/f32   class ids, or metres; (B, 3, H, W) f32 unit normals
{task}.confidence   (B, H, W) f32       max softmax (the basis of M_p)
{task}.mf           (B, H, W) f32       the global-token score map M_f, upsampled
{task}.fine_score   (B, H, W) f32       the fine-grained score map
==================  ==================  ==================================================

Outputs come task by task in the model's task order (``output_tasks`` in the metadata), the four
keys of each in the order above: the flat order of ``SuggestionHead.forward``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hitts.model.predictor import OUTPUT_KEYS, Predictor, SuggestionHead, TorchPredictor
from hitts.model.tasks import TaskSpec
from hitts.model.train import load_checkpoint, model_from_checkpoint

log = logging.getLogger(__name__)

FORMAT = "hitts-onnx-v1"
METADATA_KEY = "hitts"  # the metadata_props entry holding the JSON below
INPUT_NAME = "image"
ENGINES = ("torch", "onnx")
EXAMPLE_BATCH = 2  # with an example batch of 1 the exporter freezes the batch dimension
PARITY_BATCHES = (1, 3)
MIN_SIDE = 16  # smallest H, W the graph is exported for (the CLI's smallest training size)
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class ExportError(RuntimeError):
    """The exported graph failed ``onnx.checker`` or disagrees with PyTorch."""


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how closely it matches PyTorch.

    Attributes:
        path: The ``.onnx`` file.
        opset: The default-domain opset of the graph.
        input_names: The graph's inputs (``["image"]``).
        output_names: ``{task}.{key}`` in output order.
        max_abs_diff: (H, W) -> largest absolute difference from PyTorch over every float output
            and every parity batch at that size.
        near_ties: (H, W) -> pixels whose class label was not compared because the PyTorch top-2
            logit margin was within the tolerance (see :func:`export_onnx`).
        dynamic_size: Whether the graph takes any H, W >= :data:`MIN_SIDE`; False when
            ``torch.export`` could not capture the model with a symbolic size and the graph is
            fixed at the training size (batch stays dynamic; the predictor resizes to it anyway).
        seconds: Wall time of export, check and parity.
    """

    path: Path
    opset: int
    input_names: list[str]
    output_names: list[str]
    max_abs_diff: dict[tuple[int, int], float] = field(default_factory=dict)
    near_ties: dict[tuple[int, int], int] = field(default_factory=dict)
    dynamic_size: bool = True
    seconds: float = 0.0


def output_names(tasks: tuple[str, ...] | list[str]) -> list[str]:
    """``{task}.{key}`` for every task and key, in SuggestionHead's flat output order."""
    return [f"{t}.{k}" for t in tasks for k in OUTPUT_KEYS]


# ------------------------------------------------------------------------------------------------
# Export


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    *,
    sharpen: float = 1.0,
    parity_sizes: tuple[tuple[int, int], ...] | None = None,
    tolerance: float = 1e-4,
) -> ExportReport:
    """Export a checkpoint to one self-contained ``.onnx`` file and prove it matches PyTorch.

    The graph is :class:`SuggestionHead` (network + decoding) captured by ``torch.export`` with
    dynamic batch, height and width and translated by the dynamo ONNX exporter. The networks need
    no divisibility (H, W >= :data:`MIN_SIDE`). A model whose size ``torch.export`` cannot make
    symbolic (the SegNet backbone, in torch 2.13) is exported at its fixed training size with a
    dynamic batch, with a warning; parity is then checked at that size only. The decoding's
    channel-axis Softmax and Einsum nodes are rewritten into forms ONNX Runtime runs faster (see
    :func:`_rewrite_for_onnxruntime`); the parity check runs on the rewritten graph.

    Parity: for each size and batch 1 and 3, random images go through PyTorch and through ONNX
    Runtime (CPU). Every float output must agree within ``tolerance`` (max absolute difference).
    Class labels are argmaxes, and an argmax between two logits closer than float rounding may
    legitimately pick the other class, so labels must be equal wherever the PyTorch top-2 logit
    margin exceeds ``tolerance``; the other pixels are counted in ``near_ties``. The fine score is
    read at the argmax of the low-resolution logits G', so pixels that interpolate from a
    near-tie of G' are left out of its difference for the same reason.

    Args:
        checkpoint: A hitts ``.pt`` checkpoint.
        out: Where the ``.onnx`` file goes; written under a temporary name next to it and renamed
            only once check and parity pass.
        sharpen: Logit multiplier of the confidence softmax, fixed in the graph.
        parity_sizes: (H, W) sizes to check; default the training size, (H + 16, W + 32) and
            (2H, 2W).
        tolerance: Largest allowed absolute difference.

    Raises:
        ValueError: The checkpoint cannot be read.
        ExportError: ``onnx.checker`` or the parity check failed (the message names the output
            and the difference); nothing is left at ``out``.
    """
    onnx = _require("onnx")
    t0 = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    state = load_checkpoint(checkpoint)
    model, quantizers, tasks = model_from_checkpoint(state)
    head = SuggestionHead(model, quantizers, sharpen).eval()
    h, w = (int(v) for v in state["size"])
    sizes = tuple(parity_sizes or ((h, w), (h + 16, w + 32), (2 * h, 2 * w)))
    names = output_names(head.tasks)

    example = torch.rand(EXAMPLE_BATCH, 3, h, w, generator=torch.Generator().manual_seed(0))
    captured, dynamic_size = _capture(head, example, checkpoint)
    if not dynamic_size:
        sizes = tuple(hw for hw in sizes if tuple(hw) == (h, w)) or ((h, w),)
    with _quiet_exporter():
        program = torch.onnx.export(
            captured,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=names,
            verbose=False,
        )
    proto = program.model_proto
    _name_dims(proto.graph, ("batch", None, "height", "width"))
    rewritten = _rewrite_for_onnxruntime(proto)
    meta = {
        "format": FORMAT,
        "tasks": [t.to_dict() for t in tasks],
        "output_tasks": list(head.tasks),
        "output_keys": list(OUTPUT_KEYS),
        "size": [h, w],
        "sharpen": float(sharpen),
        "dynamic_size": dynamic_size,
        "model_config": state["model_config"],
        "epoch": state.get("epoch"),
        "extra": state.get("extra", {}),
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, default=str)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        onnx.save(proto, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"{checkpoint}: onnx.checker rejected the exported graph: {e}") from e
        report = ExportReport(
            path=out,
            opset=int(opset),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_size=dynamic_size,
        )
        _check_parity(head, tmp, names, sizes, tolerance, report)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    report.seconds = time.perf_counter() - t0
    log.info(
        "exported %s to %s (opset %d, %d nodes rewritten for ONNX Runtime) in %.1f s; "
        "max abs diff %s",
        checkpoint,
        out,
        report.opset,
        rewritten,
        report.seconds,
        ", ".join(f"{a}x{b}: {d:.1e}" for (a, b), d in report.max_abs_diff.items()),
    )
    return report


def _capture(
    head: SuggestionHead, example: Tensor, checkpoint: Path
) -> tuple[torch.export.ExportedProgram, bool]:
    """``torch.export`` with dynamic batch, height and width; batch alone if the size cannot be.

    Captured here rather than inside ``torch.onnx.export``: on a constraint violation the ONNX
    exporter silently narrows the size to the congruence class torch suggests (e.g. H = 32k - 24),
    a graph that then fails at other sizes. Guards sympy cannot prove (such as the ceil-mode
    pooling bound of the multi-scale recipe) become runtime asserts instead of errors.

    Returns:
        The program, and whether its height and width are dynamic.
    """
    h, w = example.shape[-2:]
    batch = torch.export.Dim("batch", min=1)
    spatial = {
        0: batch,
        2: torch.export.Dim("height", min=min(MIN_SIDE, h)),
        3: torch.export.Dim("width", min=min(MIN_SIDE, w)),
    }
    with _quiet_exporter(), torch.no_grad():
        try:
            return _export(head, example, spatial), True
        except Exception as e:  # torch.export raises many types, some from inside sympy
            log.warning(
                "%s: torch.export cannot make height and width dynamic for this model (%s: %s); "
                "exporting at the fixed training size %dx%d with a dynamic batch",
                checkpoint,
                type(e).__name__,
                _first_line(e),
                h,
                w,
            )
        try:
            return _export(head, example, {0: batch}), False
        except Exception as e:
            raise ExportError(
                f"{checkpoint}: torch.export cannot capture the model ({type(e).__name__}: "
                f"{_first_line(e)})"
            ) from e


def _export(head: SuggestionHead, example: Tensor, dims: dict) -> torch.export.ExportedProgram:
    return torch.export.export(
        head,
        (example,),
        dynamic_shapes=(dims,),
        strict=False,
        prefer_deferred_runtime_asserts_over_guards=True,
    )


def _name_dims(graph, names: tuple[str | None, ...]) -> None:
    """Give the input's symbolic dims readable names, everywhere they appear in ``graph`` (also
    inside expressions such as ``((height - 1)//8) + 1``)."""
    rename = {
        d.dim_param: new
        for d, new in zip(graph.input[0].type.tensor_type.shape.dim, names, strict=True)
        if new and d.dim_param
    }
    if not rename:
        return
    symbol = re.compile(r"\b(" + "|".join(map(re.escape, rename)) + r")\b")
    for value in (*graph.input, *graph.output, *graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_param = symbol.sub(lambda m: rename[m.group(1)], d.dim_param)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


# ------------------------------------------------------------------------------------------------
# Graph rewrites: the same arithmetic in the form ONNX Runtime's CPU kernels run fastest
#
# Decoding works on (B, C_p, H, W) maps along the channel axis. ONNX Runtime's Softmax on a
# non-last axis transposes to the last axis and back, and its Einsum is a generic kernel; on the
# CPU recipe the two took about half of the inference time. As reductions along axis 1 and as 1x1
# convolutions they run vectorised. The parity check covers the rewritten graph.


def _rewrite_for_onnxruntime(proto) -> int:
    """Rewrite channel-axis Softmax and the decoders' Einsum in place; returns nodes rewritten."""
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 18:  # ReduceMax takes its axes as an input from opset 18 on
        return 0
    graph = proto.graph
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in (*graph.input, *graph.value_info, *graph.output)
        if v.type.tensor_type.HasField("shape")
    }
    constants = {i.name: i for i in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        new = None
        if node.domain in ("", "ai.onnx") and node.op_type == "Softmax":
            new = _softmax_as_reductions(node, ranks.get(node.input[0]), graph)
        elif node.domain in ("", "ai.onnx") and node.op_type == "Einsum":
            new = _einsum_as_conv(node, constants, graph)
        nodes += new or [node]
        count += new is not None
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [i for i in graph.initializer if i.name in constants and i.name not in used]
    for init in unused:  # the centres now folded into conv weights
        graph.initializer.remove(init)
    return count


def _softmax_as_reductions(node, rank: int | None, graph) -> list | None:
    """Softmax over a non-last axis -> exp(x - max) / sum, reduced along that axis."""
    from onnx import helper, numpy_helper

    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    if rank is None or axis % rank == rank - 1:
        return None
    x, y = node.input[0], node.output[0]
    axes = f"{y}__axes"
    graph.initializer.append(numpy_helper.from_array(np.array([axis % rank], np.int64), axes))
    return [
        helper.make_node("ReduceMax", [x, axes], [f"{y}__max"], keepdims=1),
        helper.make_node("Sub", [x, f"{y}__max"], [f"{y}__shifted"]),
        helper.make_node("Exp", [f"{y}__shifted"], [f"{y}__exp"]),
        helper.make_node("ReduceSum", [f"{y}__exp", axes], [f"{y}__sum"], keepdims=1),
        helper.make_node("Div", [f"{y}__exp", f"{y}__sum"], [y], name=node.name),
    ]


def _einsum_as_conv(node, constants: dict, graph) -> list | None:
    """``bkhw,k->bhw`` and ``bkhw,kc->bchw`` with constant centres -> a 1x1 convolution."""
    from onnx import helper, numpy_helper

    equation = next((a.s.decode() for a in node.attribute if a.name == "equation"), "")
    terms, _, out = equation.replace(" ", "").partition("->")
    parts = terms.split(",")
    if len(parts) != 2 or len(parts[0]) != 4 or node.input[1] not in constants:
        return None
    (b, k, h, w), sub = parts
    centres = numpy_helper.to_array(constants[node.input[1]]).astype(np.float32)
    if sub == k and out == b + h + w:  # (K,) -> one output channel, squeezed away
        weight = centres.reshape(1, -1, 1, 1)
    elif len(sub) == 2 and sub[0] == k and out == b + sub[1] + h + w:  # (K, C) -> C channels
        weight = centres.T.reshape(centres.shape[1], -1, 1, 1)
    else:
        return None
    y = node.output[0]
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), f"{y}__w"))
    if sub != k:
        return [helper.make_node("Conv", [node.input[0], f"{y}__w"], [y], name=node.name)]
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), f"{y}__axis"))
    return [
        helper.make_node("Conv", [node.input[0], f"{y}__w"], [f"{y}__conv"]),
        helper.make_node("Squeeze", [f"{y}__conv", f"{y}__axis"], [y], name=node.name),
    ]


def _check_parity(
    head: SuggestionHead,
    path: Path,
    names: list[str],
    sizes: tuple[tuple[int, int], ...],
    tolerance: float,
    report: ExportReport,
) -> None:
    """PyTorch vs ONNX Runtime (CPU) on random images; fills the report, raises ExportError."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=[CPU])
    gen = torch.Generator().manual_seed(1)
    for hw in sizes:
        worst, ties = 0.0, 0
        for b in PARITY_BATCHES:
            x = torch.rand(b, 3, *hw, generator=gen)  # (B, 3, H, W)
            ref, logits, fine_logits = _torch_reference(head, x)
            where = f"at batch {b}, {hw[0]}x{hw[1]}"
            try:
                got = session.run(names, {INPUT_NAME: x.numpy()})
            except Exception as e:  # ONNX Runtime's own error types
                raise ExportError(f"ONNX Runtime failed {where}: {_first_line(e)}") from e
            for i, name in enumerate(names):
                task, key = name.rsplit(".", 1)
                r, g = ref[i].numpy(), got[i]
                if g.shape != r.shape or g.dtype != r.dtype:
                    raise ExportError(
                        f"{name}: ONNX Runtime gave {g.dtype} {g.shape}, PyTorch {r.dtype} "
                        f"{r.shape} {where}"
                    )
                if key == "label" and head.quantizers[task].is_classification:
                    sure = (_top2_margin(logits[task]) > tolerance).numpy()  # (B, H, W)
                    wrong = int(((g != r) & sure).sum())
                    ties += int((~sure).sum())
                    if wrong:
                        raise ExportError(
                            f"{name}: {wrong} pixels get another class than in PyTorch where "
                            f"the top-2 logit margin exceeds the tolerance {tolerance:g} {where}"
                        )
                    continue
                keep = np.ones(r.shape, dtype=bool)
                if key == "fine_score" and task in fine_logits:
                    tie = (_top2_margin(fine_logits[task]) <= tolerance).float()[:, None]
                    near = F.interpolate(tie, size=hw, mode="bilinear", align_corners=False)
                    keep = (near[:, 0] <= 0).numpy()
                diff = np.abs(g.astype(np.float64) - r.astype(np.float64))[keep]
                d = float(diff.max()) if diff.size else 0.0
                if not d <= tolerance:  # also catches NaN
                    raise ExportError(
                        f"{name}: max abs diff {d:.3g} from PyTorch exceeds the tolerance "
                        f"{tolerance:g} {where}"
                    )
                worst = max(worst, d)
        report.max_abs_diff[hw] = worst
        report.near_ties[hw] = ties


def _torch_reference(
    head: SuggestionHead, x: Tensor
) -> tuple[tuple[Tensor, ...], dict[str, Tensor], dict[str, Tensor]]:
    """SuggestionHead's outputs, plus per task the logits (B, C_p, H, W) and, for a model with
    fine-grained tokens, the low-resolution G' (B, C_p, h, w) the fine score is read at."""
    seen: dict = {}
    hooks = [head.model.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))]
    fine = getattr(head.model, "fine", None)
    for task, module in (fine or {}).items():
        hooks.append(
            module.register_forward_hook(lambda m, i, o, t=task: seen.__setitem__(t, o[0]))
        )
    try:
        with torch.no_grad():
            flat = head(x)
    finally:
        for hook in hooks:
            hook.remove()
    logits = {t: o["logits"] for t, o in seen["out"].items()}
    return flat, logits, {t: seen[t] for t in (fine or {})}


def _top2_margin(logits: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H, W) gap between the largest and second-largest logit."""
    top = logits.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's chatter: notes about optional torchvision ops this graph never
    uses, INFO lines of every graph rewrite, and a deprecation inside torch.export itself."""
    loggers = [
        logging.getLogger(name)
        for name in ("torch.onnx._internal.exporter._registration", "onnx_ir", "onnxscript")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        hint = "onnxruntime (or onnxruntime-gpu)" if module == "onnxruntime" else module
        raise ImportError(f"ONNX export and inference need {module}: pip install {hint}") from None


# ------------------------------------------------------------------------------------------------
# Inference


def _read_metadata(session, path: str | Path) -> dict:
    """The hitts metadata of an ONNX Runtime session's model; ValueError naming ``path`` if the
    entry is missing or unreadable."""
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise ValueError(
            f"{path}: an ONNX model without hitts metadata; export one with `hitts export-model`"
        )
    try:
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        meta["tasks"] = tuple(TaskSpec.from_dict(d) for d in meta["tasks"])
        meta["size"] = tuple(int(v) for v in meta["size"])
        by_name = {t.name: t for t in meta["tasks"]}
        meta["output_tasks"] = tuple(by_name[n] for n in meta["output_tasks"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: unreadable hitts metadata ({type(e).__name__}: {e})") from None
    return meta


def default_providers() -> list[str]:
    """CUDA first when this ONNX Runtime build has it, then CPU."""
    ort = _require("onnxruntime")
    return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]


class OnnxPredictor(Predictor):
    """ONNX Runtime on a file written by :func:`export_onnx`; nothing else is needed.

    Args:
        path: The ``.onnx`` file.
        providers: Execution providers in order of preference; default :func:`default_providers`.
        threads: Intra-op threads; None leaves ONNX Runtime's default (one per physical core).

    Attributes:
        provider: The provider the session actually uses (a CUDA request can fall back to CPU).
        metadata: The export's metadata: ``tasks``, ``size``, ``sharpen``, ``model_config``,
            ``extra``, ...
        all_tasks: Every task of the training data (``tasks`` are the ones the model predicts).
    """

    engine = "onnx"

    def __init__(
        self, path: str | Path, *, providers: list[str] | None = None, threads: int | None = None
    ) -> None:
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: ONNX model not found")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        wanted = list(providers or default_providers())
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=wanted)
        except Exception as e:  # ONNX Runtime raises its own types for a damaged file
            raise ValueError(
                f"{self.path}: not a valid ONNX model ({type(e).__name__}: {_first_line(e)})"
            ) from None
        self.provider = self.session.get_providers()[0]
        if self.provider != wanted[0]:
            log.warning("%s: %s is unavailable, running on %s", self.path, wanted[0], self.provider)
        log.info("%s: ONNX Runtime on %s", self.path, self.provider)

        self.metadata = _read_metadata(self.session, self.path)
        self.tasks = self.metadata["output_tasks"]
        self.all_tasks = self.metadata["tasks"]
        self.size = self.metadata["size"]
        self._outputs = output_names([t.name for t in self.tasks])
        have = {o.name for o in self.session.get_outputs()}
        missing = [n for n in self._outputs if n not in have]
        inputs = self.session.get_inputs()
        if missing or len(inputs) != 1:
            raise ValueError(
                f"{self.path}: the graph does not match its metadata (outputs missing: {missing}, "
                f"inputs: {[i.name for i in inputs]})"
            )
        self._input = inputs[0].name

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        """(B, 3, H, W) float32 in [0, 1] -> SuggestionHead's flat outputs."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run(self._outputs, {self._input: x})


def load_predictor(path: str | Path, engine: str, *, threads: int | None = None) -> Predictor:
    """The predictor of ``engine`` for a model file.

    Args:
        path: A ``.pt`` checkpoint for ``"torch"``; an ``.onnx`` file from ``hitts export-model``
            for ``"onnx"``.
        engine: ``"torch"`` (PyTorch eager, CUDA when present) or ``"onnx"`` (ONNX Runtime).
        threads: ONNX Runtime intra-op threads (PyTorch follows ``torch.set_num_threads``).
    """
    path = Path(path)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    is_torch_file = path.suffix in (".pt", ".pth") or (path.is_file() and zipfile.is_zipfile(path))
    if engine == "onnx":
        if is_torch_file:
            raise ValueError(
                f"{path} is a PyTorch checkpoint; the onnx engine needs an .onnx file made from "
                "it with `hitts export-model`, or use the torch engine"
            )
        return OnnxPredictor(path, threads=threads)
    if path.suffix == ".onnx":
        raise ValueError(
            f"{path} is an ONNX model; the torch engine needs the .pt checkpoint it was exported "
            "from, or use the onnx engine"
        )
    return TorchPredictor(path)
