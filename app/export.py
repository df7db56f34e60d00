"""``hitts export``: the completed labels of a dataset, in a layout other tools read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from fiftyone import ViewField as F
from tqdm import tqdm

from hitts.app import store
from hitts.app.completed import completed_label
from hitts.exporters.labels import ExportError, ExportItem, check_target, export_labels


def export_dataset(
    name: str,
    out: Path,
    fmt: str,
    *,
    include_pseudo: bool = False,
    split: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Export dataset ``name`` (or one split); returns the manifest."""
    check_target(Path(out), overwrite)  # before touching anything
    ds = store.load_dataset(name)
    info = store.dataset_info(ds)
    view = ds if split is None else ds.match(F("split") == split)
    view = view.sort_by("key")
    if len(view) == 0:
        raise ExportError(
            f"dataset {name!r} has no samples{f' in split {split!r}' if split else ''}"
        )

    def items() -> Iterator[ExportItem]:
        for sample in tqdm(
            view.iter_samples(), total=len(view), desc=f"export {name}", disable=not progress
        ):
            item = ExportItem(sample.key, sample.split, Path(sample.filepath))
            for task in info.tasks:
                got = completed_label(sample, task, info.depth_unit, include_pseudo=include_pseudo)
                if got is not None:
                    item.labels[task.name], item.sources[task.name] = got
            yield item

    extra = {
        "dataset": name,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "include": "confident-suggestions" if include_pseudo else "reviewed",
        "rounds": ds.info[store.INFO_KEY].get("rounds", []),
    }
    return export_labels(
        items(),
        Path(out),
        fmt,
        info.tasks,
        depth_unit=info.depth_unit,
        overwrite=overwrite,
        extra_manifest=extra,
    )
