"""huggingface_hub's shared HTTP client, made safe to fork while the uploader thread uses it.

huggingface_hub closes its shared client in every forked child (``os.register_at_fork``). Closing takes the
client's connection-pool lock; a DataLoader worker forked while the uploader thread held that lock inherits
it locked and waits forever. The client made here is closed only by the process that made it: a forked child
just drops its copy (closing it there could also end the parent's TLS sessions, which share the sockets) and
opens a client of its own if it needs one. Whatever client factory was set before (a proxy, certificates) still
makes the client.

Example::

    make_hub_session_fork_safe()  # once, before a thread starts pushing
"""

from __future__ import annotations

import os

from huggingface_hub import set_client_factory
from huggingface_hub.utils import _http  # the factory in use has no public getter


def make_hub_session_fork_safe() -> None:
    """Make huggingface_hub's shared client one that forked children drop instead of closing; idempotent."""
    factory = _http._GLOBAL_CLIENT_FACTORY
    if getattr(factory, "fork_safe", False):
        return

    def fork_safe_client():
        client = factory()
        owner, close = os.getpid(), client.close

        def close_in_owner() -> None:
            if os.getpid() == owner:
                close()

        client.close = close_in_owner
        return client

    fork_safe_client.fork_safe = True
    set_client_factory(fork_safe_client)  # closes the current client: the next request makes a fork-safe one
