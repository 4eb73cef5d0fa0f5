"""Figures comparing two face blurs of the same image: how much of each box's detail is left, where pixels changed,
and how close the two are inside the boxes (tests/test_datacomp_download.py, bench/datacomp_blur.py)."""

import numpy as np


def pixel_boxes(boxes, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Normalised boxes in whole pixels as img2dataset 1.40.0 takes them (``int(x * width)``)."""
    return [(int(x0 * width), int(y0 * height), int(x1 * width), int(y1 * height)) for x0, y0, x1, y1 in boxes]


def contrast_left(before: np.ndarray, after: np.ndarray, box) -> float:
    """The share of a box's contrast (its pixels' standard deviation, per channel, averaged) a blur left."""
    x0, y0, x1, y1 = box
    region = (slice(y0, y1), slice(x0, x1))
    return float(after[region].std(axis=(0, 1)).mean() / before[region].std(axis=(0, 1)).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(float) - b.astype(float)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def blur_figures(before, theirs, ours, boxes) -> dict:
    """``before``: the image unblurred; ``theirs`` and ``ours``: blurred (uint8 H x W x 3 arrays of one size).

    ``contrast_left``: per box, the share of contrast each left; ``changed_outside``: pixels changed by more than 2
    levels outside the boxes (img2dataset truncates blended pixels; JPEG noise moves them by 1-2); ``covered``: of
    the pixels ``theirs`` changed by more than 2 levels, the share ``ours`` changed too;
    ``psnr_in_boxes``: ``ours`` against ``theirs`` inside the boxes, in dB.
    """
    height, width = before.shape[:2]
    inside = np.zeros((height, width), bool)
    boxes = pixel_boxes(boxes, width, height)
    for x0, y0, x1, y1 in boxes:
        inside[y0:y1, x0:x1] = True
    before, theirs, ours = (np.asarray(a, dtype=np.int32) for a in (before, theirs, ours))
    changed_theirs = np.abs(theirs - before).max(axis=-1)
    changed_ours = np.abs(ours - before).max(axis=-1)
    return {
        "contrast_left": {"theirs": [round(contrast_left(before, theirs, box), 3) for box in boxes],
                          "ours": [round(contrast_left(before, ours, box), 3) for box in boxes]},
        "changed_outside": {"theirs": int((changed_theirs[~inside] > 2).sum()),
                            "ours": int((changed_ours[~inside] > 2).sum())},
        "covered": round(float((changed_ours[changed_theirs > 2] > 0).mean()), 4),
        "psnr_in_boxes": round(psnr(ours[inside], theirs[inside]), 1),
    }
