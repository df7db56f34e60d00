"""Loading a partially annotated source into the FiftyOne store.

Idempotent: items are keyed by their id inside the source, and keys already in the dataset are
skipped, so a second run adds nothing and a run after a crash picks up where the last stopped.
A sample is added only after all its files are written (each atomically), so a crash never leaves
a sample pointing at a half-written file. A bad item stops the ingest (the samples before it stay,
complete) unless ``skip_bad`` is set; then it is skipped and listed at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import fiftyone as fo
from tqdm import tqdm

from hitts.app import store
from hitts.model.data.errors import BadInput
from hitts.model.data.formats import open_reader
from hitts.model.data.settings import Setting, draw_kept, parse_setting
from hitts.model.data.source import Example, SourceItem

log = logging.getLogger(__name__)

BATCH = 64  # samples per database write: few round trips, little lost work on a crash


@dataclass
class IngestReport:
    name: str
    added: int = 0
    already_there: int = 0
    skipped: list[BadInput] = field(default_factory=list)


def ingest(
    src: str | Path,
    name: str,
    fmt: str = "folder",
    *,
    setting: str = "full",
    split_file: str | Path | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    progress: bool = True,
) -> IngestReport:
    """Ingest ``src`` (in layout ``fmt``) into the dataset ``name``.

    Args:
        setting: Partial-label setting (see :mod:`hitts.model.data.settings`); hidden labels go to
            ``hidden_<task>``.
        split_file: A published split file (see :mod:`hitts.model.data.split_files`); replaces
            ``setting`` and is recorded as the setting ``file:<name>``.
        seed: Seed of the setting's draw.
        skip_bad: Skip items with bad files instead of stopping at the first.

    Raises:
        BadInput: A bad file (without ``skip_bad``), or a bad split file.
        ValueError: A bad setting, name or format, or a dataset made with another setting.
    """
    store.check_name(name)
    reader = open_reader(fmt, src)
    task_names = tuple(t.name for t in reader.tasks)
    items = reader.items()
    if split_file is not None:
        from hitts.model.data.split_files import read_split_file

        kept = {it.key: it.tasks for it in items}
        kept.update(read_split_file(Path(split_file), items, task_names))
        setting_label = f"file:{Path(split_file).name}"
    else:
        parsed: Setting = parse_setting(setting, task_names)
        kept = draw_kept(parsed, items, seed)
        setting_label = str(parsed)
    info = store.DatasetInfo(
        tasks=reader.tasks,
        depth_unit=reader.depth_unit,
        source_format=fmt,
        setting=setting_label,
        seed=seed,
    )
    ds = store.open_or_create(name, info)
    report = IngestReport(name)
    done = store.existing_keys(ds)
    todo = [it for it in items if it.key not in done]
    report.already_there = len(items) - len(todo)
    pending: list[fo.Sample] = []
    bar = tqdm(todo, desc=f"ingest {name}", unit="img", disable=not progress)
    try:
        for item in bar:
            try:
                sample = _sample(name, info, item, reader.load(item), kept[item.key])
            except BadInput as e:
                if not skip_bad:
                    raise
                log.warning("skipping %s", e)
                report.skipped.append(e)
                continue
            pending.append(sample)
            if len(pending) >= BATCH:
                store.add_samples(ds, pending)
                report.added += len(pending)
                pending = []
    finally:
        # whatever was complete before a stop is stored, so a rerun only does the rest
        store.add_samples(ds, pending)
        report.added += len(pending)
        bar.close()
    return report


def _sample(
    name: str, info: store.DatasetInfo, item: SourceItem, ex: Example, kept: tuple[str, ...]
) -> fo.Sample:
    """Write the item's files and build its sample; on failure remove what was written."""
    written: list[Path] = []
    try:
        if ex.image_path is None:
            written.append(store.write_image_file(name, item.key, ex.image))
        image_path = ex.image_path or written[0]
        h, w = ex.hw
        sample = fo.Sample(
            filepath=str(Path(image_path).resolve()),
            key=item.key,
            split=item.split,
            tags=[item.split],
            metadata=fo.ImageMetadata(width=w, height=h, num_channels=3),
        )
        for task in info.tasks:
            label = ex.labels.get(task.name)
            if label is None:
                sample[store.status_field(task.name)] = store.MISSING
                continue
            visible = task.name in kept
            field = store.gt_field(task.name) if visible else store.hidden_field(task.name)
            try:
                path = store.write_label_file(name, field, item.key, task, label, info.depth_unit)
            except ValueError as e:  # a value the store's encoding cannot hold
                raise BadInput(item.labels.get(task.name, item.image), str(e)) from None
            written.append(path)
            sample[field] = store.label_object(task, path, label, info.depth_unit)
            sample[store.status_field(task.name)] = store.LABELED if visible else store.MISSING
        return sample
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
