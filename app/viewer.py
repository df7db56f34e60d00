"""The FiftyOne App on a dataset, for curators: suggestions, confidence and score maps as overlays.

Segmentation-like suggestions and ``M_p`` are masks with class names; depth, confidence, ``M_f``
and the fine score are heatmaps; normals are RGB masks. The saved views ("needs-review", "<task>
suggestions below 0.5 confidence") are in the App's view bar. The App and the review page can be
open on the same dataset at once: both read and write the same database.
"""

from __future__ import annotations

import logging

import fiftyone as fo

from hitts.app import store

log = logging.getLogger(__name__)


def serve_app(
    name: str, *, host: str = "127.0.0.1", port: int = 5151, wait: bool = True
) -> fo.Session:
    """Serve the App for dataset ``name`` on ``host:port``; blocks until Ctrl-C when ``wait``."""
    ds = store.load_dataset(name)
    # FiftyOne logs a remote-session banner about ssh port forwarding (twice: through its own
    # handler and the root one); the one line below says where the App is
    banner = logging.getLogger("fiftyone.core.session.session")
    level = banner.level
    banner.setLevel(logging.WARNING)
    try:
        session = fo.launch_app(ds, remote=True, address=host, port=port, auto=False)
    finally:
        banner.setLevel(level)
    print(f"FiftyOne App for {name!r}: http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    if wait:
        try:
            session.wait()
        except KeyboardInterrupt:
            log.info("stopping the App")
        finally:
            session.close()
    return session
