"""Forks DataLoader workers while huggingface_hub's shared client is mid-request, as validation does during a push.

``python fork_mid_request.py ENDPOINT TOKEN [--unprotected]`` prints ``batches 2`` when the workers ran; without
the protection the workers hang in huggingface_hub's after-fork hook and the loader times out.
"""

import sys
import threading

from huggingface_hub import HfApi, get_session
from torch.utils.data import DataLoader

from theworld.hub.session import make_hub_session_fork_safe

endpoint, token = [arg for arg in sys.argv[1:] if arg != "--unprotected"]
if "--unprotected" not in sys.argv:
    make_hub_session_fork_safe()
HfApi(endpoint=endpoint, token=token).whoami()  # the shared client now holds a pooled connection
# The lock a request holds while it takes or returns a connection (private), held by another thread as the
# uploader thread holds it at the instant a worker is forked: a narrow window in a real run, a hang when hit.
pool_lock, held, done = get_session()._transport._pool._optional_thread_lock, threading.Event(), threading.Event()


def uploader() -> None:
    with pool_lock:
        held.set()
        done.wait()


threading.Thread(target=uploader, daemon=True).start()
held.wait()
batches = list(DataLoader(range(8), batch_size=4, num_workers=2, timeout=30))
done.set()
print("batches", len(batches))
