"""Bad samples for the data tests: one of every kind the sources must skip (or convert), and how many of each.

:func:`write_bad_samples` writes them as a WebDataset tar or as DataComp-style parquet whose images a local HTTP
server (:mod:`theworld.testing.http`) serves.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from theworld.data.webdataset import shard_writer
from theworld.testing.synthetic import (
    GOOD_CLIP_SCORE_RANGE,
    LOW_CLIP_SCORE,
    encode_image,
    good_members,
    good_row,
    make_key,
    render_sample,
    sample_rng,
    uid_of,
    write_rows,
)


def decompression_bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header declares ``width × height`` pixels (900 MP by default)."""
    png = bytearray(encode_image(Image.new("RGB", (8, 8)), "PNG"))
    # IHDR is the first chunk: 8-byte signature, 4-byte length, b"IHDR", then width and height.
    ihdr = png[12:29]
    ihdr[4:12] = struct.pack(">II", width, height)
    png[12:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(png)


def _bad_images(rng: random.Random, image_size: int) -> dict[str, tuple[bytes, str]]:
    """Image payloads by the reason the sources report for them: ``reason -> (bytes, extension)``."""
    image, _ = render_sample(rng, image_size)
    jpeg = encode_image(image)
    return {
        "corrupt": (b"this is not an image" * 10, "jpg"),
        "truncated": (jpeg[: len(jpeg) * 3 // 4], "jpg"),
        "decompression_bomb": (decompression_bomb_png(), "png"),
        "too_small": (encode_image(image.resize((4, 4))), "jpg"),
    }


def _converted_images(rng: random.Random, image_size: int) -> list[tuple[bytes, str]]:
    """Non-RGB images that the sources convert to RGB (counted as ``converted_mode``)."""
    image, _ = render_sample(rng, image_size)
    rgba = image.convert("RGBA")
    rgba.putalpha(128)
    return [
        (encode_image(image.convert("L")), "jpg"),
        (encode_image(image.convert("CMYK")), "jpg"),
        (encode_image(image.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "png"),
        (encode_image(rgba, "PNG"), "png"),
    ]


BAD_CAPTIONS: dict[str, bytes | None] = {
    "missing_caption": None,
    "empty_caption": b"   ",
    "bad_utf8": b"a red \xff\xfe circle",
}


@dataclass
class PlantedSamples:
    """What :func:`write_bad_samples` wrote.

    ``expected`` maps each reason to how many samples carry it (``converted_mode`` ones are
    still yielded); ``good_keys`` are the keys a source must yield; ``slow_paths`` are URL
    paths the test server must delay past the download timeout (parquet only).
    """

    path: str
    expected: dict[str, int]
    good_keys: list[str]
    slow_paths: list[str] = field(default_factory=list)


def write_bad_samples(
    out_dir: str | Path,
    fmt: str,
    image_url_base: str | None = None,
    seed: int = 0,
    image_size: int = 64,
) -> PlantedSamples:
    """Plant one sample of every bad kind, each followed by two good samples, and one more bad (``too_small``) after
    the last good one.

    ``fmt="webdataset"`` writes ``out_dir/bad-00000.tar``; ``fmt="parquet"`` writes
    ``out_dir/bad.parquet`` with its images in ``out_dir/images`` (served at ``image_url_base``),
    a missing file for ``http_error`` and a file for ``timeout`` that must be served slowly
    (``slow_paths``). The parquet ``text`` column is binary so it can hold invalid UTF-8; the
    planted low-score row needs ``clip_score_threshold`` between ``LOW_CLIP_SCORE`` and
    ``GOOD_CLIP_SCORE_RANGE[0]``.

    Each bad sample is followed by two good ones so that every consumer of a two-way row split gets good
    samples; the bad one after them is skipped after a worker's last sample (a tail skip, which must be counted too).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "webdataset":
        return _write_bad_tar(out / "bad-00000.tar", seed, image_size)
    if fmt == "parquet":
        if image_url_base is None:
            raise ValueError("write_bad_samples(fmt='parquet') needs image_url_base")
        return _write_bad_parquet(out / "bad.parquet", out / "images", image_url_base.rstrip("/"), seed, image_size)
    raise ValueError(f"fmt must be 'webdataset' or 'parquet', got {fmt!r}")


_Item = TypeVar("_Item")


def _interleave(bad: list[_Item], tail: _Item) -> list[tuple[int, _Item | None]]:
    """``(index, item)`` for each bad item, each followed by two good slots ``(index, None)``, then ``tail``."""
    entries: list[tuple[int, _Item | None]] = []
    for item in bad:
        base = len(entries)
        entries += [(base, item), (base + 1, None), (base + 2, None)]
    return [*entries, (len(entries), tail)]


def _write_bad_tar(path: Path, seed: int, image_size: int) -> PlantedSamples:
    rng = sample_rng(seed, -1)
    caption = b"a red circle on a blue background"
    good_image = encode_image(render_sample(rng, image_size)[0])
    bad: list[tuple[str, dict[str, bytes]]] = [
        (reason, {ext: data, "txt": caption}) for reason, (data, ext) in _bad_images(rng, image_size).items()
    ]
    bad += [
        (reason, {"jpg": good_image, **({"txt": text} if text is not None else {})})
        for reason, text in BAD_CAPTIONS.items()
    ]
    bad.append(("missing_image", {"txt": caption}))
    bad += [("converted_mode", {ext: data, "txt": caption}) for data, ext in _converted_images(rng, image_size)]
    too_small, ext = _bad_images(rng, image_size)["too_small"]

    expected: dict[str, int] = {}
    good_keys = []
    with shard_writer(str(path)) as writer:
        for index, item in _interleave(bad, ("too_small", {ext: too_small, "txt": caption})):
            key = make_key(index)
            if item is None:
                writer.write({"__key__": key, **good_members(seed, index, image_size)})
                good_keys.append(key)
                continue
            reason, members = item
            writer.write({"__key__": key, **members})
            expected[reason] = expected.get(reason, 0) + 1
            if reason == "converted_mode":
                good_keys.append(key)
    return PlantedSamples(str(path), expected, good_keys)


def _write_bad_parquet(path: Path, image_dir: Path, base: str, seed: int, image_size: int) -> PlantedSamples:
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = sample_rng(seed, -1)
    good_image = encode_image(render_sample(rng, image_size)[0])
    caption = b"a red circle on a blue background"
    ok_score = sum(GOOD_CLIP_SCORE_RANGE) / 2
    # (reason, image bytes or None for "no file on the server", extension, caption, clip score)
    bad: list[tuple[str, bytes | None, str, bytes | None, float]] = [
        (reason, data, ext, caption, ok_score) for reason, (data, ext) in _bad_images(rng, image_size).items()
    ]
    bad += [
        ("http_error", None, "jpg", caption, ok_score),
        ("timeout", good_image, "jpg", caption, ok_score),
        ("low_clip_score", good_image, "jpg", caption, LOW_CLIP_SCORE),
    ]
    bad += [(reason, good_image, "jpg", text, ok_score) for reason, text in BAD_CAPTIONS.items()]
    bad += [("converted_mode", data, ext, caption, ok_score) for data, ext in _converted_images(rng, image_size)]

    too_small, ext = _bad_images(rng, image_size)["too_small"]
    rows: list[dict[str, Any]] = []
    expected: dict[str, int] = {}
    good_keys: list[str] = []
    slow_paths: list[str] = []
    for index, item in _interleave(bad, ("too_small", too_small, ext, caption, ok_score)):
        if item is None:
            row = good_row(seed, index, image_size, base, image_dir)
            rows.append({**row, "text": row["text"].encode()})
            good_keys.append(row["uid"])
            continue
        reason, data, ext, text, score = item
        uid = uid_of(index)
        name = f"{uid}.{ext}"
        if data is not None:
            (image_dir / name).write_bytes(data)
        if reason == "timeout":
            slow_paths.append(f"/{name}")
        if reason == "converted_mode":
            good_keys.append(uid)
        expected[reason] = expected.get(reason, 0) + 1
        rows.append(
            {
                "uid": uid,
                "url": f"{base}/{name}",
                "text": text,
                "original_width": image_size,
                "original_height": image_size,
                "clip_b32_similarity_score": score,
                "clip_l14_similarity_score": score,
                "face_bboxes": [],
                "sha256": None,
            }
        )
    write_rows(rows, path, text_type="binary")
    return PlantedSamples(str(path), expected, good_keys, slow_paths)
