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


class ImageTooLarge(ValueError):
    """A download over ``data.max_image_bytes`` (its Content-Length, or the bytes read): skipped, never retried."""


class OptedOut(ValueError):
    """An image whose server says, in ``X-Robots-Tag``, not to use it (``data.disallowed_header_directives``):
    skipped as ``opted_out``, never retried."""


def opted_out(values: list[str], directives: frozenset[str]) -> bool:
    """Whether ``X-Robots-Tag`` header values forbid use as img2dataset 1.40.0 reads them: each value is
    comma-separated directives, case-insensitive, optionally after ``agent:``; a value that names an agent is
    addressed to another crawler (img2dataset, as DataComp runs it, has no agent token) and does not apply."""
    for value in values:
        if ":" in value:  # "agent: directives", addressed to one crawler: not to us
            continue
        if any(directive.strip().lower() in directives for directive in value.split(",")):
            return True
    return False


def failure_reason(error: BaseException) -> str:
    """The skip reason of a download that failed: ``too_large``, ``opted_out``, ``truncated`` (the connection closed
    before the Content-Length's bytes came), ``timeout`` or ``http_error``."""
    if isinstance(error, ImageTooLarge):
        return "too_large"
    if isinstance(error, OptedOut):
        return "opted_out"
    if isinstance(error, http.client.IncompleteRead):
        return "truncated"
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


def download(
    url: str,
    timeout_s: float,
    retries: int,
    backoff_s: float,
    max_bytes: int | None = None,
    disallowed: frozenset[str] = frozenset(),
) -> bytes:
    """The bytes at ``url``; each attempt must finish within ``timeout_s`` (also a slow trickle), and no wait
    between attempts is longer (a server's ``Retry-After`` included: a loader worker never sleeps for a day).
    A body over ``max_bytes`` raises :class:`ImageTooLarge` as soon as its Content-Length says so, or as soon as
    that many bytes have come: a loader worker holds at most about ``max_bytes`` whatever the server sends. A response
    whose ``X-Robots-Tag`` holds one of the ``disallowed`` directives raises :class:`OptedOut` before its body is
    read."""

    def attempt() -> bytes:
        deadline = time.monotonic() + timeout_s  # urlopen's timeout bounds each socket operation only
        body = bytearray()
        with urlopen(Request(url, headers={"User-Agent": _USER_AGENT}), timeout=timeout_s) as response:
            if disallowed and opted_out(response.headers.get_all("X-Robots-Tag") or [], disallowed):
                raise OptedOut(f"{url}: its X-Robots-Tag forbids use ({response.headers.get_all('X-Robots-Tag')})")
            announced = response.headers.get("Content-Length", "")
            if max_bytes is not None and announced.isdigit() and int(announced) > max_bytes:
                raise ImageTooLarge(f"{url} is {int(announced)} bytes, over data.max_image_bytes={max_bytes}")
            while chunk := response.read(1 << 16):
                body += chunk
                if max_bytes is not None and len(body) > max_bytes:
                    raise ImageTooLarge(f"{url} sent over {max_bytes} bytes (data.max_image_bytes)")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"downloading {url} took over {timeout_s}s")
        if announced.isdigit() and len(body) < int(announced):  # http.client returns a cut-off body silently
            raise http.client.IncompleteRead(bytes(body), int(announced) - len(body))
        return bytes(body)

    return with_retries(attempt, what=url, retries=retries, wait_s=backoff_s, max_wait_s=timeout_s, quiet=True)
