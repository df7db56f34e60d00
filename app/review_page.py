"""The review page (DESIGN.md step 4): walk a queue of suggestions and accept, reject or fix them.

:func:`build_page` lays the page out and returns the ``gr.Blocks``; the handlers are plain
functions of (store, per-user :class:`Session`, :class:`Controls`) returning a :class:`View`, so
tests call them without a server. Every decision goes to FiftyOne at once through
:class:`~hitts.app.review_store.ReviewStore`; the per-user ``gr.State`` holds only where the
annotator is (current item and its arrays, queue cursor, history) and what their undo needs.

Choices made here where the product spec is open:

- After a decision the page moves on to the next item. Undo reverts your latest decision still on
  your stack and shows that sample again. Prev/Next first walk the samples you opened this session,
  then Next continues the queue.
- The fix brush paints on a layer over the suggestion. Segmentation-like tasks: the class colours
  (the legend names them) and black for "invalid"; the editor's eraser removes strokes, so erased
  pixels keep the suggestion. Depth and normals: the brush (black) marks pixels invalid.
- The τ slider is set to the τ the suggestions were made with (``<task>_tau``) when the queue's
  task changes, and stays where the annotator puts it afterwards.
- Without a login the annotator types a name (default ``guest-<id>``); with ``--auth`` the login
  name goes on every decision and the box is read-only.
- A claim is released when the annotator moves on or closes the tab (Gradio's unload event,
  once the server notices the tab is gone); a claim whose server died lapses after
  :data:`~hitts.app.review_store.CLAIM_SECONDS`.
- The image panels are small PNGs inline in one HTML block (no file per image on the server).
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import socket
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import gradio as gr
import numpy as np

from hitts.app import review_render as rr
from hitts.app import store
from hitts.app.review_store import (
    QUEUE_STATUSES,
    Cursor,
    Item,
    QueueFilter,
    ReviewStore,
    UndoRecord,
    confident_mask,
    read_raw,
)
from hitts.model.data.errors import BadInput
from hitts.model.data.label_io import read_image

log = logging.getLogger(__name__)

LOWEST_FIRST = "lowest confidence first"
HIGHEST_FIRST = "highest confidence first"
FINAL_CHOICE = "training label (final)"
SHORTCUTS = (
    ("A", "accept", "btn-accept"),
    ("C", "accept confident", "btn-confident"),
    ("R", "reject", "btn-reject"),
    ("F", "save fix", "btn-fix"),
    ("U", "undo", "btn-undo"),
    ("N", "next", "btn-next"),
    ("P", "previous", "btn-prev"),
)
EDITOR_HEIGHT = 420  # px
CONCURRENCY = 16  # events served at once (threads); the database does the locking
HISTORY = 500  # samples a session remembers for Prev
UNDO_DEPTH = 100

CSS = """
.panels { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 0.6rem; }
.panel { margin: 0; }
.panel img { width: 100%; image-rendering: pixelated; border-radius: 4px; display: block; }
.panel .empty { aspect-ratio: 3 / 2; display: flex; align-items: center; justify-content: center;
  background: var(--block-background-fill); color: var(--body-text-color-subdued);
  border: 1px dashed var(--border-color-primary); border-radius: 4px; }
