"""Synthetic DataComp-style image–caption data for tests and demos.

Each sample is a coloured shape on a contrasting background, drawn with ``PIL.ImageDraw``;
its caption is a deterministic function of what was drawn ("a red star on a blue background"),
so a model can learn it. Sample ``i`` of seed ``s`` depends only on ``(s, i)``: the same sample
comes out whatever the shard layout or output format.

Two layouts are written:

* img2dataset-style WebDataset tars: ``shard-00000.tar`` with ``{key}.jpg``, ``{key}.txt``,
  ``{key}.json`` per sample;
* DataComp-style metadata parquet (``uid``, ``url``, ``text``, ...) plus the JPEGs in a folder
  that a local HTTP server serves (see :mod:`theworld.data.testing_http`).

:func:`write_bad_samples` plants one sample of every bad kind that
:mod:`theworld.data.sources` must skip (or convert) and says how many of each it planted.

CLI::

    python -m theworld.data.synthetic --out data/synth --format webdataset --shards 8 --per-shard 100
    python -m theworld.data.synthetic --out data/synth --format parquet --shards 2 --per-shard 100 \\
        --url-base http://127.0.0.1:8000    # then serve data/synth/images on port 8000
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import re
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from theworld.data.sources import add_tar_sample

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 30),
    "purple": (130, 50, 170),
    "orange": (245, 135, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
# Pairs closer than this (Euclidean RGB) are not used as shape/background: they would be hard to see.
_MIN_CONTRAST = 150.0
# Score range of good parquet rows; the planted low-score row is far below it.
GOOD_CLIP_SCORE_RANGE = (0.25, 0.40)
LOW_CLIP_SCORE = 0.05


def _contrasting(color: str) -> list[str]:
    return [other for other in COLORS if math.dist(COLORS[color], COLORS[other]) >= _MIN_CONTRAST]


# Polygon shapes: (vertices, angle of the first vertex, radius of odd vertices relative to r).
_POLYGONS: dict[str, tuple[int, float, float]] = {
    "square": (4, -math.pi / 4, 1.0),
    "diamond": (4, -math.pi / 2, 1.0),
    "triangle": (3, -math.pi / 2, 1.0),
    "hexagon": (6, 0.0, 1.0),
    "star": (10, -math.pi / 2, 0.45),
}


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of ``shape`` with circumradius ``r`` centred at ``(cx, cy)``."""
    n, start, inner = _POLYGONS[shape]
    points = []
    for k in range(n):
        angle = start + 2 * math.pi * k / n
        radius = r if k % 2 == 0 else inner * r
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


SHAPES = ("circle", *_POLYGONS)


def render_sample(rng: random.Random, size: int = 64) -> tuple[Image.Image, str]:
    """Draw one coloured shape of random size near the centre; return ``(RGB image, caption)``.

    >>> image, caption = render_sample(random.Random(0))
    >>> caption  # doctest: +SKIP
    'a red star on a blue background'
    """
    shape = rng.choice(SHAPES)
    color = rng.choice(list(COLORS))
    background = rng.choice(_contrasting(color))
    # Large shapes near the centre: at the demo's 64 px the VAE sees an 8x8 latent grid, and a shape must span
    # enough of it for its outline to be told apart (small shapes anywhere make the shape a coin toss).
    r = rng.uniform(0.38, 0.42) * size
    cx = cy = size / 2

    image = Image.new("RGB", (size, size), COLORS[background])
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLORS[color])
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=COLORS[color])
    return image, f"a {color} {shape} on a {background} background"


_CAPTION = re.compile(r"a (?P<color>\w+) (?P<shape>\w+) on a (?P<background>\w+) background")


def _background_share(background: str) -> float:
    return sum(1 / len(_contrasting(c)) for c in COLORS if background in _contrasting(c)) / len(COLORS)


# What the best blind guess scores per attribute (always the most frequent value).
ATTRIBUTE_CHANCE = {"shape colour": 1 / len(COLORS), "shape": 1 / len(SHAPES),
                    "background": max(map(_background_share, COLORS))}


def caption_attributes(caption: str) -> dict[str, str] | None:
    """``{"shape colour", "shape", "background"}`` of a caption in this generator's grammar, else None."""
    match = _CAPTION.fullmatch(caption.strip())
    if match is None:
        return None
    return {"shape colour": match["color"], "shape": match["shape"], "background": match["background"]}


def sample_rng(seed: int, index: int) -> random.Random:
    """The RNG of sample ``index``: samples don't depend on shard layout or format."""
    return random.Random(f"{seed}:{index}")


def make_key(index: int) -> str:
    return f"{index:09d}"


