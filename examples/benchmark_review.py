"""Review page speed: time to show the next sample and to save an accept, with 1 and 10 clients.

Usage: python examples/benchmark_review.py [--count 1000] [--size 32x48] [--ops 60] [--clients 10]
       [--max-seconds 30]

Builds a dataset the way a user does (generated scenes, ``ingest --setting one-label``,
``suggest``), with a scripted predictor standing in for the network so the build takes seconds,
in a private MongoDB (FiftyOne's own ``mongod`` on a free port, data in a temporary folder: the
embedded database service would attach to any other FiftyOne process's database on the machine)
and a temporary HITTS_HOME. Then it times each action at four depths:

- store: ``ReviewStore.next_item`` (query + atomic claim) and ``ReviewStore.accept`` (label file +
  one compare-and-set update): the database work alone.
- handler: the page's handler functions called in-process (store work + reading the files and
  rendering the panels), no HTTP. An accept also shows the next sample, as on the page.
- http: Gradio's HTTP API (POST ``/gradio_api/call/<api>``, then read its event stream), the
  way a browser's request reaches the server.
- gradio_client: ``gradio_client.Client.predict``. The client polls its message queue every 50 ms,
  so these figures carry up to that much wait on the client side; the ``echo`` row measures it on a
  do-nothing endpoint of the same server.

With one client each depth uses its own task's queue; with ``--clients`` clients, every client is
a thread with its own session, on the queue of task ``i % 4``, doing ``--ops // 3`` actions. A
phase stops early after ``--max-seconds``. Prints p50 / p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

TASKS = ("semseg", "depth", "normal", "edge")
_TMP = Path(tempfile.mkdtemp(prefix="hitts-bench-review-"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_private_mongod() -> subprocess.Popen:
    """FiftyOne's ``mongod`` on a free port with data under the temporary folder; sets
    FIFTYONE_DATABASE_URI (call before importing fiftyone)."""
    spec = importlib.util.find_spec("fiftyone")
    mongod = Path(spec.origin).parent / "db" / "bin" / "mongod"
    if not mongod.is_file():
        raise SystemExit(
            f"{mongod} not found: install the embedded database (pip install -e .[db])"
        )
    db = _TMP / "db"
    db.mkdir()
    port = _free_port()
    proc = subprocess.Popen(
        [str(mongod), "--dbpath", str(db), "--port", str(port), "--bind_ip", "127.0.0.1",
         "--nounixsocket", "--logpath", str(db / "mongod.log")],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                log = db / "mongod.log"
                raise SystemExit(f"mongod exited with {proc.returncode}; see {log}") from None
            time.sleep(0.2)
    else:
        proc.terminate()
        raise SystemExit("mongod did not start within 60 s")
    os.environ["FIFTYONE_DATABASE_URI"] = f"mongodb://127.0.0.1:{port}"
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    os.environ["HITTS_HOME"] = str(_TMP / "home")
    return proc


class ScriptedPredictor:
    """Labels and confidences computed from the image: valid suggestions without a network."""

    engine = "scripted"
    provider = "none"

    def __init__(self, tasks):
        self.tasks = tasks

    def predict(self, images):
        out = []
        for img in images:
            h, w = img.shape[:2]
            grey = img.astype(np.float32).mean(axis=-1) / 255.0
            ramp = np.linspace(0.2, 1.0, w, dtype=np.float32)[None]
            conf = np.clip(ramp + (grey - 0.5) * 0.3, 0.0, 1.0)
            normal = np.zeros((h, w, 3), np.float32)
            normal[..., 2] = 1.0
            result = {}
            for t in self.tasks:
                if t.is_classification:
                    label = np.minimum((grey * t.num_classes).astype(np.int64), t.num_classes - 1)
                elif t.kind == "depth":
                    label = 1.0 + 4.0 * grey
                else:
                    label = normal
                result[t.name] = {
                    "label": label,
                    "confidence": conf,
                    "mf": grey,
                    "fine_score": conf,
                }
            out.append(result)
        return out


def build(count: int, hw: tuple[int, int], name: str) -> dict[str, float]:
    """Generate, ingest (one-label) and suggest; returns the seconds of each step."""
    from hitts.app.ingest import ingest
    from hitts.app.suggest import suggest
    from hitts.model.data.scenes import SceneConfig, generate_scenes
    from hitts.model.tasks import scene_tasks

    src = _TMP / "scenes"
    times = {}
    t0 = time.perf_counter()
    generate_scenes(src, count, SceneConfig(height=hw[0], width=hw[1]), seed=0, progress=False)
    times["generate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ingest(src, name, setting="one-label", progress=False)
    times["ingest"] = time.perf_counter() - t0
    checkpoint = _TMP / "scripted.ckpt"
    checkpoint.write_bytes(b"scripted")
    t0 = time.perf_counter()
    suggest(name, ScriptedPredictor(scene_tasks()), checkpoint, batch_size=32, progress=False)
    times["suggest"] = time.perf_counter() - t0
    return times


def run_clients(n_clients: int, ops: int, max_seconds: float, action) -> list[float]:
    """Run ``action(client)`` ``ops`` times in each of ``n_clients`` threads; the seconds it
    returns are collected (None: not counted, e.g. an empty queue)."""
    times: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds

    def worker(i: int) -> None:
        for _ in range(ops):
            if time.perf_counter() > deadline:
                return
            t = action(i)
            if t is not None:
                with lock:
                    times.append(t)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def timed(fn, ok=lambda out: True):
    t0 = time.perf_counter()
    out = fn()
    t = time.perf_counter() - t0
    return t if ok(out) else None


class HttpUser:
    """One annotator reaching the page through Gradio's HTTP API, with its own session."""

    def __init__(self, url: str, controls: list):
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/") + "/gradio_api", timeout=60)
        self.session_hash = uuid.uuid4().hex[:11]
        self.controls = controls

    def call(self, api: str) -> list:
        body = {"data": self.controls, "session_hash": self.session_hash}
        r = self.http.post(f"/call/{api}", json=body)
        r.raise_for_status()
        event = None
        with self.http.stream("GET", f"/call/{api}/{r.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "complete":
                    return json.loads(line[6:])
                elif line.startswith("data: ") and event == "error":
                    raise RuntimeError(f"{api} failed: {line[6:]}")
        raise RuntimeError(f"{api}: the event stream ended without a result")


def phases(rs, url: str, clients: int, ops: int, max_seconds: float) -> list:
    """Every depth's next and accept with ``clients`` clients; rows of the table."""
    from gradio_client import Client

    from hitts.app import review_page as rp
    from hitts.app.review_store import QueueFilter

    rows = []

    def task(i: int, depth: int) -> str:  # one client: each depth its own queue
        return TASKS[depth] if clients == 1 else TASKS[i % len(TASKS)]

    def phase(action: str, layer: str, fn) -> None:
        times = run_clients(clients, ops, max_seconds, fn)
        rows.append((clients, action, layer, times))
        print(f"  {clients} client(s), {action} via {layer}: {len(times)} timed", flush=True)

    def saved(message: str) -> bool:
        return "not saved" not in message

    def controls(i: int, depth: int) -> rp.Controls:
        return rp.Controls(annotator=f"d{depth}-{clients}-{i}", task=task(i, depth))

    # store
    cursors: dict[int, object] = {}

    def store_next(i):
        t0 = time.perf_counter()
        item = rs.next_item(QueueFilter(task(i, 0)), f"store-{i}", cursors.get(i))
        cursors[i] = item.cursor if item else None
        return time.perf_counter() - t0

    def store_accept(i):
        item = rs.next_item(QueueFilter(task(i, 0)), f"store-{i}")
        return (
            None if item is None else timed(lambda: rs.accept(item, f"store-{i}"), lambda o: o.ok)
        )

    phase("next", "store", store_next)
    phase("accept", "store", store_accept)

    # handler
    ctl = {i: controls(i, 1) for i in range(clients)}
    sessions = {i: rp.start(rs, None, ctl[i]).session for i in range(clients)}

    def handler(fn):
        def act(i):
            t0 = time.perf_counter()
            view = fn(rs, sessions[i], ctl[i])
            t = time.perf_counter() - t0
            sessions[i] = view.session
            return t if saved(view.message) else None

        return act

    phase("next", "handler", handler(rp.next_sample))
    phase("accept", "handler", handler(rp.accept))

    # http
    users = {i: HttpUser(url, controls(i, 2).inputs()) for i in range(clients)}
    for u in users.values():
        u.call("start")
    phase("next", "http", lambda i: timed(lambda: users[i].call("next")))
    phase("accept", "http", lambda i: timed(lambda: users[i].call("accept"), lambda o: saved(o[1])))

    # gradio_client
    args = {i: controls(i, 3).inputs() for i in range(clients)}
    gcs = {}
    for i in range(clients):
        gcs[i] = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        gcs[i].predict(*args[i], api_name="/start")

    def call(api: str, check=lambda out: True):
        def act(i):
            data = ["x"] if api == "/echo" else args[i]
            return timed(lambda: gcs[i].predict(*data, api_name=api), check)

        return act

    phase("echo", "gradio_client", call("/echo"))
    phase("next", "gradio_client", call("/next"))
    phase("accept", "gradio_client", call("/accept", lambda o: saved(o[1])))
    return rows


def measure(args) -> list[tuple[int, str, str, list[float]]]:
    import gradio as gr

    from hitts.app import review_page as rp
    from hitts.app.review_store import ReviewStore

    name = "bench-review"
    hw = tuple(int(v) for v in args.size.split("x"))
    build_times = build(args.count, hw, name)
    rs = ReviewStore(name)
    suggested = {t: rs.coll.count_documents({f"{t}_status": "suggested"}) for t in TASKS}
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in build_times.items())
    print(
        f"built {args.count} samples at {args.size}: {steps}; suggestions {suggested}", flush=True
    )
    demo = rp.build_page(rs)
    with demo:  # a do-nothing endpoint: the floor of a round trip through the same server
        echo_in, echo_out = gr.Textbox(visible=False), gr.Textbox(visible=False)
        echo_in.submit(lambda x: x, echo_in, echo_out, api_name="echo")
    url = rp.launch(demo, host="127.0.0.1", port=_free_port())
    try:
        rows = phases(rs, url, 1, args.ops, args.max_seconds)
        rows += phases(rs, url, args.clients, max(1, args.ops // 3), args.max_seconds)
    finally:
        demo.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1000, help="samples in the dataset (default 1000)")
    p.add_argument("--size", default="32x48", help="HxW of the scenes (default 32x48)")
    p.add_argument(
        "--ops", type=int, default=60, help="actions per phase with one client (default 60)"
    )
    p.add_argument("--clients", type=int, default=10, help="concurrent clients (default 10)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="limit per phase (default 30)")
    args = p.parse_args(argv)
    mongod = start_private_mongod()
    try:
        rows = measure(args)
    finally:
        mongod.terminate()
        mongod.wait(timeout=30)
    load = os.getloadavg()
    print(
        f"\n{args.count} samples at {args.size}, {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (1, 5, 15 min)"
    )
    print(f"{'clients':>7s}  {'action':8s}{'layer':15s}{'n':>6s}{'p50 ms':>9s}{'p95 ms':>9s}")
    for clients, action, layer, times in rows:
        if times:
            p50, p95 = np.percentile(np.asarray(times) * 1000.0, (50, 95))
            print(f"{clients:7d}  {action:8s}{layer:15s}{len(times):6d}{p50:9.1f}{p95:9.1f}")
        else:
            print(f"{clients:7d}  {action:8s}{layer:15s}{0:6d}{'-':>9s}{'-':>9s}")
    print("targets with one client: p95 of next < 150 ms; p95 of saving an accept < 50 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
