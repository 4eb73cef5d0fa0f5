"""The versions pyproject.toml declares are the versions CI runs: `.ci/run` installs `.ci/lowest.txt` and runs the
Hub, checkpoint and CLI tests there, so every dependency needs a floor and the pin there must be that floor."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# Pinned above its floor, with the reason beside the pin in .ci/lowest.txt.
ABOVE_FLOOR = {"torch"}


def floors() -> dict[str, Version | None]:
    """dependency -> the version its ``>=`` names, for every dependency of pyproject.toml (None: no floor)."""
    found = {}
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        found[canonicalize_name(requirement.name)] = Version(lower[0]) if lower else None
    return found


def pins() -> dict[str, Version]:
    """dependency -> the version .ci/lowest.txt pins it at."""
    found = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            found[canonicalize_name(name)] = Version(version)
    return found


def test_every_dependency_has_a_floor_and_ci_pins_it_there():
    declared, pinned = floors(), pins()
    assert [name for name, floor in declared.items() if floor is None] == []
    assert set(pinned) == set(declared)
    wrong = {name: f"floor {declared[name]}, pin {pinned[name]}" for name in declared
             if pinned[name] != declared[name] and not (name in ABOVE_FLOOR and pinned[name] > declared[name])}
    assert wrong == {}
