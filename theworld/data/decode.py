"""Untrusted image bytes and captions -> a usable sample, or the reason it is skipped.

Every record a source reads ends as an :class:`Outcome`. Reasons, as counted in ``data/skipped_<reason>``:

=====================  ====================================================================
``http_error``          download failed: HTTP 4xx/5xx, connection or DNS error, bad URL
``timeout``             download slower than ``timeout_s`` (after retries)
``corrupt``             bytes PIL can't decode
``truncated``           image data ends early
``decompression_bomb``  more than ``max_image_pixels`` pixels
``too_small``           shorter side below ``min_image_size``
``missing_caption``     no caption
``empty_caption``       caption is only whitespace
``bad_utf8``            caption bytes are not valid UTF-8
``low_clip_score``      below ``clip_score_threshold`` (parquet)
``hash_mismatch``       downloaded bytes differ from the metadata's ``sha256`` (``verify_sha256``)
``missing_image``       tar sample without an image member (webdataset)
``shard_error``         a shard could not be opened or read to the end (webdataset)
``unexpected_error``    fetching or decoding one image raised something unforeseen (hf; logged once per type)
``converted_mode``      not a skip: the yielded sample was L/CMYK/P/RGBA/... converted to RGB
                        (alpha composited on white)
=====================  ====================================================================
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageFilter

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# Every reason a ``skipped`` counter can hold (the table above), in a fixed order for reductions across ranks.
SKIP_REASONS = (
    "http_error", "timeout", "corrupt", "truncated", "decompression_bomb", "too_small", "missing_caption",
    "empty_caption", "bad_utf8", "low_clip_score", "missing_image", "shard_error", "converted_mode", "hash_mismatch",
    "unexpected_error",
)


@dataclass
class Outcome:
    """What became of one record: a usable sample (``reason is None``) or why it was skipped."""

    key: str
    image: Image.Image | None = None
    text: str | None = None
    reason: str | None = None
    converted: bool = False
    image_bytes: bytes | None = None
    world_latents: bytes | None = None


def decode_caption(raw: str | bytes | None) -> tuple[str | None, str | None]:
    """Return ``(caption, None)`` or ``(None, reason)``; bytes must be UTF-8."""
    if raw is None:
        return None, "missing_caption"
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "bad_utf8"
    text = raw.strip()
    if not text:
        return None, "empty_caption"
    return text, None


def decode_image(
    data: bytes, min_image_size: int, max_image_pixels: int
) -> tuple[Image.Image | None, str | None, bool]:
    """Decode untrusted image bytes to a loaded RGB image.

    Returns ``(image, None, converted)`` or ``(None, reason, False)``. Size limits are checked on
    the header, before any pixels are decoded, so a decompression bomb costs nothing; PIL's own
    global bomb check (``Image.MAX_IMAGE_PIXELS``) still applies on top.

    >>> image, reason, converted = decode_image(data, min_image_size=32, max_image_pixels=50_000_000)  # doctest: +SKIP
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_image_pixels:
            return None, "decompression_bomb", False
        if min(width, height) < min_image_size:
            return None, "too_small", False
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, "decompression_bomb", False
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ...) on bad bytes
        return None, ("truncated" if "truncated" in str(error).lower() else "corrupt"), False
    if image.mode == "RGB":
        return image, None, False
    return _to_rgb(image), None, True


def blur_faces(image: Image.Image, boxes: Sequence[Sequence[float]]) -> Image.Image:
    """Blurs each face box (DataComp's ``face_bboxes``: normalised ``x0, y0, x1, y1``) of the full-size image, as
    DataComp's own downloader does before any resize; pixels outside the boxes are left exactly as they were.

    The blur radius grows with the box (a tenth of its longer side, at least 2 px), so a face stays unreadable
    whatever its size.
    """
    width, height = image.size
    blurred = image.copy()
    for x0, y0, x1, y1 in boxes:
        box = (max(0, int(x0 * width)), max(0, int(y0 * height)),
               min(width, -int(-x1 * width)), min(height, -int(-y1 * height)))  # outward to whole pixels
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        radius = max(2.0, 0.1 * max(box[2] - box[0], box[3] - box[1]))
        blurred.paste(blurred.crop(box).filter(ImageFilter.GaussianBlur(radius)), box[:2])
    return blurred


def _to_rgb(image: Image.Image) -> Image.Image:
    # Transparent pixels often hide arbitrary (usually black) colour: show white instead.
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")
