"""The background uploader on its own: a fake push function, no sockets, no Lightning.

Threads are sequenced with events: a test asserts what happened and in which order, never how long it took. Each
blocking wait has a bound (``WAIT_S``) only so that a broken uploader fails the test instead of hanging it.
"""

import logging
import threading

import pytest

from theworld.hub.uploader import Push, Uploader

WAIT_S = 10.0


class FakeHub:
    """The ``push`` function: records each push it gets, and can hold one until released or make it raise."""

    def __init__(self):
        self.pushed: list[int] = []  # steps whose push ran to the end, in order
        self.started: dict[int, threading.Event] = {}
        self.release: dict[int, threading.Event] = {}
        self.raises: dict[int, BaseException] = {}
        self.during: dict[int, object] = {}  # step -> fn(sleep) called while the push runs; its result is kept
        self.seen: dict[int, object] = {}

    def hold(self, step: int) -> None:
        self.started[step], self.release[step] = threading.Event(), threading.Event()

    def __call__(self, job: Push, sleep) -> str:
        if job.step in self.started:
            self.started[job.step].set()
            assert self.release[job.step].wait(WAIT_S), f"push {job.step} was never released"
        if job.step in self.during:
            self.seen[job.step] = self.during[job.step](sleep)
        if job.step in self.raises:
            raise self.raises[job.step]
        assert job.folder.is_dir(), "a push reads its staged folder"
        self.pushed.append(job.step)
        return f"commit-{job.step}"


@pytest.fixture
def hub():
    return FakeHub()


@pytest.fixture
def uploader(hub):
    stopped = threading.Event()
    up = Uploader(hub, on_stopped=stopped.set)
    up.stopped = stopped
    yield up
    up.stop()
    for event in hub.release.values():
        event.set()
    assert stopped.wait(WAIT_S), "the uploader thread ended"


def job(tmp_path, step: int, final: bool = False) -> Push:
    folder = tmp_path / f"push-{step}"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights %d" % step)
    return Push(step=step, folder=folder, final=final, size=9)


def finish(uploader) -> None:
    """Stops the uploader and waits for its thread's end: every push it ran has removed its folder by then."""
    uploader.stop()
    assert uploader.stopped.wait(WAIT_S)


def start_held(hub, uploader, tmp_path, step: int = 1) -> Push:
    """Submits ``step`` and returns once its push is in flight (held until ``hub.release[step]`` is set)."""
    hub.hold(step)
    held = job(tmp_path, step)
    uploader.submit(held)
    assert hub.started[step].wait(WAIT_S)
    return held


def test_the_newest_queued_push_wins_over_older_queued_ones(hub, uploader, tmp_path):
    start_held(hub, uploader, tmp_path, step=1)
    a, b, c = job(tmp_path, 2), job(tmp_path, 3), job(tmp_path, 4)
    for queued in (a, b, c):
        uploader.submit(queued)
    assert uploader.pending == 2  # the held push and one queued: each submit replaced the one before
    hub.release[1].set()
    assert uploader.wait_idle(WAIT_S)
    assert hub.pushed == [1, 4], "the newest save is pushed after the held one; the older queued ones never are"
    assert c.result.result(0) == "commit-4"
    assert a.result.cancelled() and b.result.cancelled()
    assert not a.folder.exists() and not b.folder.exists(), "a superseded push's folder goes at once"
    finish(uploader)
    assert not c.folder.exists()
    assert (uploader.done, uploader.superseded, uploader.failed) == (2, 2, 0)


def test_the_final_push_replaces_a_queued_one_and_lands(hub, uploader, tmp_path):
    start_held(hub, uploader, tmp_path, step=1)
    intermediate, final = job(tmp_path, 2), job(tmp_path, 3, final=True)
    uploader.submit(intermediate)
    uploader.submit(final)
    hub.release[1].set()
    assert uploader.wait_idle(WAIT_S)
    assert hub.pushed == [1, 3] and intermediate.result.cancelled()
    assert final.result.result(0) == "commit-3"
    assert final.message == "End of training" and intermediate.message == "Training in progress, step 2"


