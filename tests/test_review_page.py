"""The review page: its handlers called directly, the rendering and brush mapping, the command
line pieces, and the page served for real and driven with gradio_client (with and without login).
"""

from __future__ import annotations

import base64
import io
import re
import socket
from dataclasses import replace
from pathlib import Path

import fiftyone as fo
import httpx
import numpy as np
import pytest
from PIL import Image
from test_review_store import (  # noqa: F401  (fixtures shared with the store tests)
    clone_reviewable,
    review_scenes,
    review_template,
)

from hitts.app import review_page as rp
from hitts.app import review_render as rr
from hitts.app.review_store import read_raw
from hitts.model.data.label_io import read_label
from hitts.model.tasks import DEPTH, NORMAL, SEGMENTATION, TaskSpec, scene_tasks


@pytest.fixture
def rs(review_template, dataset_name):  # noqa: F811  (the imported fixture)
    return clone_reviewable(review_template, dataset_name)


def _sample(rs, sample_id):
    ds = fo.load_dataset(rs.name)
    ds.reload()
    return ds[sample_id]


def panel_image(panels_html: str, elem_id: str) -> np.ndarray | None:
    """The image of one panel of the page's panel grid, decoded."""
    m = re.search(rf'id="{elem_id}"><img[^>]*src="data:image/png;base64,([^"]+)"', panels_html)
    if m is None:
        return None
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(1)))))


def _layer(rs, item, colour, rows=slice(0, 10)) -> np.ndarray:
    """An editor layer as the browser returns it: RGBA at the editor's enlarged size, with the
    rows ``rows`` of the image painted in ``colour``."""
    h, w = read_raw(item.pred_path).shape[:2]
    k = rr.editor_scale(w)
    layer = np.zeros((h * k, w * k, 4), np.uint8)
    layer[rows.start * k : rows.stop * k, :, :3] = colour
    layer[rows.start * k : rows.stop * k, :, 3] = 255
    return layer


# ----------------------------------------------------------------------------------------------
# handlers, called directly


def test_walk_the_queue_and_decide(rs):
    c = rp.Controls(annotator="alice", task="semseg")
    v = rp.start(rs, None, c)
    assert v.annotator == "alice" and v.tau == pytest.approx(0.9)  # the one-label τ of semseg
    first = v.session.item
    assert first.status == "suggested" and "**1 / " in v.counters
    assert v.image.shape == (32, 48, 3) and v.suggestion.shape == (32, 48, 3)
    assert v.editor["background"].shape == (320, 480, 3)  # enlarged 10x for painting
    assert 'id="panel-suggestion"' in v.panels and "floor" in v.panels  # class legend
    np.testing.assert_array_equal(panel_image(v.panels, "panel-image"), v.image)

    v = rp.accept(rs, v.session, c)
    assert "saved accepted" in v.message
    assert _sample(rs, first.sample_id).semseg_status == "accepted"
    second = v.session.item
    assert second.sample_id != first.sample_id and second.confidence >= first.confidence

    c6 = replace(c, tau=0.6)
    v = rp.accept_confident(rs, v.session, c6)
    s = _sample(rs, second.sample_id)
    assert s.semseg_status == "accepted" and s.final_semseg_source == "accepted-confident"
    final = read_label(rs.task("semseg"), s.final_semseg.mask_path)
    assert 0 < (final == -1).mean() < 1

    third = v.session.item
    v = rp.reject(rs, v.session, c)
    assert _sample(rs, third.sample_id).semseg_status == "rejected"
    assert v.session.decided == 3

    v = rp.undo(rs, v.session, c)
    assert v.session.item.sample_id == third.sample_id and "undid reject" in v.message
    assert _sample(rs, third.sample_id).semseg_status == "suggested"
    assert v.session.decided == 2

    v = rp.prev_sample(rs, v.session, c)
    assert v.session.item.sample_id == second.sample_id
    assert "decided by alice" in v.info and "accepted-confident" in v.info
    v = rp.next_sample(rs, v.session, c)
    assert v.session.item.sample_id == third.sample_id
    v = rp.next_sample(rs, v.session, c)  # past the history: the queue again
    assert v.session.item.sample_id not in (first.sample_id, second.sample_id, third.sample_id)


