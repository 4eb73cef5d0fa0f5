"""Held-out caption scores: CIDEr and BLEU-4 against hand-computed figures, exact match and attributes only for the
demo's grammar, and the scoring core free of the test data."""

import subprocess
import sys

import pytest

from theworld.captions import CaptionSample, score_captions


def scores(*pairs):
    return score_captions([CaptionSample(str(i), reference, generated) for i, (reference, generated) in
                           enumerate(pairs)])


def test_a_perfect_match_scores_the_maximum_whatever_the_case_and_punctuation():
    result = scores(("a red star on a blue background", "A red star, on a blue background."),
                    ("two dogs play in the snow", "two dogs play in the snow"))
    assert result.bleu4 == pytest.approx(1.0, abs=1e-6)
    assert result.cider == pytest.approx(10.0, abs=1e-6)  # CIDEr-D's scale: 10 x the mean n-gram cosine


def test_bleu4_and_cider_match_hand_computed_figures():
    # One word of seven wrong: n-gram precisions 6/7, 4/6, 3/5, 2/4, no brevity penalty.
    result = scores(("a red star on a blue background", "a red star on a white background"))
    assert result.bleu4 == pytest.approx((6 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25, abs=1e-6)
    # One caption exactly right (10), one sharing no word with its reference (0): the corpus mean.
    result = scores(("a red star on a blue background", "a red star on a blue background"),
                    ("two dogs play in the snow", "cat"))
    assert result.cider == pytest.approx(5.0, abs=1e-6)


def test_exact_match_and_attributes_only_for_the_demo_grammar():
    demo = scores(("a red star on a blue background", "a red star on a white background"))
    assert demo.exact == 0.0 and demo.attributes == {"shape colour": 1.0, "shape": 1.0, "background": 0.0}
    assert set(demo.metrics()) == {"val/caption_cider", "val/caption_bleu4", "val/caption_exact",
                                   "val/caption_shape_colour", "val/caption_shape", "val/caption_background"}
    web = scores(("A man riding a bike down a street", "a man riding a bike down a street"))
    assert web.exact is None and not web.attributes
    assert set(web.metrics()) == {"val/caption_cider", "val/caption_bleu4"}
    assert str(web).startswith("CIDEr ") and "exactly right" not in str(web)


def test_the_caption_scores_do_not_import_the_test_data():
    code = "import sys, theworld.captions; print(sorted(m for m in sys.modules if m.startswith('theworld.testing')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
