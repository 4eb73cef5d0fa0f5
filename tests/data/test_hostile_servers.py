"""Image servers that answer what no well-behaved server would: absurd Retry-After values, bytes or metadata that
make decoding raise something unforeseen. One image must never stall a loader worker for long or end the run."""

import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import HTTPError

import pytest
from PIL import Image

from theworld import retry
from theworld.data.http import ImageTooLarge, download, failure_reason
from theworld.data.parquet import ParquetURLSource
from theworld.testing.synthetic import encode_image, good_row, write_rows

from test_data_sources import keys_and_skips

TIMEOUT_S, BACKOFF_S, RETRIES = 2.0, 0.25, 2
BACKOFF = [BACKOFF_S * 2**attempt for attempt in range(RETRIES)]  # what the source waits when the server says nothing


class RecordedSleeps(list):
    """Stands in for the ``time`` module of theworld.retry: every sleep asked for is recorded, none is slept."""

    def __getattr__(self, name):
        return getattr(time, name)

    def sleep(self, seconds):
        self.append(seconds)


@pytest.fixture
def sleeps(monkeypatch) -> RecordedSleeps:
    recorded = RecordedSleeps()
    monkeypatch.setattr(retry, "time", recorded)
    return recorded


def rows_with_a_busy_image(tmp_path, serve, retry_after: str) -> tuple[list[dict], Counter]:
    """Three rows; the server answers 429 with ``Retry-After: <retry_after>`` for the second one's image."""
    status, headers, hits = {}, {}, Counter()
    url = serve(tmp_path / "images", status=status, headers=headers, hits=hits)
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, 64, url, tmp_path / "images") for i in range(3)]
    busy = f"/{rows[1]['uid']}.jpg"
    status[busy], headers[busy] = 429, {"Retry-After": retry_after}
    write_rows(rows, tmp_path / "meta.parquet")
    return rows, hits


@pytest.mark.parametrize(("retry_after", "waits"), [
    ("86400", [TIMEOUT_S] * RETRIES),  # a day: capped at the download timeout
    ("1", [1.0] * RETRIES),  # a sane value is obeyed
    ("99999999999999", BACKOFF),  # too large for time.sleep (OverflowError): nonsense, as if unsaid
    ("-5", BACKOFF),
    ("nan", BACKOFF),
    ("soon, promise", BACKOFF),
    ("²", BACKOFF),  # a digit to str.isdigit(), not to float()
    ("Fri, 31 Dec 9999 23:59:59 GMT", BACKOFF),  # a date eight thousand years away
])
def test_a_hostile_retry_after_is_capped_or_ignored_and_the_image_is_a_counted_skip(tmp_path, serve, sleeps, caplog,
                                                                                   retry_after, waits):
    rows, hits = rows_with_a_busy_image(tmp_path, serve, retry_after)
    source = ParquetURLSource(str(tmp_path / "meta.parquet"), download_timeout_s=TIMEOUT_S, download_retries=RETRIES,
                              download_backoff_s=BACKOFF_S)
    with caplog.at_level(logging.INFO):
        keys, skipped = keys_and_skips(source)
    assert keys == [rows[0]["uid"], rows[2]["uid"]] and skipped == {"http_error": 1}
    assert hits[f"/{rows[1]['uid']}.jpg"] == RETRIES + 1
    assert sleeps == waits
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "image downloads are quiet"


def test_retry_after_too_large_for_sleep_is_no_overflow_error(tmp_path, serve):
    """The real ``time.sleep`` (no stand-in): 99999999999999 s overflows it, and must never be asked for."""
    rows, hits = rows_with_a_busy_image(tmp_path, serve, "99999999999999")
    with pytest.raises(HTTPError) as raised:
        download(rows[1]["url"], timeout_s=1.0, retries=1, backoff_s=0.01)
    assert raised.value.code == 429 and hits[f"/{rows[1]['uid']}.jpg"] == 2


def test_the_call_caps_retry_after_at_its_own_maximum_wait(sleeps):
    """Hub calls and shard downloads too: never longer than the call's ``max_wait_s``."""
    class RateLimited(Exception):
        headers = {"Retry-After": "86400"}
        transient = True

    def fn():
        raise RateLimited()

    with pytest.raises(RateLimited):
        retry.with_retries(fn, what="x", retries=3, wait_s=1.0, max_wait_s=30.0)
    assert sleeps == [30.0] * 3


class OddCodecError(Exception):
    """Nothing any decoder is known to raise."""