def encode_image(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _good_members(seed: int, index: int, image_size: int) -> dict[str, bytes]:
    key = make_key(index)
    image, caption = render_sample(sample_rng(seed, index), image_size)
    meta = {"key": key, "caption": caption, "width": image.width, "height": image.height}
    return {"jpg": encode_image(image), "txt": caption.encode(), "json": json.dumps(meta).encode()}


def write_webdataset_shards(
    out_dir: str | Path,
    num_shards: int,
    samples_per_shard: int,
    seed: int = 0,
    image_size: int = 64,
    prefix: str = "shard",
) -> list[str]:
    """Write ``{prefix}-00000.tar`` ... img2dataset-style; keys run ``000000000`` upwards across shards.

    >>> paths = write_webdataset_shards("/tmp/synth", num_shards=2, samples_per_shard=10)  # doctest: +SKIP
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        path = out / f"{prefix}-{shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for index in range(shard * samples_per_shard, (shard + 1) * samples_per_shard):
                add_tar_sample(tar, make_key(index), _good_members(seed, index, image_size))
        paths.append(str(path))
    return paths


_PARQUET_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("original_width", pa.int64()),
        ("original_height", pa.int64()),
        ("clip_b32_similarity_score", pa.float64()),
    ]
)


def _uid(index: int) -> str:
    return f"{index:032x}"  # DataComp uids are 32 hex digits


def _good_row(seed: int, index: int, image_size: int, image_url_base: str, image_dir: Path) -> dict:
    rng = sample_rng(seed, index)
    image, caption = render_sample(rng, image_size)
    uid = _uid(index)
    (image_dir / f"{uid}.jpg").write_bytes(encode_image(image))
    return {
        "uid": uid,
        "url": f"{image_url_base}/{uid}.jpg",
        "text": caption,
        "original_width": image.width,
        "original_height": image.height,
        "clip_b32_similarity_score": rng.uniform(*GOOD_CLIP_SCORE_RANGE),
    }


def write_parquet(
    out_path: str | Path,
    num_rows: int,
    image_url_base: str,
    seed: int = 0,
    image_size: int = 64,
    image_dir: str | Path | None = None,
    start_index: int = 0,
) -> str:
    """Write DataComp-style metadata to ``out_path`` and the JPEGs to ``image_dir``.

    ``image_dir`` defaults to ``<parent of out_path>/images``; serve it at ``image_url_base``
    (``url = f"{image_url_base}/{uid}.jpg"``). ``start_index`` offsets the uids (and picks the
    samples) so that several files written for one dataset don't collide.

    >>> url, stop = serve_directory("/tmp/pq/images")  # doctest: +SKIP
    >>> write_parquet("/tmp/pq/part-0.parquet", 100, url)  # doctest: +SKIP
    """
    out_path = Path(out_path)
    image_dir = Path(image_dir) if image_dir is not None else out_path.parent / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    base = image_url_base.rstrip("/")
    rows = [_good_row(seed, i, image_size, base, image_dir) for i in range(start_index, start_index + num_rows)]
    pq.write_table(pa.Table.from_pylist(rows, schema=_PARQUET_SCHEMA), out_path)
    return str(out_path)


# ---------------------------------------------------------------------------------------------
# Bad samples


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
    """Plant one sample of every bad kind, each followed by two good samples.

    ``fmt="webdataset"`` writes ``out_dir/bad-00000.tar``; ``fmt="parquet"`` writes
    ``out_dir/bad.parquet`` with its images in ``out_dir/images`` (served at ``image_url_base``),
    a missing file for ``http_error`` and a file for ``timeout`` that must be served slowly
    (``slow_paths``). The parquet ``text`` column is binary so it can hold invalid UTF-8; the
    planted low-score row needs ``clip_score_threshold`` between ``LOW_CLIP_SCORE`` and
    ``GOOD_CLIP_SCORE_RANGE[0]``.

    Each bad sample is followed by two good ones so that the last sample is good (trailing skip
    counts have no item to ride on) and every consumer of a two-way row split gets good samples.
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


def _interleave(bad: list) -> list[tuple[int, object | None]]:
    """``(index, item)`` for each bad item, each followed by two good slots ``(index, None)``."""
    entries: list[tuple[int, object | None]] = []
    for item in bad:
        base = len(entries)
        entries += [(base, item), (base + 1, None), (base + 2, None)]
    return entries


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

    expected: dict[str, int] = {}
    good_keys = []
    with tarfile.open(path, "w") as tar:
        for index, item in _interleave(bad):
            key = make_key(index)
            if item is None:
                add_tar_sample(tar, key, _good_members(seed, index, image_size))
                good_keys.append(key)
                continue
            reason, members = item
            add_tar_sample(tar, key, members)
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
    bad = [(reason, data, ext, caption, ok_score) for reason, (data, ext) in _bad_images(rng, image_size).items()]
    bad += [
        ("http_error", None, "jpg", caption, ok_score),
        ("timeout", good_image, "jpg", caption, ok_score),
        ("low_clip_score", good_image, "jpg", caption, LOW_CLIP_SCORE),
    ]
    bad += [(reason, good_image, "jpg", text, ok_score) for reason, text in BAD_CAPTIONS.items()]
    bad += [("converted_mode", data, ext, caption, ok_score) for data, ext in _converted_images(rng, image_size)]

    rows, expected, good_keys, slow_paths = [], {}, [], []
    for index, item in _interleave(bad):
        if item is None:
            row = _good_row(seed, index, image_size, base, image_dir)
            rows.append({**row, "text": row["text"].encode()})
            good_keys.append(row["uid"])
            continue
        reason, data, ext, text, score = item
        uid = _uid(index)
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
            }
        )
    schema = _PARQUET_SCHEMA.set(_PARQUET_SCHEMA.get_field_index("text"), pa.field("text", pa.binary()))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return PlantedSamples(str(path), expected, good_keys, slow_paths)


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=("webdataset", "parquet"), default="webdataset")
    parser.add_argument("--shards", type=int, default=4, help="tar shards or parquet files")
    parser.add_argument("--per-shard", type=int, default=100, help="samples per shard / rows per file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--url-base", default="http://127.0.0.1:8000", help="parquet only: where OUT/images will be served"
    )
    args = parser.parse_args(argv)

    if args.format == "webdataset":
        paths = write_webdataset_shards(args.out, args.shards, args.per_shard, args.seed, args.image_size)
    else:
        paths = [
            write_parquet(
                Path(args.out) / f"part-{shard:05d}.parquet",
                args.per_shard,
                args.url_base,
                seed=args.seed,
                image_size=args.image_size,
                start_index=shard * args.per_shard,
            )
            for shard in range(args.shards)
        ]
        print(f"serve the images with: python -m http.server <port> --directory {Path(args.out) / 'images'}")
    print("\n".join(paths))


if __name__ == "__main__":
    main()