.panel figcaption { font-size: 0.85rem; font-weight: 600; margin-top: 0.2rem; }
.legend { font-size: 0.8rem; display: flex; flex-wrap: wrap; gap: 0.2rem 0.6rem; align-items: center; }
.legend .swatch i { display: inline-block; width: 0.85rem; height: 0.85rem; margin-right: 0.2rem;
  vertical-align: -0.15rem; border: 1px solid #888; }
.legend .bar { display: inline-block; width: 7rem; height: 0.75rem; border: 1px solid #888; }
#fix-editor canvas { image-rendering: pixelated; }
#review-message .warn { color: #b45309; font-weight: 600; }
#review-message .error { color: #b91c1c; font-weight: 600; }
#review-message .ok { color: #15803d; }
kbd { border: 1px solid #999; border-radius: 3px; padding: 0 0.3rem; font-size: 0.85rem; }
"""

# Registered once per page: a key press outside text fields clicks the matching button.
SHORTCUT_JS = """
() => {
  if (window.__hittsReviewKeys) return;
  window.__hittsReviewKeys = true;
  const keys = __KEYS__;
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    const t = e.target;
    const tag = t && t.tagName ? t.tagName : "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (t && t.isContentEditable)) return;
    const id = keys[e.key.toLowerCase()];
    if (!id) return;
    const el = document.getElementById(id);
    const btn = el && el.tagName === "BUTTON" ? el : el && el.querySelector("button");
    if (btn && !btn.disabled) { e.preventDefault(); btn.click(); }
  });
}
""".replace("__KEYS__", json.dumps({k.lower(): elem for k, _, elem in SHORTCUTS}))


# ----------------------------------------------------------------------------------------------
# per-user state and what a handler returns


@dataclass
class Shown:
    """The arrays of the item on screen, rendered once; sliders re-mix them."""

    image: np.ndarray  # (H, W, 3) uint8
    suggestion: np.ndarray | None  # (H, W, 3) display colours of the suggestion
    encoded: np.ndarray | None  # the suggestion in the stored encoding
    conf: np.ndarray | None  # (H, W) uint8 confidence * 255
    scores: dict[str, np.ndarray | None]  # "conf" / "mf" / "fine" -> (H, W, 3) colours
    legend: str = ""


@dataclass
class Session:
    """One annotator's place in the queue; lives in ``gr.State``."""

    user: str = ""
    queue: QueueFilter | None = None
    item: Item | None = None
    shown: Shown | None = None
    cursor: Cursor | None = None
    history: list[tuple[str, str]] = field(default_factory=list)  # (sample id, task) opened
    position: int = -1  # index of the current item in history
    undo: list[UndoRecord] = field(default_factory=list)
    decided: int = 0
    brush_task: str = ""  # the task whose palette the editor's brush has


@dataclass
class Controls:
    """The values of the page's controls, in the order every handler receives them."""

    annotator: str = ""
    task: str = ""
    status: str = store.SUGGESTED
    conf_min: float = 0.0
    conf_max: float = 1.0
    order: str = LOWEST_FIRST
    tau: float = 0.5
    opacity: float = 0.5
    also: str = FINAL_CHOICE

    def inputs(self) -> list:
        """The values in the order the page's endpoints take them (for API clients)."""
        return [getattr(self, f.name) for f in fields(self)]

    def queue(self) -> QueueFilter:
        lo, hi = sorted((float(self.conf_min), float(self.conf_max)))
        return QueueFilter(self.task, self.status, lo, hi, self.order == HIGHEST_FIRST)


@dataclass
class View:
    """Everything a handler sets on the page. The image arrays are kept for tests; the page
    gets them as :attr:`panels` HTML."""

    session: Session
    info: str = ""
    message: str = ""
    counters: str = ""
    panels: str = ""
    preview_note: str = ""
    image: np.ndarray | None = None
    suggestion: np.ndarray | None = None
    overlay: np.ndarray | None = None
    preview: np.ndarray | None = None
    also: np.ndarray | None = None
    editor: dict | None = None
    tau: float | None = None  # set the τ slider (None: leave it)
    annotator: str | None = None  # set the name box (None: leave it)


def _message(kind: str, text: str) -> str:
    return f'<span class="{kind}">{html.escape(text)}</span>' if text else ""


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


# ----------------------------------------------------------------------------------------------
# handlers


def annotator_name(c: Controls, request: gr.Request | None) -> str:
    """The login name when there is a login, else the name typed on the page."""
    username = getattr(request, "username", None) if request is not None else None
    if username:
        return str(username)
    return (c.annotator or "").strip() or "anonymous"


def start(rs: ReviewStore, session: Session | None, c: Controls, request=None) -> View:
    """Page load: who the annotator is, the τ of the task, and the first item."""
    name = annotator_name(c, request)
    if name == "anonymous" and getattr(request, "session_hash", None):
        name = f"guest-{request.session_hash[:6]}"
    view = queue_changed(rs, session, replace(c, annotator=name), request)
    view.annotator = name
    return view


def queue_changed(rs: ReviewStore, session: Session | None, c: Controls, request=None) -> View:
    """The task, status, confidence range or order changed: the queue from its beginning."""
    session = session or Session()
    task_changed = session.queue is None or session.queue.task != c.task
    tau = _default_tau(rs, c.task) if task_changed else None
    if tau is not None:
        c = replace(c, tau=tau)
    session = _session(rs, session, c, request)
    session.cursor = None
    view = _advance(rs, session, c)
    view.tau = tau
    return view


def next_sample(rs: ReviewStore, session: Session | None, c: Controls, request=None) -> View:
    session = _session(rs, session, c, request)
    if 0 <= session.position < len(session.history) - 1:
        session.position += 1
        return _show_history(rs, session, c)
    return _advance(rs, session, c)


def prev_sample(rs: ReviewStore, session: Session | None, c: Controls, request=None) -> View:
    session = _session(rs, session, c, request)
    if session.position <= 0:
        return _render(rs, session, c, _message("warn", "this is the first sample you opened"))
    session.position -= 1
    return _show_history(rs, session, c)


def open_key(rs: ReviewStore, session: Session | None, key: str, c: Controls, request=None) -> View:
    """Open a sample by its source key (as the FiftyOne App shows it), in or out of the queue."""
    session = _session(rs, session, c, request)
    sample_id = rs.find_key((key or "").strip())
    if sample_id is None:
        return _render(rs, session, c, _message("error", f"no sample with key {key!r}"))
    _leave(rs, session, keep=(sample_id, c.task))
    return _show(rs, session, c, rs.claim(sample_id, c.task, session.user), record=True)


def accept(rs: ReviewStore, session: Session | None, c: Controls, request=None) -> View:
    """The whole suggestion becomes the training label."""
    return _decide(rs, session, c, request, lambda item, user: rs.accept(item, user))


def accept_confident(rs: ReviewStore, session: Session | None, c: Controls, request=None) -> View:
    """Only pixels with confidence > the τ slider are kept; the rest is invalid."""
    return _decide(
        rs, session, c, request, lambda item, user: rs.accept_confident(item, user, float(c.tau))
    )


def reject(rs: ReviewStore, session: Session | None, c: Controls, request=None) -> View:
    return _decide(rs, session, c, request, lambda item, user: rs.reject(item, user))


def save_fix(
    rs: ReviewStore, session: Session | None, editor: dict | None, c: Controls, request=None
) -> View:
    """Apply the editor's strokes (RGBA layers) to the suggestion and store it as ``fixed``."""

    def fix(item: Item, user: str):
        layers = list((editor or {}).get("layers") or [])
        label = rr.paint_to_label(rs.task(item.task), read_raw(item.pred_path), layers)
        return rs.fix(item, user, label)

    return _decide(rs, session, c, request, fix)


def undo(rs: ReviewStore, session: Session | None, c: Controls, request=None) -> View:
    """Revert your latest decision (version-checked) and show that sample again."""
    session = _session(rs, session, c, request)
    if not session.undo:
        return _render(rs, session, c, _message("warn", "nothing to undo"))
    record = session.undo.pop()
    outcome = rs.undo(record, session.user)
    if not outcome.ok:
        return _render(
            rs, session, c, _message("error" if outcome.gone else "warn", outcome.message)
        )
    session.decided = max(0, session.decided - 1)
    where = (record.sample_id, record.task)
    _leave(rs, session, keep=where)
    item = rs.load(*where)
    seen = where in session.history
    if seen:  # back to where the decision was made: what was opened after it is forgotten
        session.position = len(session.history) - 1 - session.history[::-1].index(where)
        del session.history[session.position + 1 :]
    if item is not None:
        session.cursor = item.cursor  # Next continues the queue from the reverted sample
    c = replace(c, task=record.task)
    return _show(rs, session, c, item, _message("ok", outcome.message), record=not seen)


def restyle(rs: ReviewStore, session: Session | None, c: Controls) -> tuple[str, str]:
    """A slider or the "also show" choice moved: the panels again, and the τ note."""
    if session is None or session.item is None or session.shown is None:
        return "", ""
    view = View(session=session)
    _fill_panels(rs, view, c)
    return view.panels, view.preview_note


# ----------------------------------------------------------------------------------------------
# handler internals


def _session(rs: ReviewStore, session: Session | None, c: Controls, request) -> Session:
    session = session or Session()
    user = annotator_name(c, request)
    item = session.item
    if session.user and user != session.user and item is not None:  # renamed: move the claim
        rs.release(item.sample_id, item.task, session.user)
        rs.claim(item.sample_id, item.task, user)
    session.user = user
    if session.queue != c.queue():
        session.queue = c.queue()
        session.cursor = None
    return session


def _default_tau(rs: ReviewStore, task: str) -> float:
    doc = rs.coll.find_one({f"{task}_tau": {"$ne": None}}, {f"{task}_tau": 1})
    return float(doc[f"{task}_tau"]) if doc else 0.5


def _leave(rs: ReviewStore, session: Session, keep: tuple[str, str] | None = None) -> None:
    """Release the claim on the item being left (unless it is the one shown next)."""
    item = session.item
    if item is not None and (item.sample_id, item.task) != keep:
        rs.release(item.sample_id, item.task, session.user)


def _advance(rs: ReviewStore, session: Session, c: Controls, note: str = "") -> View:
    """Claim and show the next free queue item after the cursor."""
    try:
        item = rs.next_item(session.queue, session.user, session.cursor)
    except ValueError as e:
        return _render(rs, session, c, _message("error", str(e)))
    _leave(rs, session, keep=None if item is None else (item.sample_id, item.task))
    if item is None:
        session.item, session.shown = None, None
        q = session.queue
        empty = (
            f"the queue is empty: no {q.task} sample is {q.status} with confidence "
            f"{q.conf_min:.2f}–{q.conf_max:.2f} that someone else is not reviewing"
        )
        if not rs.coll.find_one({store.pred_field(q.task): {"$ne": None}}, {"_id": 1}):
            empty += f" (dataset {rs.name!r} has no {q.task} suggestions yet: run hitts suggest)"
        return _render(rs, session, c, _join(note, _message("warn", empty)))
    session.cursor = item.cursor
    return _show(rs, session, c, item, note, record=True)


def _show_history(rs: ReviewStore, session: Session, c: Controls) -> View:
    sample_id, task = session.history[session.position]
    _leave(rs, session, keep=(sample_id, task))
    item = rs.claim(sample_id, task, session.user)
    return _show(rs, session, replace(c, task=task), item, record=False)


def _show(
    rs: ReviewStore,
    session: Session,
    c: Controls,
    item: Item | None,
    note: str = "",
    *,
    record: bool,
) -> View:
    if item is None:
        session.item, session.shown = None, None
        gone = _message("error", "that sample no longer exists (it was deleted from the dataset)")
        return _render(rs, session, c, _join(note, gone))
    if record:
        session.history.append((item.sample_id, item.task))
        del session.history[:-HISTORY]
        session.position = len(session.history) - 1
    session.item = item
    problems: list[str] = []
    session.shown = _load_arrays(rs, item, problems)
    if rs.held_by_other(item, session.user):
        problems.append(
            f"{item.claimed_by} has this sample open (since {item.claimed_at:%H:%M:%S} UTC); "
            "you can still decide, and whichever decision comes second is refused"
        )
    return _render(rs, session, c, _join(note, _message("warn", "; ".join(problems))))


def _decide(rs: ReviewStore, session: Session | None, c: Controls, request, action) -> View:
    session = _session(rs, session, c, request)
    item = session.item
    if item is None:
        return _render(rs, session, c, _message("warn", "no sample is open"))
    if not item.has_suggestion:
        text = f"{item.key}: {item.task} is {item.status}, with no suggestion to decide on"
        return _render(rs, session, c, _message("warn", text))
    try:
        outcome = action(item, session.user)
    except (ValueError, FileNotFoundError, BadInput) as e:  # UnknownColour is a ValueError
        log.warning("review of %s/%s not saved: %s", item.key, item.task, e)
        return _render(rs, session, c, _message("error", f"not saved: {e}"))
    if not outcome.ok:
        log.info("review of %s/%s refused: %s", item.key, item.task, outcome.message)
        if outcome.gone:
            session.item, session.shown = None, None
            return _advance(rs, session, c, _message("error", outcome.message))
        fresh = rs.load(item.sample_id, item.task)  # show the newer state the conflict is about
        return _show(rs, session, c, fresh, _message("warn", outcome.message), record=False)
    session.undo.append(outcome.undo)
    del session.undo[:-UNDO_DEPTH]
    session.decided += 1
    session.item = None  # the decision released the claim
    done = _message("ok", f"saved {outcome.message}")
    if session.position < len(session.history) - 1:  # decided while walking back: go forward
        session.position += 1
        view = _show_history(rs, session, c)
        view.message = _join(done, view.message)
        return view
    return _advance(rs, session, c, done)


def _read(path: str | None, problems: list[str], reader=read_raw):
    if not path:
        return None
    try:
        return reader(path)
    except (FileNotFoundError, BadInput, OSError) as e:
        problems.append(f"cannot read {path}: {e}")
        return None


def _load_arrays(rs: ReviewStore, item: Item, problems: list[str]) -> Shown | None:
    image = _read(item.filepath, problems, read_image)
    if image is None:
        return None
    task = rs.task(item.task)
    hw = image.shape[:2]
    encoded = _read(item.pred_path, problems)
    if encoded is not None and encoded.shape[:2] != hw:
        problems.append(f"the suggestion is {encoded.shape[:2]}, the image {hw}: not shown")
        encoded = None
    scores: dict[str, np.ndarray | None] = {}
    conf = None
    for name, path in (("conf", item.conf_path), ("mf", item.mf_path), ("fine", item.fine_path)):
        arr = _read(path, problems)
        ok = arr is not None and arr.shape == hw
        scores[name] = rr.score_rgb(arr) if ok else None
        if name == "conf" and ok:
            conf = arr
    suggestion = None if encoded is None else rr.label_rgb(task, encoded, rs.info.depth_unit)
    legend = "" if encoded is None else rr.label_legend_html(task, encoded, rs.info.depth_unit)
    return Shown(image, suggestion, encoded, conf, scores, legend)


def _also(rs: ReviewStore, item: Item, c: Controls) -> np.ndarray | None:
    """The extra panel: the training label decided so far, or a task's ground truth."""
    if c.also == FINAL_CHOICE:
        task, path = rs.task(item.task), item.final_path
    else:
        name = (c.also or "").removeprefix("ground truth: ")
        if name not in rs.tasks:
            return None
        task, path = rs.task(name), item.gt_paths.get(name)
    arr = _read(path, [])
    return None if arr is None else rr.label_rgb(task, arr, rs.info.depth_unit)


def _fill_panels(rs: ReviewStore, view: View, c: Controls) -> None:
    """The mixed images (overlay, τ preview) and the panel grid, from the session's arrays."""
    shown, item = view.session.shown, view.session.item
    view.image, view.suggestion = shown.image, shown.suggestion
    if shown.suggestion is not None:
        view.overlay = rr.blend(shown.image, shown.suggestion, float(c.opacity))
        if shown.conf is not None:
            mask = confident_mask(shown.conf, float(c.tau))
            view.preview = rr.confident_preview(shown.image, shown.suggestion, mask)
            view.preview_note = (
                f"τ {float(c.tau):.2f}: {100 * mask.mean():.0f}% of pixels are confident; "
                "**Accept confident** keeps them and makes the dark ones invalid"
            )
    view.also = _also(rs, item, c)
    also_caption = c.also if c.also != FINAL_CHOICE else f"training label (final_{item.task})"
    score = rr.score_legend_html()
    view.panels = rr.panels_html([
        ("panel-image", "Image", view.image, ""),
        ("panel-suggestion", f"Suggestion ({item.task})", view.suggestion, shown.legend),
        ("panel-overlay", f"Overlay (opacity {float(c.opacity):.2f})", view.overlay, ""),
        ("panel-preview", f"τ preview: kept where conf > {float(c.tau):.2f}", view.preview, ""),
        ("panel-conf", "Confidence", shown.scores.get("conf"), score),
        ("panel-mf", "Global-token score M_f", shown.scores.get("mf"), score),
        ("panel-fine", "Fine-grained token score", shown.scores.get("fine"), score),
        ("panel-also", also_caption, view.also, ""),
    ])  # fmt: skip


def _render(rs: ReviewStore, session: Session, c: Controls, message: str) -> View:
    view = View(session=session, message=message)
    view.counters = _counters(rs, session)
    item, shown = session.item, session.shown
    if item is None:
        view.info = "no sample open"
        return view
    view.info = _info(item)
    if shown is None:
        return view
    _fill_panels(rs, view, c)
    if shown.suggestion is not None:
        k = rr.editor_scale(shown.image.shape[1])
        background = rr.upscale(rr.blend(shown.image, shown.suggestion, 0.6), k)
        view.editor = {"background": background, "layers": [], "composite": None}
    return view


def _info(item: Item) -> str:
    e = html.escape
    parts = [f"**{e(item.key)}**", e(item.task), f"status **{e(item.status)}**"]
    if item.round is not None:
        parts.append(f"round {item.round}")
    if item.confidence is not None:
        parts.append(f"mean confidence {item.confidence:.3f}")
    if item.coverage is not None and item.tau is not None:
        parts.append(f"{100 * item.coverage:.0f}% above suggest's τ {item.tau:.2f}")
    parts.append(f"version {item.version}")
    text = " · ".join(parts)
    if item.reviewed_by:
        at = f" at {item.reviewed_at:%Y-%m-%d %H:%M:%S} UTC" if item.reviewed_at else ""
        source = f" ({e(item.final_source)})" if item.final_source else ""
        text += f"  \ndecided by {e(item.reviewed_by)}{at}{source}"
    return text


def _counters(rs: ReviewStore, session: Session) -> str:
    q = session.queue
    if q is None or not q.task:
        return ""
    try:
        counts = rs.counts(q, session.user, session.item)
    except ValueError as e:
        return html.escape(str(e))
    where = (
        f"**{counts.position} / {counts.total}**" if counts.position else f"{counts.total} in it"
    )
    return "  \n".join([
        f"Queue ({q.task}, {q.status}, confidence {q.conf_min:.2f}–{q.conf_max:.2f}): {where}",
        f"held by others: {counts.claimed_by_others} · you decided {session.decided} this session",
        "still to review: " + " · ".join(f"{t} {n}" for t, n in counts.remaining.items()),
    ])  # fmt: skip


# ----------------------------------------------------------------------------------------------
# layout


def _brush(task, width: int = 480) -> gr.Brush:
    colours = rr.brush_colours(task)
    size = max(2, width // 40)  # about 2.5% of the (enlarged) image width
    return gr.Brush(colors=colours, default_color=colours[0], color_mode="fixed", default_size=size)


def _outputs(rs: ReviewStore, view: View) -> tuple:
    """The View as the values of the page's outputs (see ``outputs`` in :func:`build_page`)."""
    keep = gr.update()
    session = view.session
    editor = view.editor
    item_task = session.item.task if session.item is not None else ""
    if editor is not None and item_task and item_task != session.brush_task:
        session.brush_task = item_task  # another palette: send the brush with the value
        width = editor["background"].shape[1]
        editor = gr.ImageEditor(value=editor, brush=_brush(rs.task(item_task), width), format="png")
    return (
        session,
        view.info,
        view.message,
        view.counters,
        view.panels,
        view.preview_note,
        editor,
        keep if view.tau is None else view.tau,
        keep if view.annotator is None else view.annotator,
    )


def build_page(rs: ReviewStore, *, login: bool = False) -> gr.Blocks:
    """The review page of one dataset. ``login``: the annotator name comes from the login."""
    tasks = list(rs.tasks)
    first = tasks[0]
    with gr.Blocks(title=f"hitts review · {rs.name}", analytics_enabled=False) as demo:
        session = gr.State(None)
        gr.Markdown(f"## Review suggestions · dataset `{rs.name}`")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=260):
                annotator = gr.Textbox(
                    label="Annotator", interactive=not login, elem_id="annotator",
                    info="from your login" if login else "your name on every decision",
                )  # fmt: skip
                task = gr.Dropdown(tasks, value=first, label="Task", elem_id="queue-task")
                status = gr.Dropdown(
                    list(QUEUE_STATUSES),
                    value=store.SUGGESTED,
                    label="Status",
                    elem_id="queue-status",
                )
                conf_min = gr.Slider(
                    0, 1, value=0, step=0.01, label="Confidence from", elem_id="conf-min"
                )
                conf_max = gr.Slider(
                    0, 1, value=1, step=0.01, label="Confidence to", elem_id="conf-max"
                )
                order = gr.Radio(
                    [LOWEST_FIRST, HIGHEST_FIRST],
                    value=LOWEST_FIRST,
                    label="Order",
                    elem_id="order",
                )
                counters = gr.Markdown(elem_id="counters")
                key_box = gr.Textbox(
                    label="Open sample by key", elem_id="open-key",
                    info="also one that is not in the queue; Enter opens it",
                )  # fmt: skip
                open_btn = gr.Button("Open", size="sm", elem_id="btn-open")
                gr.Markdown(
                    "**Keys** (outside text fields): "
                    + " · ".join(f"<kbd>{k}</kbd> {what}" for k, what, _ in SHORTCUTS),
                    elem_id="shortcuts",
                )
            with gr.Column(scale=4):
                info = gr.Markdown(elem_id="review-info")
                message = gr.Markdown(elem_id="review-message")
                with gr.Row():
                    prev_btn = gr.Button("◀ Prev (P)", elem_id="btn-prev", min_width=80)
                    accept_btn = gr.Button(
                        "Accept (A)", variant="primary", elem_id="btn-accept", min_width=80
                    )
                    conf_btn = gr.Button(
                        "Accept confident (C)",
                        variant="primary",
                        elem_id="btn-confident",
                        min_width=80,
                    )
                    reject_btn = gr.Button(
                        "Reject (R)", variant="stop", elem_id="btn-reject", min_width=80
                    )
                    fix_btn = gr.Button("Save fix (F)", elem_id="btn-fix", min_width=80)
                    undo_btn = gr.Button("Undo (U)", elem_id="btn-undo", min_width=80)
                    next_btn = gr.Button("Next (N) ▶", elem_id="btn-next", min_width=80)
                with gr.Row():
                    tau = gr.Slider(
                        0,
                        0.99,
                        value=0.5,
                        step=0.01,
                        label="τ (confident: conf > τ)",
                        elem_id="tau",
                    )
                    opacity = gr.Slider(
                        0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="opacity"
                    )
                    also_choices = [FINAL_CHOICE] + [f"ground truth: {t}" for t in tasks]
                    also = gr.Dropdown(
                        also_choices, value=FINAL_CHOICE, label="Also show", elem_id="also"
                    )
                panels = gr.HTML(elem_id="panels")
                preview_note = gr.Markdown(elem_id="preview-note")
                editor = gr.ImageEditor(
                    label="Fix: paint over the suggestion (eraser removes strokes), then Save fix (F)",
                    type="numpy", format="png", image_mode="RGBA", sources=[], transforms=[],
                    layers=gr.LayerOptions(allow_additional_layers=False),
                    brush=_brush(rs.task(first)), eraser=gr.Eraser(default_size=12),
                    height=EDITOR_HEIGHT, elem_id="fix-editor",
                )  # fmt: skip

        controls = [annotator, task, status, conf_min, conf_max, order, tau, opacity, also]
        outputs = [session, info, message, counters, panels, preview_note, editor, tau, annotator]
        common = dict(outputs=outputs, show_progress="hidden", concurrency_limit=CONCURRENCY)

        open_items: dict[str, tuple[str, str, str]] = {}  # browser session -> claimed item

        def wire(handler, extra_inputs=(), api_name=None) -> dict:
            def run(request: gr.Request, state, *values):  # Gradio fills `request` by its type
                extras, values = values[: len(extra_inputs)], values[len(extra_inputs) :]
                view = handler(rs, state, *extras, Controls(*values), request)
                item, hash_ = view.session.item, getattr(request, "session_hash", None)
                if hash_ and item is not None:
                    open_items[hash_] = (item.sample_id, item.task, view.session.user)
                elif hash_:
                    open_items.pop(hash_, None)
                return _outputs(rs, view)

            run.__name__ = handler.__name__
            return dict(
                fn=run, inputs=[session, *extra_inputs, *controls], api_name=api_name, **common
            )

        demo.load(**wire(start, api_name="start"))
        demo.load(None, js=SHORTCUT_JS)

        def release_on_close(request: gr.Request):  # the tab closed: free its sample for others
            held = open_items.pop(getattr(request, "session_hash", None) or "", None)
            if held is not None:
                rs.release(*held)

        demo.unload(release_on_close)
        for ctl in (task, status, order):
            ctl.input(**wire(queue_changed, api_name=False))
        for ctl in (conf_min, conf_max):
            ctl.release(**wire(queue_changed, api_name=False))
        next_btn.click(**wire(next_sample, api_name="next"))
        prev_btn.click(**wire(prev_sample, api_name="prev"))
        accept_btn.click(**wire(accept, api_name="accept"))
        conf_btn.click(**wire(accept_confident, api_name="accept_confident"))
        reject_btn.click(**wire(reject, api_name="reject"))
        fix_btn.click(**wire(save_fix, [editor], api_name="fix"))
        undo_btn.click(**wire(undo, api_name="undo"))
        open_btn.click(**wire(open_key, [key_box], api_name="open"))
        key_box.submit(**wire(open_key, [key_box], api_name=False))

        def run_restyle(state, *values):
            return restyle(rs, state, Controls(*values))

        restyle_kw = dict(
            fn=run_restyle, inputs=[session, *controls], outputs=[panels, preview_note],
            show_progress="hidden", concurrency_limit=CONCURRENCY, api_name=False,
            trigger_mode="always_last",
        )  # fmt: skip
        for ctl in (tau, opacity, also):  # what the annotator moves, not what a handler sets
            ctl.input(**restyle_kw)
    return demo


# ----------------------------------------------------------------------------------------------
# serving and the command line


def parse_auth(auth: list[str] | None, auth_file: str | None) -> list[tuple[str, str]] | None:
    """``USER:PASS`` pairs from the flags and the file (one pair a line, ``#`` comments).

    Raises:
        ValueError: A pair without ``:`` or with an empty user or password; a missing file.
    """
    lines = [(a, "--auth") for a in (auth or [])]
    if auth_file:
        path = Path(auth_file)
        if not path.is_file():
            raise ValueError(f"{path}: auth file not found")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append((line.strip(), f"{path} line {n}"))
    pairs = []
    for text, where in lines:
        user, sep, password = text.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"{where}: expected USER:PASS with both parts non-empty")
        pairs.append((user.strip(), password))
    return pairs or None