def test_an_unexpected_exception_fetching_or_decoding_one_image_is_a_counted_skip(tmp_path, serve, monkeypatch,
                                                                                 caplog):
    url = serve(tmp_path / "images")
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, 64, url, tmp_path / "images") for i in range(4)]
    # Row 1: a greyscale image, whose conversion to RGB blows up with an exception type nobody foresaw.
    (tmp_path / "images" / f"{rows[1]['uid']}.jpg").write_bytes(encode_image(Image.new("L", (64, 64), 128)))
    # Row 2: a face box of two numbers instead of four (hostile metadata: blurring it raises ValueError).
    rows[2]["face_bboxes"] = [[0.1, 0.2]]
    write_rows(rows, tmp_path / "meta.parquet")
    convert = Image.Image.convert

    def exploding_convert(image, *args, **kwargs):
        if image.mode == "L":
            raise OddCodecError("the codec exploded")
        return convert(image, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", exploding_convert)
    with caplog.at_level(logging.WARNING, logger="theworld.data.parquet"):
        keys, skipped = keys_and_skips(ParquetURLSource(str(tmp_path / "meta.parquet")))
    assert keys == [rows[0]["uid"], rows[3]["uid"]]
    assert skipped == {"unexpected_error": 2}
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, "one line per exception type"
    assert any("OddCodecError: the codec exploded" in w for w in warned) and any("ValueError" in w for w in warned)


FLOOD_BYTES = 2 << 30  # what the flood server offers: 2 GiB of zeros


class FloodHandler(BaseHTTPRequestHandler):
    """``/announced``: says its 2 GiB in Content-Length; ``/unannounced``: says nothing and streams them."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if self.path == "/announced":
            self.send_header("Content-Length", str(FLOOD_BYTES))
        self.end_headers()
        block, sent = bytes(1 << 20), 0
        try:
            while sent < FLOOD_BYTES:
                self.wfile.write(block)
                sent += len(block)
        except OSError:  # the client hung up: what a capped download does
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def flood():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FloodHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("path", ["/announced", "/unannounced"])
def test_a_flood_is_cut_at_max_image_bytes_and_skipped_as_too_large(tmp_path, serve, flood, path):
    url = serve(tmp_path / "images")
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, 64, url, tmp_path / "images") for i in range(3)]
    rows[1]["url"] = flood + path
    write_rows(rows, tmp_path / "meta.parquet")
    source = ParquetURLSource(str(tmp_path / "meta.parquet"), max_image_bytes=1_000_000, download_retries=2)
    keys, skipped = keys_and_skips(source)
    assert keys == [rows[0]["uid"], rows[2]["uid"]] and skipped == {"too_large": 1}
    with pytest.raises(ImageTooLarge) as raised:
        download(flood + path, timeout_s=30, retries=2, backoff_s=0.01, max_bytes=1_000_000)
    assert failure_reason(raised.value) == "too_large"


class CutShortHandler(BaseHTTPRequestHandler):
    """Announces a JPEG's length and closes the connection inside its header (PIL alone would call it corrupt)."""

    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body[:20])
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_body_cut_short_of_its_content_length_is_skipped_as_truncated(tmp_path, serve):
    url = serve(tmp_path / "images")
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = [good_row(0, i, 64, url, tmp_path / "images") for i in range(3)]
    CutShortHandler.body = (tmp_path / "images" / rows[1]["url"].rsplit("/", 1)[1]).read_bytes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), CutShortHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        rows[1]["url"] = f"http://127.0.0.1:{server.server_address[1]}/cut.jpg"
        write_rows(rows, tmp_path / "meta.parquet")
        keys, skipped = keys_and_skips(ParquetURLSource(str(tmp_path / "meta.parquet"), download_retries=1))
    finally:
        server.shutdown()
    assert keys == [rows[0]["uid"], rows[2]["uid"]] and skipped == {"truncated": 1}


PEAK_RSS = """
import resource, sys
from theworld.data.http import ImageTooLarge, download
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    download(sys.argv[1], timeout_s=60, retries=0, backoff_s=0, max_bytes=int(sys.argv[2]))
    outcome = "downloaded"
except ImageTooLarge:
    outcome = "too_large"
print(outcome, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)  # MiB
"""


def test_a_flood_leaves_the_workers_memory_bounded(flood):
    """A loader worker downloading from a server that never stops grows by about the cap, not by what was sent
    (before the cap: the 2 GiB body and its join copy, 4.4 GB in one worker)."""
    cap = 16_000_000
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, flood + "/unannounced", str(cap)], capture_output=True,
                            text=True, timeout=120, check=True)
    outcome, grown = result.stdout.split()
    assert outcome == "too_large"
    grown_mib = int(grown)
    assert grown_mib < 3 * cap / 2**20, f"the worker grew by {grown_mib} MiB for a {cap / 2**20:.0f} MiB cap"
