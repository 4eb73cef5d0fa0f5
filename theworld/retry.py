"""Retrying what may work on a second try: one helper for the whole project (Hub calls, image and shard
downloads), on top of the few retries huggingface_hub makes of single requests."""

from __future__ import annotations

import email.utils
import logging
import math
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.error import HTTPError, URLError

from huggingface_hub.errors import HfHubHTTPError

log = logging.getLogger(__name__)

T = TypeVar("T")


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from or while handling, outermost first."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def http_status(err: BaseException | None) -> int | None:
    """The HTTP status behind ``err`` (also when it was wrapped in another exception)."""
    for cause in _chain(err):
        if isinstance(cause, HfHubHTTPError) and getattr(cause, "response", None) is not None:
            return cause.response.status_code
        if isinstance(cause, HTTPError):
            return cause.code
    return None


# A longer Retry-After is nonsense (a misconfigured or hostile server): it counts as absent.
RETRY_AFTER_LIMIT_S = 7 * 24 * 3600.0


def retry_after(err: BaseException | None) -> float | None:
    """Seconds a rate-limited (429) or overloaded (503) server asked us to wait in its ``Retry-After`` header
    (delay-seconds or an HTTP date); None when it did not say, or said nonsense (unparseable, negative, not a
    number, further away than ``RETRY_AFTER_LIMIT_S``)."""
    for cause in _chain(err):
        response = getattr(cause, "response", None)
        headers = getattr(response, "headers", None) if response is not None else getattr(cause, "headers", None)
        value = headers.get("Retry-After") if headers is not None else None
        if value:
            return _seconds_from_retry_after(value)
    return None


def _seconds_from_retry_after(value: str) -> float | None:
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):  # ASCII digits only: str.isdigit() also accepts "²", which float() refuses
        seconds = float(value)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        seconds = max(0.0, seconds)  # a date in the past: now
    return seconds if math.isfinite(seconds) and seconds <= RETRY_AFTER_LIMIT_S else None


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


def answer_of(err: BaseException) -> str:
    """How a server failed, for a sentence about it: "answered HTTP 503" (it is there, and failing), or "did not
    answer" (refused, timed out, cut off)."""
    status = http_status(err)
    return f"answered HTTP {status}" if status is not None else "did not answer"


def describe_error(err: BaseException) -> str:
    """One line for logs: the exception type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    retries: int,
    wait_s: float,
    max_wait_s: float = 60.0,
    sleep: Callable[[float], bool | None] | None = None,
    quiet: bool = False,
) -> T:
    """Calls ``fn``, retrying transient errors with exponential backoff (``wait_s``, doubling, at most
    ``max_wait_s``); a server that says how long to wait (429/503 with ``Retry-After``) is waited out as it says,
    up to ``max_wait_s`` too (a nonsense value counts as unsaid).
    ``sleep(delay)`` (default ``time.sleep``) returning True means "give up now" (the uploader's stop signal).
    ``quiet``: no log line per retry (for image downloads, whose failures are counted instead)."""
    sleep = sleep or time.sleep
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_transient(err) or attempt >= retries:
                raise
            delay, asked = min(max_wait_s, wait_s * 2**attempt), retry_after(err)
            attempt += 1
            if asked is not None:
                delay = min(asked, max_wait_s)
                if not quiet:
                    log.warning(
                        "%s: the server answered %s and asks to wait %.0f s (Retry-After); retry %d/%d in %.0f s",
                        what,
                        http_status(err) or "busy",
                        asked,
                        attempt,
                        retries,
                        delay,
                    )
            elif not quiet:
                log.warning("%s failed (%s); retry %d/%d in %.1f s", what, describe_error(err), attempt, retries, delay)
            if sleep(delay):
                raise