def check_port(host: str, port: int) -> None:
    """Raise ValueError naming ``host:port`` if nothing can listen there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise ValueError(
                f"cannot listen on {host}:{port} ({e.strerror}): is another review page or "
                "program using it? Choose another with --port"
            ) from None


def launch(
    demo: gr.Blocks, *, host: str, port: int, auth: list[tuple[str, str]] | None = None
) -> str:
    """Start ``demo`` in the background on ``host:port`` with the page's CSS; returns its URL.

    Raises:
        ValueError: The server could not listen there.
    """
    demo.queue(default_concurrency_limit=CONCURRENCY)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            auth=auth,
            auth_message=f"{demo.title}: log in with your annotator name",
            prevent_thread_lock=True,
            quiet=True,
            css=CSS,
            footer_links=[],
        )
    except OSError as e:
        raise ValueError(f"cannot start the review page on {host}:{port}: {e}") from None
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve_review(
    name: str,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: list[tuple[str, str]] | None = None,
    block: bool = True,
) -> tuple[gr.Blocks, str]:
    """Serve dataset ``name``'s review page on ``host:port``; returns (page, URL). With ``block``,
    prints the URL and serves until Ctrl-C.

    Raises:
        ValueError: No such dataset, or the port is taken.
    """
    rs = ReviewStore(name)
    check_port(host, port)
    if auth is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "the review page listens on %s without --auth: anyone who reaches it can decide", host
        )
    demo = build_page(rs, login=auth is not None)
    url = launch(demo, host=host, port=port, auth=auth)
    if block:
        print(f"review page for dataset {name!r}: {url}  (Ctrl-C stops it)", flush=True)
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            log.info("stopping the review page")
        finally:
            demo.close()
    return demo, url


def cmd_review(args: argparse.Namespace) -> int:
    """``hitts review NAME``: serve the review page until Ctrl-C."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    auth = parse_auth(args.auth, args.auth_file)
    serve_review(args.name, host=args.host, port=args.port, auth=auth)
    return 0
