"""The training loop: stage 1 on the labels that exist, stage 2 from scratch with discovered labels.

Sec. 3.3 / Sec. 4.1 "Training Pipeline":

- Stage 1: ``L_s`` (Eq. 5) on ground truth only.
- Discovery (:mod:`hitts.model.discover`): the frozen stage-1 model labels the clean images.
- Stage 2: a fresh model trained with augmentation on ``L_s + L_p + L_f`` (Eq. 8), where ``L_p``
  (Eq. 7) uses the pseudo-labels inside ``M_p`` (confidence > τ) and ``L_f`` (Eq. 6) pulls the task
  features towards the saved ones, weighted by ``M_f`` where the task has no label. A teacher
  without global tokens (MTL / STL) gives the naive pseudo-label baseline ``L_p*``: no ``L_f``.

Readable top to bottom: :func:`train` builds everything, then runs :func:`_run_epoch` per epoch,
evaluates, logs one JSONL line, redraws the curves, and writes the checkpoint atomically. A killed
run resumes from its last checkpoint (at most one epoch lost) and continues bit-for-bit: the
shuffle and the flips of epoch e come from a generator seeded with (seed, e).

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same function trains with DistributedDataParallel: each
process takes every world-th sample of the epoch's shuffle; rank 0 evaluates and writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from hitts.model.curves import plot_curves
from hitts.model.evaluate import evaluate
from hitts.model.losses import feature_loss, pseudo_label_loss, supervised_loss
from hitts.model.network import HITTS, ModelConfig, build_model
from hitts.model.quantize import Quantizer
from hitts.model.tasks import EDGE, TaskSpec
from hitts.model.tensor_set import TensorSet, hflip_batch, normal_task_names

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hitts-checkpoint-v1"


@dataclass
class TrainConfig:
    """How one run learns. The CLI maps its flags onto these fields."""

    stage: int = 1  # 1: L_s only (Eq. 5); 2: L_s + L_p + L_f from a teacher's discovery (Eq. 8)
    epochs: int = 30  # converges at CPU scale (BENCHMARKS.md); the paper trains 400 on NYUD-v2
    batch_size: int = 8  # the paper's NYUD-v2 batch size
    lr: float = (
        1e-3  # Adam; the paper's 1e-4 is tuned for 400 epochs, short runs need a larger step
    )
    weight_decay: float = 0.0  # the NYUD-v2 recipe uses none (PASCAL: 1e-4)
    lr_decays: int = 4  # the LR is halved this many times, evenly (paper: every 100 of 400 epochs)
    gamma: float = 0.5  # the paper's multiplying factor
    seed: int = 0
    hflip: bool = True  # the augmentation of stage 2 (and stage 1); normals' x flips sign
    use_lp: bool = True  # stage 2: pseudo-label loss, Eq. 7
    use_lf: bool = True  # stage 2: feature loss, Eq. 6 (only with a teacher that has global tokens)
    thresholds: dict[str, float] = field(
        default_factory=dict
    )  # τ per task (Appendix B); see losses
    edge_pos_weight: float = 0.95  # edge pixels' share of the cross-entropy weight (MTI-Net/ATRC)
    # the edge weights' scale: None scales them to a mean of 1 over the labelled pixels, so the
    # re-balanced loss counts as much as an unweighted task (Eq. 5 and 8 weigh tasks equally)
    edge_loss_weight: float | None = None
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
        for task, tau in self.thresholds.items():
            if not 0 < tau < 1:
                raise ValueError(f"threshold for {task} must be in (0, 1), got {tau}")


def pick_device() -> torch.device:
    """CUDA when present (the process's local rank under torchrun), else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _class_weights(
    quantizers: dict[str, Quantizer], cfg: TrainConfig, data: TensorSet, device
) -> dict[str, Tensor]:
    """Cross-entropy class weights of the edge tasks: ``(1 - p, p)`` for p = ``edge_pos_weight``,
    times ``edge_loss_weight``, by default ``1 / mean weight`` over the labelled pixels of
    ``data``. The pair alone (0.05, 0.95) shrinks the edge loss about sixfold next to the other
    tasks' (at 12% edge pixels the mean weight is 0.16), where Eq. 5 and 8 weigh tasks equally.

    In stage 2 the weights the teacher's quantizer holds are kept, so a student weighs edges as
    its teacher did, whatever reviewed labels it adds.
    """
    w = {}
    names = [t.name for t in data.tasks]
    for name, q in quantizers.items():
        if q.kind != EDGE:
            continue
        if cfg.stage == 2 and cfg.edge_loss_weight is None and q.class_weight.numel():
            w[name] = q.class_weight.to(device)
            continue
        pair = torch.tensor([1 - cfg.edge_pos_weight, cfg.edge_pos_weight])
        scale = cfg.edge_loss_weight
        if scale is None:
            scale = 1.0
            if name in data.targets and name in names:
                labelled = data.valid[name] & data.present[:, names.index(name), None, None]
                n = int(labelled.sum())
                if n:
                    share = float((data.targets[name][labelled] == 1).sum()) / n
                    scale = 1.0 / float(pair[0] * (1 - share) + pair[1] * share)
        w[name] = (scale * pair).to(device)
    return w


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint, loaded without executing pickled code; ValueError naming the file if bad."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a hitts checkpoint (expected format {CHECKPOINT_FORMAT})")
    return state


