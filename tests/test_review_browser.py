"""The review page in headless Chromium (Playwright) against a real server: accept, accept the
confident region, reject and a brush fix with the mouse, undo by key, then the FiftyOne state;
and two logged-in annotators acting on one sample, the later one shown the conflict.

Needs the Debian ``chromium`` package at /usr/bin/chromium (Playwright's own browser download is
not used).
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from test_review_store import (  # noqa: F401  (fixtures shared with the store tests)
    clone_reviewable,
    review_scenes,
    review_template,
)

from hitts.app import review_page as rp
from hitts.model.data.label_io import read_label

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_COPY = Path("/tmp/review-screenshot.png")
WAIT_MS = 20_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        # launch() gives every run a fresh temporary profile (user data dir)
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page_server(review_template, dataset_name):  # noqa: F811  (the imported fixture)
    """Serve a fresh copy of the suggested dataset; yields (store, url, login pairs)."""
    rs = clone_reviewable(review_template, dataset_name)
    logins = [("alice", "pw-alice"), ("bob", "pw-bob")]
    demo = rp.build_page(rs, login=True)
    url = rp.launch(demo, host="127.0.0.1", port=_free_port(), auth=logins)
    yield rs, url, dict(logins)
    demo.close()


def _open(browser, url: str, user: str, password: str):
    """A new browser context (own cookies) logged in as ``user``, on the review page."""
    context = browser.new_context(viewport={"width": 1440, "height": 1300})
    page = context.new_page()
    page.goto(url)
    page.fill("input[data-testid=textbox]", user, timeout=WAIT_MS)  # Gradio's login form
    page.fill("input[type=password]", password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#panel-suggestion img", timeout=WAIT_MS)
    return page


def _expect_text(page, selector: str, text: str) -> str:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_contain_text(text, timeout=WAIT_MS)
    return page.inner_text(selector)


def _shown_key(page) -> str:
    return page.inner_text("#review-info strong").strip()


def _sample(rs, key: str) -> fo.Sample:
    ds = fo.load_dataset(rs.name)
    ds.reload()
    return ds.match({"key": key}).first()


def _stroke(page) -> None:
    """Paint a horizontal stroke across the middle of the editor's image with the mouse."""
    box = page.locator("#fix-editor canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - box["width"] * 0.12, cy)  # the brush draws only over the image
    page.mouse.down()
    page.mouse.move(cx + box["width"] * 0.12, cy, steps=3)  # segments join; each step renders
    page.mouse.up()
    time.sleep(0.5)  # let the editor hand its layer to the page


def test_review_with_buttons_keys_and_brush(browser, page_server, tmp_path):
    rs, url, logins = page_server
    page = _open(browser, url, "alice", logins["alice"])
    assert page.input_value("#annotator textarea, #annotator input") == "alice"
    _expect_text(page, "#shortcuts", "accept confident")
    _expect_text(page, "#counters", "/")

    key = _shown_key(page)
    page.click("#btn-accept")
    _expect_text(page, "#review-message", f"saved accepted: semseg of {key}")
    s = _sample(rs, key)
    assert s.semseg_status == "accepted" and s.semseg_reviewed_by == "alice"

    key = _shown_key(page)
    page.locator("body").press("c")  # keyboard shortcut: accept confident
    _expect_text(page, "#review-message", f"saved accepted-confident: semseg of {key}")
    s = _sample(rs, key)
    assert s.final_semseg_source == "accepted-confident"

    key = _shown_key(page)
    page.locator("body").press("r")
    _expect_text(page, "#review-message", f"saved rejected: semseg of {key}")
    assert _sample(rs, key).semseg_status == "rejected"

    key = _shown_key(page)
    page.screenshot(path=str(tmp_path / "review-page.png"), full_page=True)
    shutil.copyfile(tmp_path / "review-page.png", SCREENSHOT_COPY)
    _stroke(page)
    page.click("#btn-fix")
    _expect_text(page, "#review-message", f"saved fixed: semseg of {key}")
    s = _sample(rs, key)
    assert s.semseg_status == "fixed"
    spec = rs.task("semseg")
    final = read_label(spec, s.final_semseg.mask_path)
    pred = read_label(spec, s.pred_semseg.mask_path)
    changed = final != pred
    assert changed.any() and np.all(final[changed] == 0)  # painted with the first swatch: floor
    rows = np.nonzero(changed.any(axis=1))[0]
    assert rows.min() >= 8 and rows.max() <= 24  # a band through the middle of the image

    page.locator("body").press("u")
    _expect_text(page, "#review-message", f"undid fixed of semseg on {key}")
    assert _shown_key(page) == key
    s = _sample(rs, key)
    assert s.semseg_status == "suggested" and s.final_semseg is None
    page.screenshot(path=str(tmp_path / "review-page-after-undo.png"), full_page=True)
    page.context.close()


def test_two_annotators_one_sample_conflict(browser, page_server):
    rs, url, logins = page_server
    alice = _open(browser, url, "alice", logins["alice"])
    bob = _open(browser, url, "bob", logins["bob"])
    key = _shown_key(alice)
    assert _shown_key(bob) != key  # claims: the queue gives bob another sample
    bob.fill("#open-key textarea, #open-key input", key)
    bob.locator("#open-key textarea, #open-key input").press("Enter")
    _expect_text(bob, "#review-message", "alice has this sample open")
    bob.click("#btn-reject")
    _expect_text(bob, "#review-message", f"saved rejected: semseg of {key}")
    alice.click("#btn-accept")
    text = _expect_text(alice, "#review-message", "conflict, not saved")
    assert "bob decided semseg" in text and "rejected" in text
    _expect_text(alice, "#review-info", "decided by bob")
    s = _sample(rs, key)
    assert s.semseg_status == "rejected" and s.semseg_reviewed_by == "bob"
    alice.context.close()
    bob.context.close()


def test_closing_the_tab_releases_the_claim(browser, page_server):
    rs, url, logins = page_server
    alice = _open(browser, url, "alice", logins["alice"])
    key = _shown_key(alice)
    assert _sample(rs, key).semseg_claimed_by == "alice"
    alice.context.close()
    # the server notices on its next heartbeat (Gradio sends one every 15 s), then releases
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and _sample(rs, key).semseg_claimed_by is not None:
        time.sleep(0.5)
    assert _sample(rs, key).semseg_claimed_by is None
    bob = _open(browser, url, "bob", logins["bob"])
    assert _shown_key(bob) == key  # the freed sample is the first in bob's queue again
    bob.context.close()