def test_sliders_and_also_show(rs):
    c = rp.Controls(annotator="alice", task="depth", opacity=0.0, tau=0.0)
    v = rp.start(rs, None, c)
    panels, note = rp.restyle(rs, v.session, c)
    np.testing.assert_array_equal(panel_image(panels, "panel-overlay"), v.image)
    assert note.startswith("τ 0.00: 100% of pixels")
    panels, note = rp.restyle(rs, v.session, replace(c, opacity=1.0, tau=0.99))
    np.testing.assert_array_equal(panel_image(panels, "panel-overlay"), v.suggestion)
    assert note.startswith("τ 0.99: 0% of pixels")
    assert " m</span>" in panels  # the depth scale in metres
    assert panel_image(panels, "panel-also") is None  # nothing decided yet
    item = v.session.item
    other = next(t for t in item.gt_paths)
    panels, _ = rp.restyle(rs, v.session, replace(c, also=f"ground truth: {other}"))
    assert panel_image(panels, "panel-also").shape == (32, 48, 3)
    assert rp.restyle(rs, None, c) == ("", "")


def test_fix_paints_classes_and_invalid(rs):
    c = rp.Controls(annotator="alice", task="semseg")
    v = rp.start(rs, None, c)
    item = v.session.item
    pred = read_label(rs.task("semseg"), item.pred_path)
    box = rr.palette(6)[3]  # "box"
    layers = [_layer(rs, item, box, slice(0, 10)), _layer(rs, item, (0, 0, 0), slice(30, 32))]
    v = rp.save_fix(rs, v.session, {"background": None, "layers": layers, "composite": None}, c)
    assert "saved fixed" in v.message, v.message
    s = _sample(rs, item.sample_id)
    assert s.semseg_status == "fixed" and s.final_semseg_source == "fixed"
    final = read_label(rs.task("semseg"), s.final_semseg.mask_path)
    assert np.all(final[:10] == 3) and np.all(final[30:] == -1)
    np.testing.assert_array_equal(final[10:30], pred[10:30])  # unpainted keeps the suggestion

    item = v.session.item
    bad = {"layers": [_layer(rs, item, (10, 200, 30))]}
    v = rp.save_fix(rs, v.session, bad, c)
    assert "#0ac81e" in v.message and "not semseg swatches" in v.message
    v = rp.save_fix(rs, v.session, {"layers": []}, c)
    assert "nothing is painted" in v.message
    v = rp.save_fix(rs, v.session, None, c)
    assert "nothing is painted" in v.message
    assert _sample(rs, item.sample_id).semseg_status == "suggested"

    cd = rp.Controls(annotator="alice", task="depth")
    v = rp.queue_changed(rs, v.session, cd)
    item = v.session.item
    pred = read_label(rs.task("depth"), item.pred_path, depth_unit=rs.info.depth_unit)
    v = rp.save_fix(rs, v.session, {"layers": [_layer(rs, item, (0, 0, 0), slice(0, 16))]}, cd)
    s = _sample(rs, item.sample_id)
    final = read_label(rs.task("depth"), s.final_depth.map_path, depth_unit=rs.info.depth_unit)
    assert np.all(final[:16] == 0)
    np.testing.assert_allclose(final[16:], pred[16:], atol=1e-3)


def test_two_annotators_get_different_samples_and_see_conflicts(rs):
    ca = rp.Controls(annotator="alice", task="semseg")
    cb = rp.Controls(annotator="bob", task="semseg")
    a = rp.start(rs, None, ca)
    b = rp.start(rs, None, cb)
    shared = a.session.item
    assert b.session.item.sample_id != shared.sample_id
    assert "held by others: 1" in b.counters
    b = rp.open_key(rs, b.session, shared.key, cb)
    assert b.session.item.sample_id == shared.sample_id
    assert "alice has this sample open" in b.message
    b = rp.reject(rs, b.session, cb)
    assert "saved rejected" in b.message
    a = rp.accept(rs, a.session, ca)
    assert "conflict" in a.message and "bob" in a.message and "rejected" in a.message
    assert a.session.item.sample_id == shared.sample_id and "decided by bob" in a.info
    s = _sample(rs, shared.sample_id)
    assert s.semseg_status == "rejected" and s.semseg_reviewed_by == "bob"
    # bob undoes; alice's view is stale again, so her next decision is refused too
    b = rp.undo(rs, b.session, cb)
    a = rp.accept(rs, a.session, ca)
    assert "conflict" in a.message
    a = rp.accept(rs, a.session, ca)  # now on the fresh state: it goes through
    assert "saved accepted" in a.message
    assert _sample(rs, shared.sample_id).semseg_reviewed_by == "alice"