def model_from_checkpoint(
    state: dict,
) -> tuple[nn.Module, dict[str, Quantizer], tuple[TaskSpec, ...]]:
    """Rebuild the model (eval mode, CPU), its quantizers and tasks from a checkpoint dict."""
    model = build_model(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.eval()
    quantizers = {n: Quantizer.from_dict(d) for n, d in state["quantizers"].items()}
    tasks = tuple(TaskSpec.from_dict(d) for d in state["tasks"])
    return model, quantizers, tasks


def train(
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    quantizers: dict[str, Quantizer],
    train_set: TensorSet,
    val_set: TensorSet | None,
    out: Path,
    *,
    discovery: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    extra: dict | None = None,
) -> dict:
    """Train one model and return the last validation metrics (task -> metrics).

    Args:
        cfg: The learning settings.
        model_cfg: The network.
        quantizers: Every task's bins (its ``num_bins`` must match ``model_cfg.outputs``).
        train_set: Training images; ``present`` says which labels exist (α of Eq. 5).
        val_set: Validation images with ground truth, scored after every epoch, or None.
        out: Run folder: ``last.pt``, ``log.jsonl``, ``curves.png``.
        discovery: Stage 2: what :func:`hitts.model.discover.discover` found on ``train_set``
            (same image order), as loaded by :func:`hitts.model.discover.load_discovery`.
        resume: Continue from ``out/last.pt``; without it an existing run is refused.
        extra: Plain values stored in the checkpoint (e.g. the dataset name and model round).
    """
    rank, world = init_distributed()
    device = pick_device()
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / "last.pt", out / "log.jsonl"
    if cfg.stage == 2 and discovery is None:
        raise ValueError("stage 2 needs the discovery of a stage-1 model")
    if discovery is not None and discovery["keys"] != train_set.keys:
        raise ValueError("the discovery was made on other training images than these")
    if ckpt_path.exists() and not resume:
        raise ValueError(f"{ckpt_path} exists: pass resume to continue it, or use a new folder")

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device)
    active = {n: q.to(device) for n, q in quantizers.items() if n in model_cfg.task_outputs}
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = max(1, math.ceil(cfg.epochs / (cfg.lr_decays + 1)))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=cfg.gamma)
    start, metrics = 0, {}
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, metrics = state["epoch"] + 1, state.get("metrics", {})
        log.info("resuming %s at epoch %d", out, start + 1)
        if rank == 0 and log_path.exists():  # drop lines of epochs after the checkpoint
            rows = [
                r
                for r in log_path.read_text().splitlines()
                if r.strip() and json.loads(r)["epoch"] < start
            ]
            log_path.write_text("".join(r + "\n" for r in rows))
    elif rank == 0:
        log_path.write_text("")
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    weights = _class_weights(active, cfg, train_set, device)
    for name, w in weights.items():  # predictions divide them back out (see set_class_weight)
        active[name].set_class_weight(w)
    teacher_has_tokens = bool(
        discovery
        and discovery["meta"].get("kind") == HITTS
        and discovery["meta"].get("use_global", True)
    )
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        losses = _run_epoch(
            net,
            opt,
            active,
            cfg,
            train_set,
            discovery,
            teacher_has_tokens,
            weights,
            epoch,
            rank,
            world,
            device,
            progress=progress and rank == 0,
        )
        sched.step()
        if rank == 0:
            metrics = (
                evaluate(model, active, val_set, batch_size=cfg.eval_batch_size) if val_set else {}
            )
            row = {
                "epoch": epoch,
                "lr": opt.param_groups[0]["lr"],
                **losses,
                "seconds": round(time.perf_counter() - t0, 2),
                "val": metrics,
            }
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            save_checkpoint(
                ckpt_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch,
                    "model_config": model_cfg.to_dict(),
                    "train_config": asdict(cfg),
                    "quantizers": {n: q.to_dict() for n, q in quantizers.items()},
                    "tasks": [t.to_dict() for t in train_set.tasks],
                    "size": list(train_set.hw),
                    "metrics": metrics,
                    "extra": dict(extra or {}),
                },
            )
            plot_curves(log_path, out / "curves.png")
        if world > 1:
            dist.barrier()
    return metrics


