"""The model card's import path from the Hub upload guide: ``from theworld.hub_utils import generate_model_card``."""

from theworld.hub.card import generate_model_card

__all__ = ["generate_model_card"]