def test_bad_states_give_messages(rs):
    c = rp.Controls(annotator="alice", task="normal")
    v = rp.start(rs, None, c)
    gone = v.session.item
    fo.load_dataset(rs.name).delete_samples([gone.sample_id])
    v = rp.accept(rs, v.session, c)
    assert "deleted" in v.message and v.session.item.sample_id != gone.sample_id
    assert rp.open_key(rs, v.session, "no-such-key", c).message.count("no sample with key") == 1
    lab = rp.queue_changed(rs, v.session, replace(c, status="labeled"))
    assert lab.session.item.status == "labeled"
    assert (
        "no suggestion to decide on"
        in rp.accept(rs, lab.session, replace(c, status="labeled")).message
    )
    empty = rp.queue_changed(rs, v.session, replace(c, conf_min=0.99))
    assert empty.info == "no sample open" and "queue is empty" in empty.message
    assert "nothing to undo" in rp.undo(rs, rp.Session(), c).message
    assert "no sample is open" in rp.reject(rs, empty.session, replace(c, conf_min=0.99)).message
    # a missing suggestion file: shown as a problem, nothing crashes, nothing is stored
    v = rp.queue_changed(rs, v.session, c)
    item = v.session.item
    Path(item.conf_path).rename(item.conf_path + ".away")
    try:
        v = rp.prev_sample(rs, rp.next_sample(rs, v.session, c).session, c)
        assert "cannot read" in v.message
        v = rp.accept_confident(rs, v.session, c)
        assert "not saved" in v.message
    finally:
        Path(item.conf_path + ".away").rename(item.conf_path)
    assert _sample(rs, item.sample_id).normal_status == "suggested"
    # names are escaped on the page
    evil = rp.start(rs, None, replace(c, annotator="<b>x</b>"))
    assert rp.annotator_name(replace(c, annotator="<b>x</b>"), None) == "<b>x</b>"
    assert "<b>" not in evil.message


# ----------------------------------------------------------------------------------------------
# rendering and the brush


def test_palette_and_label_colours():
    for n in (2, 6, 21, 60):
        pal = rr.palette(n).astype(float)
        d = np.sqrt(((pal[:, None] - pal[None]) ** 2).sum(-1)) + np.eye(n) * 1e9
        assert d.min() >= rr.MIN_COLOUR_DISTANCE
        assert np.sqrt((pal**2).sum(-1)).min() >= rr.MIN_COLOUR_DISTANCE  # never black
    with pytest.raises(ValueError, match="more than"):
        rr.palette(300)
    seg = TaskSpec("s", SEGMENTATION, ("a", "b", "c"))
    ids = np.array([[0, 1], [2, 255]], np.uint8)
    rgb = rr.classes_rgb(seg, ids)
    assert tuple(rgb[1, 1]) == rr.INVALID_RGB and tuple(rgb[0, 1]) == tuple(rr.palette(3)[1])
    depth = np.array([[0, 1000], [2000, 3000]], np.uint16)
    span = rr.depth_range(depth, 0.001)
    out = rr.depth_rgb(depth, 0.001, span)
    assert tuple(out[0, 0]) == (0, 0, 0) and len({tuple(p) for p in out.reshape(-1, 3)}) == 4
    assert "m</span>" in rr.depth_legend_html(span)
    assert rr.editor_scale(48) == 10 and rr.editor_scale(640) == 1
    assert rr.upscale(np.zeros((2, 3, 3), np.uint8), 4).shape == (8, 12, 3)


def test_paint_to_label_maps_swatches_back():
    tasks = {t.name: t for t in scene_tasks()}
    seg = tasks["semseg"]
    pred = np.full((4, 6), 1, np.uint8)
    layer = np.zeros((40, 60, 4), np.uint8)  # 10x, as the page's editor
    layer[:10, :, :3] = rr.palette(6)[5]
    layer[:10, :, 3] = 255
    layer[30:, :, 3] = 255  # black: invalid
    layer[10:20, :, :3] = rr.palette(6)[2]
    layer[10:20, :, 3] = 60  # faint: not painted
    out = rr.paint_to_label(seg, pred, [layer])
    assert np.all(out[0] == 5) and np.all(out[3] == 255) and np.all(out[1:3] == 1)
    assert pred[0, 0] == 1  # the input is left alone
    normal = tasks["normal"]
    npred = np.full((4, 6, 3), 128, np.uint8)
    nout = rr.paint_to_label(normal, npred, [layer[..., :3].copy() * 0 + np.uint8(0)])
    assert np.all(nout == 0)  # an opaque RGB layer marks everything invalid
    with pytest.raises(rr.UnknownColour, match="#ff00ff"):
        bad = layer.copy()
        bad[:10, :, :3] = (255, 0, 255)
        rr.paint_to_label(seg, pred, [bad])
    with pytest.raises(rr.UnknownColour):
        rr.paint_to_label(normal, npred, [layer])  # class colours are not depth/normal swatches
    assert rr.brush_colours(TaskSpec("d", DEPTH)) == [rr.INVALID_HEX]
    assert rr.brush_colours(TaskSpec("n", NORMAL)) == [rr.INVALID_HEX]