def _flip_feature_targets(
    flip: Tensor, targets: dict[str, Tensor], found: dict, idx: Tensor
) -> dict[str, Tensor]:
    """Feature targets of a batch whose images ``flip`` (B,) were flipped: the teacher's features
    of the flipped images where the discovery has them (see :mod:`hitts.model.discover`), else
    the flipped features of the originals (discoveries saved before the flipped pass)."""
    out = {}
    for key, t in targets.items():
        kind, name = key.split("/", 1)
        saved = found[name].get("feature_hflip" if kind == "pf" else "mf_hflip")
        if saved is None:
            out[key] = hflip_batch(flip, {key: t}, set())[key]
        else:
            out[key] = torch.where(flip.view(-1, 1, 1, 1), saved[idx], t)
    return out


def _run_epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    quantizers: dict[str, Quantizer],
    cfg: TrainConfig,
    data: TensorSet,
    discovery: dict | None,
    teacher_has_tokens: bool,
    weights: dict[str, Tensor],
    epoch: int,
    rank: int,
    world: int,
    device: torch.device,
    *,
    progress: bool,
) -> dict[str, float]:
    net.train()
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(data), generator=g)[rank::world]
    flips = torch.rand(len(data), generator=g) < 0.5
    normals = normal_task_names(data.tasks)
    names = list(quantizers)
    sums = {"loss": 0.0, "loss_s": 0.0, "loss_p": 0.0, "loss_f": 0.0}
    n_batches = math.ceil(len(order) / cfg.batch_size)
    bar = tqdm(
        range(n_batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress
    )
    for b in bar:
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        batch = {"image": data.images[idx]}
        for n in names:
            batch[f"t/{n}"] = data.targets[n][idx]
            batch[f"v/{n}"] = data.valid[n][idx]
        found = discovery["tasks"] if discovery else {}
        targets = {}  # Eq. 6 feature targets, in each (possibly flipped) image's orientation
        for n in names:
            if n in found:
                batch[f"pl/{n}"] = found[n]["label"][idx]
                batch[f"pc/{n}"] = found[n]["confidence"][idx]
                if teacher_has_tokens and "feature" in found[n]:
                    targets[f"pf/{n}"] = found[n]["feature"][idx]
                    targets[f"pm/{n}"] = found[n]["mf"][idx]
        if cfg.hflip:
            keys = {k for k in batch if k.split("/")[-1] in normals and k[:2] in ("t/", "pl")}
            batch = hflip_batch(flips[idx], batch, keys)
            targets = _flip_feature_targets(flips[idx], targets, found, idx)
        batch.update(targets)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        alphas = {n: a.to(device) for n, a in data.alpha(idx).items() if n in quantizers}
        s_alphas = {  # Eq. 5's alpha, scaled down for labels that cover part of an image
            n: a.to(device) for n, a in data.supervised_weight(idx).items() if n in quantizers
        }
        f_alphas = alphas  # Eq. 6's alpha: where the teacher's features saw a label
        if discovery and "teacher_labelled" in discovery:
            seen = discovery["teacher_labelled"][idx].float().to(device)
            f_alphas = {t.name: seen[:, i] for i, t in enumerate(data.tasks) if t.name in alphas}
        out = net(batch["image"].float().div_(255.0))
        logits = {n: out[n]["logits"] for n in names}
        loss_s = supervised_loss(
            quantizers,
            logits,
            {n: batch[f"t/{n}"] for n in names},
            {n: batch[f"v/{n}"] for n in names},
            s_alphas,
            class_weights=weights,
        )
        loss = loss_s
        loss_p = loss_f = torch.zeros((), device=device)
        if cfg.stage == 2 and cfg.use_lp:
            thresholds = {n: cfg.thresholds[n] for n in names}
            loss_p = pseudo_label_loss(  # Eq. 7
                quantizers,
                logits,
                {n: batch.get(f"pl/{n}") for n in names},
                {n: batch.get(f"pc/{n}") for n in names},
                alphas,
                thresholds,
                class_weights=weights,
            )
            loss = loss + loss_p
        if cfg.stage == 2 and cfg.use_lf and teacher_has_tokens:
            loss_f = feature_loss(  # Eq. 6
                {n: out[n]["feature"] for n in names},
                {n: batch[f"pf/{n}"].float() for n in names if f"pf/{n}" in batch},
                {n: batch[f"pm/{n}"].float() for n in names if f"pm/{n}" in batch},
                f_alphas,
            )
            loss = loss + loss_f
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for key, value in (
            ("loss", loss),
            ("loss_s", loss_s),
            ("loss_p", loss_p),
            ("loss_f", loss_f),
        ):
            sums[key] += float(value.detach())
        bar.set_postfix({k: f"{v / (b + 1):.3f}" for k, v in sums.items() if v})
    bar.close()
    return {k: round(v / max(n_batches, 1), 5) for k, v in sums.items()}