def test_an_intermediate_push_in_flight_gives_up_its_backoff_for_a_newer_one(hub, uploader, tmp_path, caplog):
    """``sleep`` (the push's backoff between retries) returns True at once when a newer push is queued; a push that
    then gives up (raises, as ``with_retries`` does) counts as superseded, not failed."""
    queued = threading.Event()
    hub.hold(1)
    hub.during[1] = lambda sleep: (queued.wait(WAIT_S), sleep(WAIT_S))[1]  # unwoken: False after WAIT_S
    hub.raises[1] = RuntimeError("503 while retrying")
    first = job(tmp_path, 1)
    uploader.submit(first)
    assert hub.started[1].wait(WAIT_S)
    hub.release[1].set()
    newer = job(tmp_path, 2)
    uploader.submit(newer)
    queued.set()
    with caplog.at_level(logging.INFO, logger="theworld.hub.uploader"):
        assert newer.result.result(WAIT_S) == "commit-2"
    assert hub.seen[1] is True, "the backoff was cut short for the newer push"
    assert isinstance(first.result.exception(), RuntimeError)
    assert (uploader.done, uploader.superseded, uploader.failed) == (1, 1, 0)
    assert any("abandoned" in r.message and "a newer one is queued" in r.message for r in caplog.records)


def test_the_final_push_in_flight_keeps_its_backoff_when_something_is_queued(hub, uploader, tmp_path):
    queued = threading.Event()
    hub.hold(1)
    hub.during[1] = lambda sleep: (queued.wait(WAIT_S), sleep(0))[1]  # 0: the answer the backoff has at once
    final = Push(step=1, folder=job(tmp_path, 1).folder, final=True, size=0)
    uploader.submit(final)
    assert hub.started[1].wait(WAIT_S)
    hub.release[1].set()
    uploader.submit(job(tmp_path, 2))  # nothing is queued after the final one in a run; the uploader ignores it
    queued.set()
    assert final.result.result(WAIT_S) == "commit-1"
    assert hub.seen[1] is False, "the final push does not give up its retries"


def test_the_backoff_is_cut_short_by_stop(hub, uploader, tmp_path):
    stopping = threading.Event()
    hub.hold(1)
    hub.during[1] = lambda sleep: (stopping.wait(WAIT_S), sleep(WAIT_S))[1]
    held = job(tmp_path, 1)
    uploader.submit(held)
    assert hub.started[1].wait(WAIT_S)
    hub.release[1].set()
    uploader.stop()
    stopping.set()
    assert uploader.stopped.wait(WAIT_S)
    assert hub.seen[1] is True


def test_wait_idle_gives_up_at_its_bound_while_a_push_hangs(hub, uploader, tmp_path):
    start_held(hub, uploader, tmp_path, step=1)
    assert uploader.wait_idle(0.05) is False
    assert uploader.pending == 1
    status = uploader.status()
    assert status.startswith("Hub push 'Training in progress, step 1' running since ") and "MB to send" in status
    hub.release[1].set()
    assert uploader.wait_idle(WAIT_S) is True
    assert uploader.pending == 0 and uploader.status() is None


@pytest.mark.parametrize("error", [RuntimeError("the Hub said no"), KeyboardInterrupt()], ids=["error", "sigint"])
def test_a_push_that_raises_is_counted_failed_and_the_thread_serves_the_next(hub, uploader, tmp_path, caplog, error):
    """Even a KeyboardInterrupt raised in the uploading thread (hf_xet seeing the process's SIGINT) ends only that
    push, not the thread: the final push still runs."""
    hub.raises[1] = error
    failing = job(tmp_path, 1)
    with caplog.at_level(logging.WARNING, logger="theworld.hub.uploader"):
        uploader.submit(failing)
        assert failing.result.exception(WAIT_S) is error
    assert (uploader.done, uploader.failed, uploader.superseded) == (0, 1, 0)
    assert any(r.levelname == "WARNING" and "Hub push 'Training in progress, step 1' failed" in r.message
               for r in caplog.records)

    final = job(tmp_path, 2, final=True)
    uploader.submit(final)
    assert final.result.result(WAIT_S) == "commit-2"
    assert (uploader.done, uploader.failed) == (1, 1) and hub.pushed == [2]
    finish(uploader)
    assert not failing.folder.exists() and not final.folder.exists()


def test_stop_drops_the_queued_push_lets_the_one_in_flight_finish_and_runs_on_stopped(hub, uploader, tmp_path):
    held = start_held(hub, uploader, tmp_path, step=1)
    queued = job(tmp_path, 2)
    uploader.submit(queued)
    uploader.stop()
    assert queued.result.cancelled() and not queued.folder.exists()
    assert not uploader.stopped.is_set(), "on_stopped waits for the push in flight"
    hub.release[1].set()
    assert uploader.stopped.wait(WAIT_S)
    assert held.result.result(0) == "commit-1" and hub.pushed == [1]

    late = job(tmp_path, 3)
    uploader.submit(late)  # after stop: dropped, never pushed
    assert late.result.cancelled() and not late.folder.exists()
    assert uploader.superseded == 2 and hub.pushed == [1]
