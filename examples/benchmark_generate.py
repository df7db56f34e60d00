"""How fast the built-in scene generator runs on one core.

Renders ``--count`` scenes per size twice: once in memory only (``render_scene``) and once as a
dataset on disk (``generate_scenes``, PNG encoding and atomic writes included), in a temporary
folder, with numpy (and torch, if installed) held to one thread. Reports wall-clock and CPU
seconds; images per CPU-second is the per-core figure and holds on a busy machine too.

    python examples/benchmark_generate.py --count 200 --sizes 96x128 288x384
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from hitts.model.data.scenes import SceneConfig, generate_scenes, render_scene  # noqa: E402

log = logging.getLogger("benchmark_generate")


@dataclass
class Timing:
    """Wall-clock and CPU seconds of one run over ``count`` scenes."""

    count: int
    wall_s: float
    cpu_s: float

    @property
    def per_cpu_s(self) -> float:
        return self.count / self.cpu_s

    @property
    def per_wall_s(self) -> float:
        return self.count / self.wall_s


def _limit_torch_threads() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def _timed(fn, count: int) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Timing(count, time.perf_counter() - wall, time.process_time() - cpu)


def bench(config: SceneConfig, count: int, seed: int) -> tuple[Timing, Timing]:
    """(render only, render + write) timings for ``count`` scenes of ``config``."""
    render_scene(seed, config)  # warm caches and imports

    def render_all() -> None:
        for i in range(count):
            render_scene(seed, config, index=i)

    render = _timed(render_all, count)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scenes"
        write = _timed(lambda: generate_scenes(out, count, config, seed, progress=False), count)
    return render, write


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 96x128, got {text!r}") from None
    return h, w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="scenes per size (default 200)")
    parser.add_argument("--sizes", type=_size, nargs="+", default=[(96, 128)],
                        help="image sizes as HxW (default 96x128; try 96x128 288x384)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("hitts").setLevel(logging.WARNING)  # keep the table alone on screen
    _limit_torch_threads()

    header = (f"{'size':>9} {'count':>6} | {'render s':>8} {'img/s':>7} {'img/cpu-s':>9} | "
              f"{'+write s':>8} {'img/s':>7} {'img/cpu-s':>9}")
    log.info(header)
    log.info("-" * len(header))
    for h, w in args.sizes:
        render, write = bench(SceneConfig(height=h, width=w), args.count, args.seed)
        log.info(
            f"{f'{h}x{w}':>9} {args.count:>6} | {render.wall_s:>8.2f} {render.per_wall_s:>7.1f} "
            f"{render.per_cpu_s:>9.1f} | {write.wall_s:>8.2f} {write.per_wall_s:>7.1f} "
            f"{write.per_cpu_s:>9.1f}"
        )


if __name__ == "__main__":
    main()
