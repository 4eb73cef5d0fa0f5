"""A throwaway local HTTP file server for tests and demos (stdlib only).

>>> url, stop = serve_directory("data/synth/images", status={"/gone.jpg": 404, "/busy.jpg": 429},
...                             delay_s={"/slow.jpg": 30}, headers={"/busy.jpg": {"Retry-After": "86400"}})
>>> # ... fetch f"{url}/0000.jpg" ...
>>> stop()
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops connections under a downloader's parallel
    # requests, which then wait a full TCP retransmit (1 s).
    request_queue_size = 128
    # Don't wait for delayed handlers on shutdown; stop() wakes them anyway.
    block_on_close = False

    def handle_error(self, request, client_address) -> None:
        # Clients that time out close the socket under a delayed handler: expected in tests.
        logger.debug("request from %s failed", client_address, exc_info=True)


class _Handler(SimpleHTTPRequestHandler):
    def __init__(
        self,
        *args,
        status: Mapping[str, int],
        delay_s: Mapping[str, float],
        headers: Mapping[str, Mapping[str, str]],
        hits: Counter,
        stopped: threading.Event,
        **kwargs,
    ):
        self._status, self._delay_s, self._headers, self._hits = status, delay_s, headers, hits
        self._stopped = stopped
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        route = urlsplit(self.path).path
        self._hits[route] += 1
        delay = self._delay_s.get(route)
        if delay and self._stopped.wait(delay):
            return  # server is stopping: drop the request
        if route in self._status:
            self.send_response(self._status[route])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def end_headers(self) -> None:
        # The route's own headers, on a file as on a status answer (a Retry-After, an X-Robots-Tag opt-out).
        for name, value in self._headers.get(urlsplit(self.path).path, {}).items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def serve_directory(
    path: str | Path,
    *,
    status: Mapping[str, int] | None = None,
    delay_s: Mapping[str, float] | None = None,
    headers: Mapping[str, Mapping[str, str]] | None = None,
    hits: Counter | None = None,
) -> tuple[str, Callable[[], None]]:
    """Serve ``path`` on ``127.0.0.1`` at an ephemeral port in a background thread.

    ``status`` maps URL paths (``"/x.jpg"``) to an HTTP status to answer instead of the file; ``headers`` maps
    URL paths to headers sent with that path's answer, a file or a status (a hostile ``Retry-After``, an
    ``X-Robots-Tag`` opt-out);
    ``delay_s`` maps URL paths to seconds to wait before answering (to exercise client
    timeouts). The mappings are read on every request, so a caller may fill them after the
    server started (e.g. once it knows the URL it must write into metadata). ``hits`` counts
    the requests of each path.

    Returns ``(base_url, stop)``; ``stop()`` shuts the server down and releases delayed requests.
    """
    stopped = threading.Event()
    handler = partial(
        _Handler,
        directory=str(path),
        status=status if status is not None else {},
        delay_s=delay_s if delay_s is not None else {},
        headers=headers if headers is not None else {},
        hits=hits if hits is not None else Counter(),
        stopped=stopped,
    )
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        stopped.set()
        server.shutdown()
        server.server_close()
        thread.join()

    host, port = server.server_address[:2]
    assert isinstance(host, str)  # an IPv4 server's address (bytes only for AF_UNIX)
    return f"http://{host}:{port}", stop
