"""Ingest speed: generated scenes into a fresh FiftyOne dataset; seconds, samples/s, peak memory.

Usage: python examples/benchmark_ingest.py [--count 1000] [--size 96x128] [--setting one-label]

Runs against a throwaway embedded database and HITTS_HOME in a temporary folder. Prints a table
with the generation and ingest figures; the ingest row also gives the ratio against a baseline
measured in the same run: reading and checking every file without writing anything (the I/O floor).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

_TMP = tempfile.mkdtemp(prefix="hitts-bench-ingest-")
os.environ["FIFTYONE_DATABASE_DIR"] = str(Path(_TMP) / "db")
os.environ["HITTS_HOME"] = str(Path(_TMP) / "home")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--size", default="96x128")
    p.add_argument("--setting", default="one-label")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))

    import fiftyone as fo  # noqa: F401  (start the database before timing)

    from hitts.app.ingest import ingest
    from hitts.model.data.folder import FolderReader
    from hitts.model.data.scenes import SceneConfig, generate_scenes

    src = Path(_TMP) / "scenes"
    t0 = time.perf_counter()
    generate_scenes(src, args.count, SceneConfig(height=h, width=w), seed=0, progress=False)
    t_gen = time.perf_counter() - t0

    reader = FolderReader(src)
    t0 = time.perf_counter()
    for item in reader.items():
        reader.load(item)
    t_read = time.perf_counter() - t0

    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    report = ingest(src, "bench", setting=args.setting, progress=False)
    t_ingest = time.perf_counter() - t0
    assert report.added == args.count, report
    t0 = time.perf_counter()
    again = ingest(src, "bench", setting=args.setting, progress=False)
    t_again = time.perf_counter() - t0
    assert again.added == 0

    rows = [
        ("generate (render + write)", t_gen, None),
        ("read + check only (baseline)", t_read, 1.0),
        ("ingest into FiftyOne", t_ingest, t_ingest / t_read),
        ("ingest again (idempotent no-op)", t_again, t_again / t_read),
    ]
    print(f"\n{args.count} scenes at {h}x{w}, setting {args.setting}, {os.cpu_count()} cores")
    print(f"{'step':34s}{'seconds':>10s}{'samples/s':>12s}{'x baseline':>12s}")
    for name, secs, ratio in rows:
        r = "" if ratio is None else f"{ratio:.2f}"
        print(f"{name:34s}{secs:10.2f}{args.count / secs:12.1f}{r:>12s}")
    print(f"peak RSS of this process: {_peak_rss_mb():.0f} MB (before ingest {rss_before:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
