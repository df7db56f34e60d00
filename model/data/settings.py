"""Partial-label settings: which labels of a labelled source a training image keeps (Sec. 4.1).

- ``full``: every label is kept.
- ``one-label``: each training image keeps exactly one task. Over images that have every task the
  tasks are dealt round-robin over a seeded shuffle, so each task gets the same share (as in the
  published NYUD-v2 split: 265 images per task of 795).
- ``random-labels``: each training image keeps between 1 and T-1 of its tasks: the count is drawn
  uniformly, then the tasks.
- ``few-shot:TASK:K``: TASK is kept on K seeded training images; all other tasks everywhere.

Only training images are thinned; validation images keep everything, so suggestions can be scored.
A draw only chooses among the labels an image actually has. Hidden labels are not thrown away: the
ingest stores them apart as hidden ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hitts.model.data.source import SourceItem

SETTING_KINDS = ("full", "one-label", "random-labels", "few-shot")


@dataclass(frozen=True)
class Setting:
    """A parsed setting. ``task`` and ``k`` are set for few-shot only."""

    kind: str
    task: str | None = None
    k: int | None = None

    def __str__(self) -> str:
        return f"few-shot:{self.task}:{self.k}" if self.kind == "few-shot" else self.kind


def parse_setting(text: str, tasks: tuple[str, ...]) -> Setting:
    """Parse ``full``, ``one-label``, ``random-labels`` or ``few-shot:TASK:K``; ValueError if bad."""
    parts = text.split(":")
    kind = parts[0]
    if kind not in SETTING_KINDS:
        raise ValueError(
            f"unknown setting {text!r}; expected one of full, one-label, random-labels, few-shot:TASK:K"
        )
    if kind != "few-shot":
        if len(parts) != 1:
            raise ValueError(f"setting {kind!r} takes no arguments, got {text!r}")
        if kind in ("one-label", "random-labels") and len(tasks) < 2:
            raise ValueError(
                f"setting {kind!r} needs a source with at least 2 tasks, this one has {list(tasks)}"
            )
        return Setting(kind)
    if len(parts) != 3:
        raise ValueError(f"few-shot setting must be few-shot:TASK:K, got {text!r}")
    task, k_text = parts[1], parts[2]
    if task not in tasks:
        raise ValueError(f"few-shot task {task!r} is not one of the source's tasks {list(tasks)}")
    if not k_text.isdigit() or int(k_text) < 1:
        raise ValueError(f"few-shot K must be a positive integer, got {k_text!r}")
    return Setting(kind, task, int(k_text))


def draw_kept(setting: Setting, items: list[SourceItem], seed: int) -> dict[str, tuple[str, ...]]:
    """Key -> the tasks whose labels stay visible, for every item (train and val).

    Reproducible: the result depends only on the setting, the seed and the items' keys and tasks
    (the items are ordered by key before drawing).
    """
    rng = np.random.default_rng(seed)
    ordered = sorted(items, key=lambda it: it.key)
    kept = {it.key: it.tasks for it in ordered}
    train = [it for it in ordered if it.split == "train"]
    if setting.kind == "full":
        return kept
    if setting.kind == "few-shot":
        having = [it for it in train if setting.task in it.tasks]
        chosen = set()
        if having:
            idx = rng.permutation(len(having))[: setting.k]
            chosen = {having[i].key for i in idx}
        for it in train:
            if setting.task in it.tasks and it.key not in chosen:
                kept[it.key] = tuple(t for t in it.tasks if t != setting.task)
        return kept
    order = rng.permutation(len(train))
    for rank, i in enumerate(order):
        it = train[i]
        present = it.tasks
        if len(present) <= 1:
            continue
        if setting.kind == "one-label":
            # round-robin over the seeded order gives every task the same share
            kept[it.key] = (present[rank % len(present)],)
        else:  # random-labels: 1 .. T-1 of the tasks the image has
            n = int(rng.integers(1, len(present)))
            pick = sorted(rng.choice(len(present), size=n, replace=False).tolist())
            kept[it.key] = tuple(present[j] for j in pick)
    return kept
