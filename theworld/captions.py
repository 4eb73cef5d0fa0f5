"""Held-out caption checks: how often generated captions match the reference, as a whole and by attribute.

``score_captions`` needs no model: TheWorldModule generates captions for the first validation images and
hands the pairs here. Exact match is always reported; for captions of the synthetic demo's grammar
("a red star on a blue background", :mod:`theworld.testing.synthetic`) each attribute is scored too, beside
the rate a guess would reach.

Example:
    >>> score_captions(["a red star on a blue background"], ["a red star on a white background"])
    CaptionScores(samples=1, exact=0.0, attributes={'shape colour': 1.0, 'shape': 1.0, 'background': 0.0}, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from theworld.testing.synthetic import ATTRIBUTE_CHANCE, caption_attributes


@dataclass
class CaptionSample:
    """One held-out image with the model's caption beside the reference."""

    key: str
    reference: str
    generated: str
    image: Image.Image | None = None


@dataclass
class CaptionScores:
    """Fractions of ``samples`` held-out images captioned right: the whole caption, and each attribute."""

    samples: int
    exact: float
    attributes: dict[str, float] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)

    def metrics(self, prefix: str = "val/caption_") -> dict[str, float]:
        """For loggers: ``val/caption_exact`` and ``val/caption_<attribute>``."""
        named = {"exact": self.exact, **{name.replace(" ", "_"): value for name, value in self.attributes.items()}}
        return {f"{prefix}{name}": value for name, value in named.items()}

    def __str__(self) -> str:
        text = f"{self.exact:.0%} of {self.samples} held-out captions exactly right"
        if self.attributes:
            parts = [f"{name} {value:.0%} (chance {self.chance[name]:.0%})" for name, value in self.attributes.items()]
            text += "; " + ", ".join(parts)
        return text


def score_captions(samples: list[CaptionSample]) -> CaptionScores:
    exact = sum(s.generated.strip() == s.reference.strip() for s in samples) / max(len(samples), 1)
    references = [caption_attributes(s.reference) for s in samples]
    if not samples or any(r is None for r in references):
        return CaptionScores(len(samples), exact)
    generated = [caption_attributes(s.generated) or {} for s in samples]
    attributes = {name: sum(g.get(name) == r[name] for g, r in zip(generated, references)) / len(samples)
                  for name in ATTRIBUTE_CHANCE}
    return CaptionScores(len(samples), exact, attributes, dict(ATTRIBUTE_CHANCE))
