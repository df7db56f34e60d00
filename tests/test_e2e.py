"""The whole loop at small scale: ingest with hidden truth -> train -> suggest -> accept through
the review store -> export -> retrain -> suggest; both rounds scored on the hidden labels.

At this size (60 scenes, 3 epochs) one seed's round-1 minus round-0 difference is mostly training
noise, so this test checks the loop's mechanics; examples/e2e_rounds.py measures whether round 1
beats round 0 on every task, over several seeds at a larger scale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import fiftyone as fo
import torch
from fiftyone import ViewField as F

from hitts.app import store
from hitts.app.completed import label_path
from hitts.app.review_store import final_field, read_raw
from hitts.model.train import load_checkpoint

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "e2e_rounds.py"


def _example():
    spec = importlib.util.spec_from_file_location("e2e_rounds", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_review_loop_end_to_end(tmp_path):
    e2e = _example()
    result = e2e.run(
        tmp_path, count=60, size=(32, 48), epochs=3, seed=0, name="t-e2e", control=True
    )
    try:
        ds = fo.load_dataset("t-e2e")
        assert [r["round"] for r in ds.info["hitts"]["rounds"]] == [0, 1]
        assert result["new_round"] == 1
        # round 1 records the reviewed labels it trained on, so round 2 knows its features saw them
        state = load_checkpoint(tmp_path / "round1" / "last.pt")
        assert state["train_config"]["seed"] == 1  # not the teacher's seed 0: a fresh start
        extra = state["extra"]
        assert extra["round"] == 1 and extra["teacher_round"] == 0
        accepted_keys = {
            t: sorted(ds.match(F(store.status_field(t)) == store.ACCEPTED).values("key"))
            for t in result["accepted"]
        }
        assert extra["reviewed_labels"] == accepted_keys
        for task in ("semseg", "depth", "normal", "edge"):
            assert result["accepted"][task] > 0
            assert (
                result["export_sources"][f"{task}:accepted-confident"] == result["accepted"][task]
            )
            status = F(store.status_field(task))
            # what was not reviewed got the new round's suggestion
            assert len(ds.match((status == store.SUGGESTED) & (F(f"{task}_round") == 1))) > 0
            assert len(ds.match((status == store.SUGGESTED) & (F(f"{task}_round") == 0))) == 0
            for r in ("round0", "round1"):  # both rounds scored on the hidden labels
                assert result[r][task]["samples"] > 0
        # an accepted confident region holds the pixels L_p already used at the same weight, so
        # round 1 is the stage-2 model of the copy retrained with nothing reviewed
        plain = load_checkpoint(tmp_path / "round1-plain" / "last.pt")
        assert plain["extra"]["reviewed_labels"] == {t: [] for t in accepted_keys}
        for k, v in state["model"].items():
            assert torch.allclose(v.float(), plain["model"][k].float(), atol=1e-4), k
        assert result["plain"] == result["round1"]
        print(e2e.table(result))
    finally:
        fo.delete_dataset("t-e2e")
        fo.delete_dataset("t-e2e-plain")


def test_whole_accepts_and_fixes_teach_round_1(tmp_path):
    """Accepting whole suggestions and fixing the least confident ones gives round 1 labels beyond
    the confident pixels; the fixed ones are the true labels and are left out of the scores."""
    e2e = _example()
    result = e2e.run(
        tmp_path,
        count=60,
        size=(32, 48),
        epochs=3,
        seed=0,
        name="t-e2e-fix",
        accept="whole",
        review_share=0.3,
        fix_share=0.1,
        control=True,
    )
    try:
        ds = fo.load_dataset("t-e2e-fix")
        state = load_checkpoint(tmp_path / "round1" / "last.pt")
        plain = load_checkpoint(tmp_path / "round1-plain" / "last.pt")
        assert any(  # more labels than the confident pixels: another model
            not torch.allclose(v.float(), plain["model"][k].float(), atol=1e-4)
            for k, v in state["model"].items()
        )
        for task in ("semseg", "depth", "normal", "edge"):
            status = F(store.status_field(task))
            fixed = ds.match(status == store.FIXED)
            assert len(fixed) == result["fixed"][task] > 0
            assert result["export_sources"][f"{task}:accepted"] == result["accepted"][task] > 0
            assert result["export_sources"][f"{task}:fixed"] == result["fixed"][task]
            for sample in fixed:  # the fix is the hidden truth, as stored
                final = read_raw(label_path(sample[final_field(task)]))
                truth = read_raw(label_path(sample[store.hidden_field(task)]))
                assert (final == truth).all()
            assert set(fixed.values("key")) <= set(state["extra"]["reviewed_labels"][task])
            hidden = len(ds.match(F(store.hidden_field(task)) != None))  # noqa: E711
            for r in ("round0", "round1", "plain"):  # fixed labels are not scored
                assert result[r][task]["samples"] == hidden - result["fixed"][task]
    finally:
        fo.delete_dataset("t-e2e-fix")
        fo.delete_dataset("t-e2e-fix-plain")
