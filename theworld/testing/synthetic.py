"""Synthetic DataComp-style image–caption data for tests and demos.

Each sample is a coloured shape on a contrasting background, drawn with ``PIL.ImageDraw``;
its caption is a deterministic function of what was drawn ("a red star on a blue background"),
so a model can learn it. Sample ``i`` of seed ``s`` depends only on ``(s, i)``: the same sample
comes out whatever the shard layout or output format.

Two layouts are written:

* img2dataset-style WebDataset tars: ``shard-00000.tar`` with ``{key}.jpg``, ``{key}.txt``,
  ``{key}.json`` per sample;
* DataComp-style metadata parquet (``uid``, ``url``, ``text``, ...) plus the JPEGs in a folder
  that a local HTTP server serves (see :mod:`theworld.testing.http`).

CLI::

    python -m theworld.testing.synthetic --out data/synth --format webdataset --shards 8 --per-shard 100
    python -m theworld.testing.synthetic --out data/synth --format parquet --shards 2 --per-shard 100 \\
        --url-base http://127.0.0.1:8000    # then serve data/synth/images on port 8000
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

from theworld.data.webdataset import shard_writer
from theworld.demo_grammar import ATTRIBUTE_CHANCE, COLORS, SHAPES, contrasting, describe  # noqa: F401 (re-exported)

# Score range of good parquet rows; the planted low-score row is far below it.
GOOD_CLIP_SCORE_RANGE = (0.25, 0.40)
LOW_CLIP_SCORE = 0.05


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


def render_sample(rng: random.Random, size: int = 64) -> tuple[Image.Image, str]:
    """Draw one coloured shape of random size near the centre; return ``(RGB image, caption)``.

    >>> image, caption = render_sample(random.Random(0))
    >>> caption  # doctest: +SKIP
    'a red star on a blue background'
    """
    shape = rng.choice(SHAPES)
    color = rng.choice(list(COLORS))
    background = rng.choice(contrasting(color))
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
    return image, describe(color, shape, background)


def sample_rng(seed: int, index: int) -> random.Random:
    """The RNG of sample ``index``: samples don't depend on shard layout or format."""
    return random.Random(f"{seed}:{index}")


def make_key(index: int) -> str:
    return f"{index:09d}"


def encode_image(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def good_members(seed: int, index: int, image_size: int) -> dict[str, bytes]:
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
        with shard_writer(str(path)) as writer:
            for index in range(shard * samples_per_shard, (shard + 1) * samples_per_shard):
                writer.write({"__key__": make_key(index), **good_members(seed, index, image_size)})
        paths.append(str(path))
    return paths


def parquet_schema(text_type: str = "string"):
    """DataComp's metadata columns (``text`` as ``binary`` can hold invalid UTF-8, for bad-sample tests)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("uid", pa.string()),
            ("url", pa.string()),
            ("text", pa.binary() if text_type == "binary" else pa.string()),
            ("original_width", pa.int64()),
            ("original_height", pa.int64()),
            ("clip_b32_similarity_score", pa.float64()),
            ("clip_l14_similarity_score", pa.float64()),
            ("face_bboxes", pa.list_(pa.list_(pa.float64()))),  # normalised x0, y0, x1, y1 per face
            ("sha256", pa.string()),
        ]
    )


def uid_of(index: int) -> str:
    return f"{index:032x}"  # DataComp uids are 32 hex digits


def good_row(seed: int, index: int, image_size: int, image_url_base: str, image_dir: Path) -> dict:
    rng = sample_rng(seed, index)
    image, caption = render_sample(rng, image_size)
    uid = uid_of(index)
    data = encode_image(image)
    (image_dir / f"{uid}.jpg").write_bytes(data)
    return {
        "uid": uid,
        "url": f"{image_url_base}/{uid}.jpg",
        "text": caption,
        "original_width": image.width,
        "original_height": image.height,
        "clip_b32_similarity_score": rng.uniform(*GOOD_CLIP_SCORE_RANGE),
        "clip_l14_similarity_score": rng.uniform(*GOOD_CLIP_SCORE_RANGE),
        "face_bboxes": [],
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def write_rows(rows: list[dict], out_path: str | Path, text_type: str = "string") -> None:
    """DataComp-schema rows into a parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema(text_type)), out_path)


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
    rows = [good_row(seed, i, image_size, base, image_dir) for i in range(start_index, start_index + num_rows)]
    write_rows(rows, out_path)
    return str(out_path)


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
