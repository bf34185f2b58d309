"""The long-running commands' HTTP server: Kubernetes probes and Prometheus metrics.

``consume_signals --metrics-port`` and ``relay_outbox --metrics-port`` serve, on a thread:

- ``/healthz`` (liveness): 200 while the process's loop turns; 503 once it stopped or is
  stuck, so that Kubernetes restarts it. A paused daemon is alive.
- ``/readyz`` (readiness): 200 while the process does its work (the daemon: connected
  and consuming, not paused); 503 otherwise.
- ``/metrics``: what ``broadcaster.observability`` counts, in Prometheus's format.

Each probe answers a small JSON object that says why, for the operator reading it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from broadcaster import observability

__all__ = ["Probe", "serve"]

Probe = Callable[[], tuple[bool, dict[str, Any]]]
"""Whether the process passes the probe, and the details /healthz or /readyz shows."""


def serve(port: int, live: Probe, ready: Probe, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /healthz, /readyz and /metrics on `port` from a daemon thread; return the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/healthz", "/readyz"):
                ok, details = (live if path == "/healthz" else ready)()
                body = json.dumps({"status": "ok" if ok else "unavailable", **details}, sort_keys=True)
                self._reply(200 if ok else 503, body.encode() + b"\n", "application/json")
            elif path == "/metrics" and observability.prometheus is not None:
                prometheus = observability.prometheus
                self._reply(200, prometheus.generate_latest(), prometheus.CONTENT_TYPE_LATEST)
            elif path == "/metrics":
                self._reply(501, b"install django-signal-broadcaster[prometheus]\n", "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the daemon's own log

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="broadcaster-probes", daemon=True).start()
    return server
