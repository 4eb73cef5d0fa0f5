"""Image and shard downloads over HTTP, in the loader workers: bounded in time, transient failures retried."""

from __future__ import annotations

import http.client
import time
from urllib.error import URLError
from urllib.request import Request, urlopen

from theworld.retry import with_retries

_USER_AGENT = "theworld-data/0.1"
# Errors that mean "this download/shard failed", as opposed to bugs in our code.
NETWORK_ERRORS = (OSError, ValueError, http.client.HTTPException)


def failure_reason(error: BaseException) -> str:
    """The skip reason of a download that failed: ``timeout`` or ``http_error``."""
    timed_out = isinstance(error, TimeoutError) or (
        isinstance(error, URLError) and isinstance(error.reason, TimeoutError)
    )
    return "timeout" if timed_out else "http_error"


def open_url(url: str, timeout_s: float, retries: int, backoff_s: float):
    """An open HTTP response for ``url`` (a shard to stream), retried on timeouts, 408/429/5xx, dropped connections."""
    return with_retries(
        lambda: urlopen(Request(url, headers={"User-Agent": _USER_AGENT}), timeout=timeout_s),
        what=url,
        retries=retries,
        wait_s=backoff_s,
        max_wait_s=timeout_s,
        quiet=True,
    )


def download(url: str, timeout_s: float, retries: int, backoff_s: float) -> bytes:
    """The bytes at ``url``; each attempt must finish within ``timeout_s`` (also a slow trickle), and no wait
    between attempts is longer (a server's ``Retry-After`` included: a loader worker never sleeps for a day)."""

    def attempt() -> bytes:
        deadline = time.monotonic() + timeout_s  # urlopen's timeout bounds each socket operation only
        chunks = []
        with urlopen(Request(url, headers={"User-Agent": _USER_AGENT}), timeout=timeout_s) as response:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"downloading {url} took over {timeout_s}s")
        return b"".join(chunks)

    return with_retries(attempt, what=url, retries=retries, wait_s=backoff_s, max_wait_s=timeout_s, quiet=True)
