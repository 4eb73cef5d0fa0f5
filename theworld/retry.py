"""Retrying what may work on a second try: one helper for the whole project (Hub calls, image and shard
downloads), on top of the few retries huggingface_hub makes of single requests."""

from __future__ import annotations

import logging
import socket
import time
from typing import Callable, TypeVar
from urllib.error import HTTPError, URLError

from huggingface_hub.errors import HfHubHTTPError

log = logging.getLogger(__name__)

T = TypeVar("T")


def http_status(err: BaseException | None) -> int | None:
    """The HTTP status behind ``err`` (also when it was wrapped in another exception)."""
    while err is not None:
        if isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
            return err.response.status_code
        if isinstance(err, HTTPError):
            return err.code
        err = err.__cause__ or err.__context__
    return None


def is_transient(err: BaseException) -> bool:
    """5xx, 408/429, a stale parent commit (412), timeouts and dropped connections are worth another try; a 4xx,
    an unknown host, our own verdicts and local bugs or I/O problems are not (they fail the same way again)."""
    from theworld.errors import UserError

    if getattr(err, "transient", False):
        return True
    status = http_status(err)
    if status is not None:
        return status >= 500 or status in (408, 412, 429)
    if isinstance(err, URLError):
        return not isinstance(err.reason, socket.gaierror)
    return not isinstance(err, (UserError, ValueError, TypeError, KeyError, AttributeError, FileNotFoundError))


def describe_error(err: BaseException) -> str:
    """One line for logs: the exception type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def with_retries(fn: Callable[[], T], *, what: str, retries: int, wait_s: float, max_wait_s: float = 60.0,
                 sleep: Callable[[float], bool | None] = time.sleep, quiet: bool = False) -> T:
    """Calls ``fn``, retrying transient errors with exponential backoff (``wait_s``, doubling, at most
    ``max_wait_s``). ``sleep(delay)`` returning True means "give up now" (the uploader's stop signal).
    ``quiet``: no log line per retry (for image downloads, whose failures are counted instead)."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_transient(err) or attempt >= retries:
                raise
            delay = min(max_wait_s, wait_s * 2**attempt)
            attempt += 1
            if not quiet:
                log.warning("%s failed (%s); retry %d/%d in %.1f s", what, describe_error(err), attempt, retries, delay)
            if sleep(delay):
                raise
