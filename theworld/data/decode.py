"""Untrusted image bytes and captions -> a usable sample, or the reason it is skipped.

Every record a source reads ends as an :class:`Outcome`. Reasons, as counted in ``data/skipped_<reason>``:

=====================  ====================================================================
``http_error``          download failed: HTTP 4xx/5xx, connection or DNS error, bad URL
``timeout``             download slower than ``timeout_s`` (after retries)
``corrupt``             bytes PIL can't decode
``unsupported_format``  a GIF: DataComp's downloader (OpenCV) cannot decode it, so it is not in DataComp's pool
``truncated``           image data ends early
``decompression_bomb``  more than ``max_image_pixels`` pixels
``too_small``           shorter side below ``min_image_size``
``missing_caption``     no caption
``empty_caption``       caption is only whitespace
``bad_utf8``            caption bytes are not valid UTF-8
``missing_answer``      a question without an answer (question-answer data)
``empty_question``      a question that is only whitespace, or a conversation without its question
``answer_not_a_choice`` a multiple-choice answer that is neither one of the choices nor a choice's letter
``multi_turn``          a conversation of more than one question and answer (only single-turn ones are read)
``not_in_subset``       its uid is not in DataComp's ``subset_file``
``low_clip_score``      below ``clip_score_threshold``, or no score
``hash_mismatch``       downloaded bytes differ from the metadata's ``sha256`` (``verify_sha256``)
``opted_out``           its server's ``X-Robots-Tag`` forbids use (``disallowed_header_directives``, hf)
``too_large``           a download over ``max_image_bytes`` (hf)
``missing_image``       tar sample without an image member (webdataset), empty ``image_column`` (hf)
``shard_error``         a shard could not be opened or read to the end (webdataset)
``unexpected_error``    fetching or decoding one image raised something unforeseen (hf; logged once per type)
``converted_mode``      not a skip: the yielded sample was L/CMYK/P/RGBA/... converted to RGB
                        (alpha composited on white)
=====================  ====================================================================
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from theworld.prompts import multiple_choice_prompt, option_letters

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
IMAGE_PLACEHOLDER = "<image>"  # where a LLaVA-style conversation puts the image
# Every reason a ``skipped`` counter can hold (the table above), in a fixed order for reductions across ranks.
SKIP_REASONS = (
    "http_error",
    "timeout",
    "corrupt",
    "unsupported_format",
    "truncated",
    "decompression_bomb",
    "too_large",
    "too_small",
    "missing_caption",
    "empty_caption",
    "bad_utf8",
    "missing_answer",
    "empty_question",
    "answer_not_a_choice",
    "multi_turn",
    "low_clip_score",
    "not_in_subset",
    "opted_out",
    "missing_image",
    "shard_error",
    "converted_mode",
    "hash_mismatch",
    "unexpected_error",
)


@dataclass
class Outcome:
    """What became of one record: a usable sample (``reason is None``) or why it was skipped."""

    key: str
    image: Image.Image | None = None
    text: str | None = None
    prompt: str | None = None  # question-answer data: this sample's prompt (``text`` is its answer)
    reason: str | None = None
    converted: bool = False
    image_bytes: bytes | None = None
    world_latents: bytes | None = None
    key_kind: str = "uid"  # what ``key`` is (theworld.provenance.KEY_KINDS)


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


def decode_question(
    question: str | None, answer: str | None, choices: Sequence[str] | None = None
) -> tuple[str | None, str | None, str | None]:
    """A question and its answer -> ``(prompt, answer, None)``, or ``(None, None, reason)``.

    With ``choices`` the prompt is :func:`theworld.prompts.multiple_choice_prompt` and the answer the option's
    letter, ``(A)``, whether the data gives the letter (``(A)`` or ``A``) or the choice's text.

    >>> decode_question("Which shape is larger?", "the right one", ["the left one", "the right one"])
    ('Which shape is larger?\\nSelect from the following choices.\\n(A) the left one\\n(B) the right one', '(B)', None)
    """
    question = (question or "").strip()
    if not question:
        return None, None, "empty_question"
    answer = "" if answer is None else str(answer).strip()
    if not answer:
        return None, None, "missing_answer"
    if not choices:
        return question, answer, None
    letters = option_letters(len(choices))
    if answer.strip("()") in [letter.strip("()") for letter in letters]:
        answer = f"({answer.strip('()')})"
    elif answer in choices:
        answer = letters[list(choices).index(answer)]
    else:
        return None, None, "answer_not_a_choice"
    return multiple_choice_prompt(question, choices), answer, None


def decode_conversation(turns: Sequence[dict] | None) -> tuple[str | None, str | None, str | None]:
    """A LLaVA-style single-turn ``conversations`` list (``[{"from": "human", "value": "<image>\\n..."},
    {"from": "gpt", "value": "..."}]``) -> ``(prompt, answer, None)``, or ``(None, None, reason)``. The
    ``<image>`` placeholder is dropped: the image has its own place in the sequence.

    >>> decode_conversation([{"from": "human", "value": "<image>\\nWhat is it?"}, {"from": "gpt", "value": "A star."}])
    ('What is it?', 'A star.', None)
    """
    turns = list(turns or [])
    if len(turns) > 2:
        return None, None, "multi_turn"
    speakers = [turn.get("from") for turn in turns if isinstance(turn, dict)]
    if len(speakers) < 1 or speakers[0] != "human":
        return None, None, "empty_question"
    if speakers != ["human", "gpt"]:
        return None, None, "missing_answer"
    question = turns[0].get("value") or ""
    return decode_question(question.replace(IMAGE_PLACEHOLDER, ""), turns[1].get("value"))


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
        if image.format == "GIF":  # DataComp's downloader decodes with OpenCV, which reads no GIF: not in its pool
            return None, "unsupported_format", False
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


# DataComp's download (img2dataset 1.40.0 as its download_upstream.py runs it) keeps at most this many pixels on an
# image's longer side, and blurs the faces after that resize.
DATACOMP_IMAGE_SIZE = 512


def datacomp_resize(image: Image.Image) -> Image.Image:
    """Shrinks ``image`` to at most 512 px on its longer side, keeping the ratio and never enlarging, as DataComp's
    download does before it blurs (``resize_mode=keep_ratio_largest, resize_only_if_bigger=True``, OpenCV's
    ``INTER_AREA``, sizes rounded as albumentations rounds them): the same pixels.

    >>> datacomp_resize(Image.new("RGB", (1024, 600))).size
    (512, 300)
    """
    width, height = image.size
    scale = DATACOMP_IMAGE_SIZE / max(width, height)
    if scale >= 1:
        return image
    pixels = _area_average(np.asarray(image, np.float64), round(height * scale), axis=0)
    return Image.fromarray(np.rint(_area_average(pixels, round(width * scale), axis=1)).astype(np.uint8))


def _area_average(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """``values`` shrunk along ``axis`` to ``size`` cells, each the mean of the input over the cell's exact span,
    fractions of pixels included (what ``INTER_AREA`` does; PIL's box filter takes whole pixels only)."""
    length = values.shape[axis]
    edges = np.arange(size + 1) * (length / size)  # the cells' edges, in input pixels
    whole = np.minimum(edges.astype(int), length - 1)
    fraction = (edges - whole).reshape([-1 if a == axis else 1 for a in range(values.ndim)])
    running = np.cumsum(values, axis=axis)  # the input's integral up to each pixel's far edge
    before = np.take(running, whole, axis=axis) - np.take(values, whole, axis=axis)  # ... up to its near edge
    integral = before + np.take(values, whole, axis=axis) * fraction
    return np.diff(integral, axis=axis) / (length / size)


def blur_faces(image: Image.Image, boxes: Sequence[Sequence[float]]) -> Image.Image:
    """Blurs the face boxes (DataComp's ``face_bboxes``: normalised ``x0, y0, x1, y1``), never weaker than DataComp's
    downloader (img2dataset 1.40.0) on the same pixels.

    As img2dataset: each box is widened by a tenth of its longer side on every side, and one Gaussian blurs all
    boxes, its sigma a tenth of the largest box's longer side (here at least 2 px). Unlike it, the blurred image
    replaces the whole widened box, and outside it the blend fades as ``exp(-d^2 / 2 sigma^2)`` with the distance
    ``d`` from the box: at least img2dataset's blurred-mask weight everywhere, so the soft-edged region covers
    DataComp's and no pixel keeps more detail, a small face beside a large one included (img2dataset's mask, blurred
    with the large face's sigma, keeps most of a small face). Pixels further than 4 sigma from every box are left
    exactly as they were.

    >>> blurred = blur_faces(image, [[0.25, 0.2, 0.5, 0.6], [0.7, 0.1, 0.75, 0.2]])  # doctest: +SKIP
    """
    width, height = image.size
    widened = []  # (left, top, right, bottom) in pixel edges, whole pixels outward: covers img2dataset's box
    for x0, y0, x1, y1 in boxes:
        left, top = math.floor(x0 * width), math.floor(y0 * height)
        right, bottom = math.ceil(x1 * width), math.ceil(y1 * height)
        if right <= left or bottom <= top:
            continue
        side = max(right - left, bottom - top)
        margin = 0.1 * side
        widened.append(
            (
                side,
                math.floor(left - margin),
                math.floor(top - margin),
                math.ceil(right + margin),
                math.ceil(bottom + margin),
            )
        )
    if not widened:
        return image
    sigma = max(2.0, 0.1 * max(box[0] for box in widened))
    reach = math.ceil(4 * sigma)
    weight = np.zeros((height, width), np.float32)
    for _, left, top, right, bottom in widened:
        x_span = slice(max(0, left - reach), max(0, min(width, right + reach)))
        y_span = slice(max(0, top - reach), max(0, min(height, bottom + reach)))
        xs = np.arange(x_span.start, x_span.stop) + 0.5  # pixel centres
        ys = np.arange(y_span.start, y_span.stop) + 0.5
        dx = np.maximum(np.maximum(left - xs, xs - right), 0)
        dy = np.maximum(np.maximum(top - ys, ys - bottom), 0)
        fade = np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2 * sigma**2)).astype(np.float32)
        np.maximum(weight[y_span, x_span], fade, out=weight[y_span, x_span])
    weight[weight < math.exp(-8)] = 0  # beyond 4 sigma: untouched
    original = np.asarray(image, np.float32)
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(sigma)), np.float32)
    mixed = original + (blurred - original) * weight[..., None]
    return Image.fromarray(np.rint(mixed).astype(np.uint8))


def _to_rgb(image: Image.Image) -> Image.Image:
    # Transparent pixels often hide arbitrary (usually black) colour: show white instead.
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")
