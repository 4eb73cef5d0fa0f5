"""Dependencies point one way: no import cycle inside theworld/, nothing outside lit/ imports theworld.lit, and the
core (model, world, config, loss, checkpoint, data) knows nothing of Lightning. Read from the source (ast), so
imports inside functions count too."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "theworld"
CORE = ("theworld.model", "theworld.world", "theworld.config", "theworld.loss", "theworld.checkpoint",
        "theworld.data", "theworld.hub", "theworld.layout", "theworld.retry", "theworld.captions")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports() -> dict[str, set[str]]:
    """module -> the modules (of theworld, or lightning) it imports anywhere in its source."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        tree = ast.parse(path.read_text())
        # An import under `if TYPE_CHECKING:` only names the type of what a module is handed (a callback's
        # TheWorldModule); it runs nothing, so it is not a dependency.
        type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                     for stmt in block.body for n in ast.walk(stmt)}
        for node in (n for n in ast.walk(tree) if id(n) not in type_only):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name} | {
            t for t in targets if t.split(".")[0] in ("lightning", "pytorch_lightning")}
    return graph


def test_no_import_cycles():
    graph = imports()

    def is_package_of(a: str, b: str) -> bool:  # a package re-exporting its own submodules is not a cycle
        return b.startswith(a + ".") or a.startswith(b + ".")

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen and not is_package_of(start, nxt):
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(m for m in graph if m in reach(m))
    assert cycles == [], f"modules that import themselves through others: {cycles}"


def test_only_lit_imports_lit_and_the_core_knows_no_lightning():
    graph = imports()
    # theworld.__main__ is the console script: it installs the stop handlers, then runs the CLI.
    outside = {m: sorted(t for t in ts if t.startswith("theworld.lit")) for m, ts in graph.items()
               if not m.startswith("theworld.lit") and m != "theworld.__main__"}
    assert {m: ts for m, ts in outside.items() if ts} == {}
    core = {m: sorted(t for t in ts if t.startswith(("lightning", "theworld.callbacks")))
            for m, ts in graph.items() if m.startswith(CORE)}
    assert {m: ts for m, ts in core.items() if ts} == {}
