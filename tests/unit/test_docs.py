"""The README stays a front page: at most 200 lines, the two set-up commands (the demo and the tests, each doing all
set-up on a fresh machine), and every relative link resolving. Links inside docs/ are checked by
`mkdocs build --strict` in .ci/run; the commands the docs repeat from the README are checked here."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SETUP = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0"
    ' && pip install -c constraints.txt -e ".[test]"'
)
DEMO = f"{SETUP} && python -m theworld.testing.demo_assets && theworld fit --config configs/demo.yaml"
TESTS = f"{SETUP} && python -m pytest -q"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_the_readme_is_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= 200


def test_the_readme_holds_the_two_set_up_commands_each_on_a_line_of_its_own():
    lines = README.read_text().splitlines()
    assert DEMO in lines and TESTS in lines


def test_the_readme_runs_the_embedded_default_config():
    assert "configs/demo.yaml" in DEMO and (ROOT / "configs/demo.yaml").is_file()


def test_every_relative_link_of_the_readme_resolves():
    targets = [t for t in LINK.findall(README.read_text()) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert targets, "the README links to the docs"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to files that are not there: {missing}"


def test_the_docs_give_the_same_set_up_commands_as_the_readme():
    """The pages that repeat the README's commands repeat them exactly (a changed install changes them all)."""
    pages = {"index.md": (DEMO, TESTS), "development.md": (DEMO, TESTS), "demo.md": (DEMO,)}
    for name, commands in pages.items():
        lines = (ROOT / "docs" / name).read_text().splitlines()
        assert all(command in lines for command in commands), name
    for page in (ROOT / "docs").rglob("*.md"):
        stale = [line for line in page.read_text().splitlines() if "pip install torch==" in line]
        assert set(stale) <= {DEMO, TESTS}, f"{page.name} installs otherwise than the README: {stale}"


def test_every_docs_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert [p for p in pages if p not in nav] == []
