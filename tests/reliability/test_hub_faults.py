"""The Hub sync against what production meets and a polite test server does not: hf_xet's KeyboardInterrupt inside
the uploading thread, a connection that a proxy swallows, a final push that cannot land in time."""

import logging
import re
import time

import pytest
from huggingface_hub import constants
from huggingface_hub.utils import _http, _xet
from hub_server import Faults
from support.hub_standin import FINAL, REPO, ROOT, fit, messages
from support.xet_standin import XetStandIn

from theworld.callbacks import HubSyncCallback
from theworld.hub import HubError

pytestmark = pytest.mark.reliability


def test_a_keyboard_interrupt_inside_a_xet_upload_fails_that_push_only(hub, tmp_path, monkeypatch, figures):
    """Through huggingface_hub's Xet upload path (hf_xet's transfer stood in): the first upload raises
    KeyboardInterrupt in the uploader thread, as huggingface_hub re-raises hf_xet's SIGINT there. That push is
    tried again, the thread lives on, and every later push, the final one included, lands."""
    if not hasattr(_xet, "_GLOBAL_XET_HOLDER"):
        pytest.skip("this huggingface_hub drives hf_xet without a session holder")
    xet = XetStandIn(hub, REPO, interrupt=1)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)  # production's path: hf_xet is installed
    monkeypatch.setattr(_xet._GLOBAL_XET_HOLDER, "get", lambda: xet)
    _, sync = fit(tmp_path, hub, hub_strategy="checkpoint", every=2, top_k=-1, max_steps=4)
    figures.record("faults", kind="KeyboardInterrupt inside a Xet upload", injected=1)
    assert len(xet.uploads) >= 2 and all("/xet-write-token/" in url for url in xet.uploads)
    assert messages(hub)[-1] == "End of training"
    assert sync.metrics["hub/pushes_failed"] == 0
    files = hub.files(REPO)
    assert ROOT | FINAL <= files.keys()
    assert files["final/model.safetensors"] == (tmp_path / "checkpoints/final/model.safetensors").read_bytes()


def test_a_black_holed_connection_is_abandoned_and_the_pushes_land(hub, tmp_path, caplog, figures):
    """One commit request is swallowed (read, never answered, the socket left open): with requests bounded at
    1 s it times out and is retried; no push is stuck behind it and none fails."""
    hub.faults = Faults(stall_next=1, paths=r"/commit/")
    with caplog.at_level(logging.WARNING):
        _, sync = fit(tmp_path, hub, hub_strategy="checkpoint", every=2, top_k=-1, max_steps=6,
                      hub_request_timeout=1.0)
    stalled = [status for _, path, status in hub.request_log if "/commit/" in path].count(-1)
    figures.record("faults", kind="black-holed connection (commit never answered)", injected=stalled)
    assert [status for _, path, status in hub.request_log if "/commit/" in path][0] == -1, "the first commit stalled"
    assert messages(hub)[-1] == "End of training"
    assert sync.metrics["hub/pushes_failed"] == 0 and sync.metrics["hub/pushes_pending"] == 0
    assert any("Timeout" in record.message for record in caplog.records), "the stall was reported as a timeout"


def test_the_final_error_names_the_push_that_stalled_and_since_when(hub, tmp_path):
    """Every commit is swallowed and requests may wait 60 s: the final push cannot land within its 2 s. The error
    says which push has been running since when (the one in flight, not only "did not finish"), that the local
    final weights are intact, and the staging folder stays until that upload ends."""
    hub.faults = Faults(stall_next=100, paths=r"/commit/")
    with pytest.raises(HubError) as failed:
        fit(tmp_path, hub, hub_strategy="every_save", every=2, max_steps=2, hub_final_push_timeout=2,
            hub_request_timeout=60)
    message = str(failed.value)
    assert "did not finish within hub_final_push_timeout=2 s" in message
    assert re.search(r"Hub push '(Training in progress, step 2|End of training)' running since \d\d:\d\d:\d\d",
                     message), message
    assert "final weights are intact" in message
    staging = list((tmp_path / "checkpoints").glob(".hub-staging-*/push-*"))
    assert staging, "the staging folder of the upload still running was removed under it"
    hub.stop()  # releases the stalled request: the upload ends, and its thread removes the staging folder
    deadline = time.monotonic() + 30
    while list((tmp_path / "checkpoints").glob(".hub-staging-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list((tmp_path / "checkpoints").glob(".hub-staging-*"))


def test_the_wait_line_never_promises_more_time_than_is_left(hub, tmp_path, caplog, monkeypatch):
    """While the final push cannot land, the status lines count down: each says at most the time truly left."""
    hub.faults = Faults(stall_next=100, paths=r"/commit/")
    monkeypatch.setattr(HubSyncCallback, "STATUS_EVERY_S", 1.0)
    start = time.time()
    with caplog.at_level(logging.INFO), pytest.raises(HubError):
        fit(tmp_path, hub, hub_strategy="end", max_steps=2, hub_final_push_timeout=3.5, hub_request_timeout=60)
    deadline = max(r.created for r in caplog.records if r.message.startswith("Waiting for the final push")) + 3.5
    promised = [(r.created, int(m[1])) for r in caplog.records if (m := re.search(r"waiting (\d+) s more", r.message))]
    assert len(promised) >= 2
    # Said minus truly left, at the moment the line was logged: the old line said half a period (0.5 s) and more too
    # much here (3.5 s waited in periods of 1 s); an honest one is off by the milliseconds of logging alone.
    overpromised = [said - (deadline - created) for created, said in promised]
    assert max(overpromised) < 0.25, (promised, deadline)
    assert start <= deadline


def test_every_hub_request_is_bounded_in_time(monkeypatch):
    """bound_hub_requests relies on huggingface_hub's private client factory: this fails loudly if it moves. A
    request that asks for no timeout (as repo_info and create_commit do) gets the bound on every phase, whatever the
    client's own default."""
    from theworld.hub.session import bound_hub_requests

    monkeypatch.setattr(_http, "_GLOBAL_CLIENT_FACTORY", _http._GLOBAL_CLIENT_FACTORY)
    bound_hub_requests(30.0)
    client = _http.get_session()
    bounded = {"connect": 30.0, "read": 30.0, "write": 30.0, "pool": 30.0}
    # timeout=None asked; no timeout asked (the client's default: 10 s reads in huggingface_hub 1.4, which cut off
    # commits the Hub answers later than that); a shorter one asked, which stays
    for asked, expected in (({"timeout": None}, bounded), ({}, bounded), ({"timeout": 3.0}, dict.fromkeys(bounded, 3.0))):
        request = client.build_request("POST", "http://127.0.0.1:9/", **asked)
        for hook in client.event_hooks["request"]:
            hook(request)
        assert request.extensions["timeout"] == expected, asked
    _http.close_session()
