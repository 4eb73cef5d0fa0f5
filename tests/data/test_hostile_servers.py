"""Image servers that answer what no well-behaved server would: absurd Retry-After values, bytes or metadata that
make decoding raise something unforeseen. One image must never stall a loader worker for long or end the run."""

import logging
import time
from collections import Counter
from urllib.error import HTTPError

import pytest
from PIL import Image

from theworld import retry
from theworld.data.http import download
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