# ----------------------------------------------------------------------------------------------
# the command line pieces


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_review_parser_and_bad_input(tmp_path, rs):
    from hitts.app import cli

    parser = cli.build_parser()
    args = parser.parse_args(["review", "ds", "--auth", "ann:pw", "--port", "7999"])
    assert (args.name, args.host, args.port, args.func) == ("ds", "127.0.0.1", 7999, cli.cmd_review)
    auth_file = tmp_path / "auth.txt"
    auth_file.write_text("# annotators\nalice:s3cret:with-colon\n\nbob: pw\n")
    assert rp.parse_auth(["carol:x"], str(auth_file)) == [
        ("carol", "x"), ("alice", "s3cret:with-colon"), ("bob", " pw")
    ]  # fmt: skip
    assert rp.parse_auth(None, None) is None
    with pytest.raises(ValueError, match="USER:PASS"):
        rp.parse_auth(["nocolon"], None)
    with pytest.raises(ValueError, match="auth file not found"):
        rp.parse_auth(None, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no dataset named 'no-such'"):
        rp.cmd_review(parser.parse_args(["review", "no-such"]))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port}"):
            rp.cmd_review(parser.parse_args(["review", rs.name, "--port", str(port)]))


# ----------------------------------------------------------------------------------------------
# a real server


@pytest.fixture
def served(rs):
    """The page of ``rs`` on a free port; yields (store, url)."""
    demo = rp.build_page(rs)
    url = rp.launch(demo, host="127.0.0.1", port=_free_port())
    yield rs, url
    demo.close()


def _args(annotator: str, task: str = "semseg", **kw) -> list:
    return rp.Controls(annotator=annotator, task=task, **kw).inputs()


def _client(url, **kw):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, analytics_enabled=False, **kw)


def _key(info: str) -> str:
    return re.match(r"\*\*(.+?)\*\*", info).group(1)


def test_served_page_with_gradio_client(served, tmp_path):
    rs, url = served
    a, b = _client(url), _client(url)
    info_a, message, counters, panels, note, editor, tau, name = a.predict(
        *_args("alice"), api_name="/start"
    )
    assert name == "alice" and tau == pytest.approx(0.9) and "**1 / " in counters
    assert panel_image(panels, "panel-suggestion").shape == (32, 48, 3)
    info_b = b.predict(*_args("bob"), api_name="/start")[0]
    assert _key(info_a) != _key(info_b)  # claims: different samples
    ds = fo.load_dataset(rs.name)
    sample = ds.match({"key": _key(info_a)}).first()
    out = a.predict(*_args("alice"), api_name="/accept")
    assert "saved accepted" in out[1]
    sample.reload()
    assert sample.semseg_status == "accepted" and sample.semseg_reviewed_by == "alice"
    assert Path(sample.final_semseg.mask_path).is_file()
    # a fix sent the way the browser sends it: layer files
    current = ds.match({"key": _key(out[0])}).first()
    layer = np.zeros((320, 480, 4), np.uint8)
    layer[:50, :, :3] = rr.palette(6)[4]
    layer[:50, :, 3] = 255
    layer_path = tmp_path / "layer.png"
    Image.fromarray(layer).save(layer_path)
    from gradio_client import handle_file

    editor_value = {"background": handle_file(str(layer_path)), "layers": [handle_file(str(layer_path))],
                    "composite": None}  # fmt: skip
    out = a.predict(editor_value, *_args("alice"), api_name="/fix")
    assert "saved fixed" in out[1], out[1]
    current.reload()
    final = read_label(rs.task("semseg"), current.final_semseg.mask_path)
    assert np.all(final[:5] == 4)
    out = a.predict(*_args("alice"), api_name="/undo")
    assert "undid fixed" in out[1]
    current.reload()
    assert current.semseg_status == "suggested" and current.final_semseg is None


def test_served_page_with_login(rs):
    demo = rp.build_page(rs, login=True)
    url = rp.launch(
        demo, host="127.0.0.1", port=_free_port(), auth=[("alice", "pw-a"), ("bob", "pw-b")]
    )
    try:
        r = httpx.post(url + "login", data={"username": "alice", "password": "wrong"})
        assert r.status_code == 400 and "Incorrect credentials" in r.text
        assert httpx.get(url + "config").status_code == 401
        with pytest.raises(Exception, match="(?i)credentials|401|login"):
            _client(url, auth=("alice", "wrong"))
        client = _client(url, auth=("bob", "pw-b"))
        out = client.predict(*_args("someone-else"), api_name="/start")
        assert out[-1] == "bob"  # the login name, not what the box says
        key = _key(out[0])
        client.predict(*_args("someone-else"), api_name="/reject")
        s = fo.load_dataset(rs.name).match({"key": key}).first()
        assert s.semseg_status == "rejected" and s.semseg_reviewed_by == "bob"
    finally:
        demo.close()
