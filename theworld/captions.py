"""Held-out caption checks: how close generated captions come to the references.

``score_captions`` needs no model: TheWorldModule generates captions for the first validation images and
hands the pairs here. CIDEr and BLEU-4 (the COCO caption scorers of ``pycocoevalcap``, on captions lowercased and
split at punctuation here, as its Java tokenizer would) are always reported: they mean something on web alt-text.
Exact match and the per-attribute scores, beside the rate a guess would reach, only where the data declares a
grammar: every reference a caption of the demo's (:mod:`theworld.demo_grammar`, "a red star on a blue background").

Example:
    >>> score_captions([CaptionSample("0", "a red star on a white background", "a red star on a blue background")])
    CaptionScores(samples=1, cider=..., bleu4=..., exact=0.0, attributes={'shape colour': 1.0, 'shape': 1.0, ...}, ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from PIL import Image

from theworld.demo_grammar import ATTRIBUTE_CHANCE, caption_attributes

# Words and single punctuation marks: what the COCO tokenizer splits a caption into (its punctuation is dropped).
_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
_PUNCTUATION = re.compile(r"[^\w\s]")


@dataclass
class CaptionSample:
    """One held-out image with the model's caption beside the reference."""

    key: str
    reference: str
    generated: str
    image: Image.Image | None = None


@dataclass
class CaptionScores:
    """Scores of ``samples`` held-out captions: corpus CIDEr (0-10) and BLEU-4 (0-1); with a grammar, the fraction
    exactly right and right in each attribute (``exact`` is None without one)."""

    samples: int
    cider: float
    bleu4: float
    exact: float | None = None
    attributes: dict[str, float] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)

    def metrics(self, prefix: str = "val/caption_") -> dict[str, float]:
        """For loggers: ``val/caption_cider``, ``val/caption_bleu4``, and with a grammar ``val/caption_exact`` and
        ``val/caption_<attribute>``."""
        named = {"cider": self.cider, "bleu4": self.bleu4}
        if self.exact is not None:
            named |= {"exact": self.exact, **{name.replace(" ", "_"): value for name, value in self.attributes.items()}}
        return {f"{prefix}{name}": value for name, value in named.items()}

    def __str__(self) -> str:
        overlap = f"CIDEr {self.cider:.2f}, BLEU-4 {self.bleu4:.2f}"
        if self.exact is None:
            return f"{overlap} on {self.samples} held-out captions"
        text = f"{self.exact:.0%} of {self.samples} held-out captions exactly right"
        if self.attributes:
            parts = [f"{name} {value:.0%} (chance {self.chance[name]:.0%})" for name, value in self.attributes.items()]
            text += "; " + ", ".join(parts)
        return f"{text}; {overlap}"


def tokenize(caption: str) -> str:
    """Lowercased words separated by single spaces, punctuation dropped (the COCO tokenizer's output).

    >>> tokenize("A dog, running on the beach!")
    'a dog running on the beach'
    """
    return " ".join(token for token in _TOKEN.findall(caption.lower()) if not _PUNCTUATION.fullmatch(token))


def caption_overlap(samples: list[CaptionSample]) -> tuple[float, float]:
    """Corpus ``(CIDEr, BLEU-4)`` of the generated captions against the references (one reference each)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if not samples:
        return 0.0, 0.0
    # The scorers fail on empty strings: an empty caption is one unmatched word.
    references = {i: [tokenize(s.reference) or "<empty>"] for i, s in enumerate(samples)}
    generated = {i: [tokenize(s.generated) or "<empty>"] for i, s in enumerate(samples)}
    bleu, _ = Bleu(4).compute_score(references, generated, verbose=0)
    cider, _ = Cider().compute_score(references, generated)
    return float(cider), float(bleu[3])


def score_captions(samples: list[CaptionSample]) -> CaptionScores:
    cider, bleu4 = caption_overlap(samples)
    references = [caption_attributes(s.reference) for s in samples]
    known = [r for r in references if r is not None]
    if not samples or len(known) < len(references):  # no grammar: exact matches mean little on web text
        return CaptionScores(len(samples), cider, bleu4)
    exact = sum(s.generated.strip() == s.reference.strip() for s in samples) / len(samples)
    generated = [caption_attributes(s.generated) or {} for s in samples]
    attributes = {
        name: sum(g.get(name) == r[name] for g, r in zip(generated, known, strict=True)) / len(samples)
        for name in ATTRIBUTE_CHANCE
    }
    return CaptionScores(len(samples), cider, bleu4, exact, attributes, dict(ATTRIBUTE_CHANCE))
