"""The caption grammar of the synthetic demo data ("a red star on a blue background"): its words, and the attributes
a caption in it names.

The data generator (:mod:`theworld.testing.synthetic`) draws from these words, and the held-out caption check
(:mod:`theworld.captions`) scores each attribute where every reference follows the grammar: the core declares the
grammar, the test data uses it.

Example:
    >>> caption_attributes("a red star on a blue background")
    {'shape colour': 'red', 'shape': 'star', 'background': 'blue'}
    >>> caption_attributes("a photo of a dog") is None
    True
"""

from __future__ import annotations

import math
import re

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
SHAPES = ("circle", "square", "diamond", "triangle", "hexagon", "star")
# Pairs closer than this (Euclidean RGB) are not used as shape/background: they would be hard to see.
MIN_CONTRAST = 150.0

_CAPTION = re.compile(r"a (?P<color>\w+) (?P<shape>\w+) on a (?P<background>\w+) background")


def contrasting(color: str) -> list[str]:
    """The colours that stand out against ``color``, in ``COLORS``'s order."""
    return [other for other in COLORS if math.dist(COLORS[color], COLORS[other]) >= MIN_CONTRAST]


def describe(color: str, shape: str, background: str) -> str:
    """The caption of a ``color`` ``shape`` on a ``background``."""
    return f"a {color} {shape} on a {background} background"


def _background_share(background: str) -> float:
    return sum(1 / len(contrasting(c)) for c in COLORS if background in contrasting(c)) / len(COLORS)


# What the best blind guess scores per attribute (always the most frequent value).
ATTRIBUTE_CHANCE = {
    "shape colour": 1 / len(COLORS),
    "shape": 1 / len(SHAPES),
    "background": max(map(_background_share, COLORS)),
}


def caption_attributes(text: str) -> dict[str, str] | None:
    """``{"shape colour", "shape", "background"}`` of a caption in this grammar, else None."""
    match = _CAPTION.fullmatch(text.strip())
    if match is None:
        return None
    return {"shape colour": match["color"], "shape": match["shape"], "background": match["background"]}
