"""Every request of huggingface_hub's shared HTTP client bounded in time.

huggingface_hub builds its client without a timeout, and many calls pass ``timeout=None`` (repo_info, commits,
uploads): a connection that a proxy swallows, or a Hub that stops answering mid-request, would hold a push, and
every later push queued behind it, until the run ends. Here each request made by the client (built by whatever
factory was set: a proxy, certificates) gets at most ``timeout_s`` for each phase: connecting, sending a chunk,
waiting for the next bytes of the answer, waiting for a pooled connection. A stalled request then fails as a
timeout, which the push retries like any dropped connection.

``timeout_s`` is also the client's default: the earliest releases we support (1.4) gave their client 10 s reads,
which would cut off a commit that the Hub takes longer than that to answer, whatever the user set. A timeout that
one call asks for itself (``HF_HUB_ETAG_TIMEOUT`` on metadata requests) stays when it is shorter.

Example::

    bound_hub_requests(120)  # before the first Hub call
"""

from __future__ import annotations

from huggingface_hub import set_client_factory
from huggingface_hub.utils import _http  # the factory in use has no public getter (tests/test_hub_utils.py checks)

_PHASES = ("connect", "read", "write", "pool")


def bound_hub_requests(timeout_s: float) -> None:
    """Makes huggingface_hub's shared client bound every phase of every request by ``timeout_s``; idempotent."""
    factory = _http._GLOBAL_CLIENT_FACTORY
    if getattr(factory, "timeout_s", None) == timeout_s:
        return
    unbounded = getattr(factory, "unbounded", factory)

    def bound(request) -> None:
        asked = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            phase: timeout_s if asked.get(phase) is None else min(asked[phase], timeout_s) for phase in _PHASES
        }

    def bounded_client():
        client = unbounded()
        client.timeout = timeout_s  # httpx makes it a Timeout for every phase
        client.event_hooks = {**client.event_hooks, "request": [*client.event_hooks["request"], bound]}
        return client

    # Function attributes, read back above: through __dict__, as a type checker knows no attributes of a function
    bounded_client.__dict__.update(timeout_s=timeout_s, unbounded=unbounded)
    set_client_factory(bounded_client)  # closes the current client: the next request makes a bounded one
