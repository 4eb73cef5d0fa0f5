"""Shared by the reliability suite: the local Hub, and the figures that tests/reliability/report.py collects."""

import json
import os

import pytest
from report import FIGURES_ENV


class Figures:
    """Appends ``{"test", "event", ...}`` lines to the JSON-lines file named by $THEWORLD_RELIABILITY_FIGURES,
    which report.py sets; without it (plain pytest) recording does nothing."""

    def __init__(self, test: str):
        self.test = test

    def record(self, event: str, **values) -> None:
        path = os.environ.get(FIGURES_ENV)
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps({"test": self.test, "event": event, **values}) + "\n")


@pytest.fixture
def figures(request) -> Figures:
    return Figures(request.node.nodeid)

