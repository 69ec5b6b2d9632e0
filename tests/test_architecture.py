"""The arrows between the parts (ARCHITECTURE.md), checked on the source.

* nothing imports another package's private (underscore) module or name: the
  trainer, the collector, benchmarks and fuzz build on public names only;
* the device SDK never imports the trainer, and the protocol layer imports
  neither the device recipes nor the trainer;
* no package file grows past 500 lines;
* no import cycle between the modules of the device SDK (sdk/), counting
  imports inside functions too (a deferred import is still a circle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"sdk": "edgepersona.sdk", "trainer": "edgepersona.trainer"}
CHECKED = ("sdk", "trainer", "benchmarks", "fuzz")
MAX_LINES = 500


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in PACKAGES:
        parts[0:1] = PACKAGES[parts[0]].split(".")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every absolute edgepersona import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("edgepersona"):
                    yield node.lineno, alias.name, []
        elif (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
              and node.module.startswith("edgepersona")):
            yield node.lineno, node.module, [a.name for a in node.names]


def _private_owner(module: str) -> str | None:
    """The package that owns the first private component of a dotted name, if any."""
    parts = module.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def _files() -> list[Path]:
    return sorted(p for top in CHECKED for p in (ROOT / top).rglob("*.py"))


def _violations() -> list[str]:
    found = []
    for path in _files():
        importer = _module_name(path) if path.parts[len(ROOT.parts)] in PACKAGES else ""
        for line, module, names in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            for target in [module] + [f"{module}.{name}" for name in names]:
                owner = _private_owner(target)
                if owner is not None and not (importer == owner or importer.startswith(owner + ".")):
                    found.append(f"{where} imports the private {target} from outside {owner}")
    return found


def test_no_package_imports_another_packages_private_module() -> None:
    assert _violations() == []


def test_the_rule_catches_a_private_import(tmp_path: Path) -> None:
    assert _private_owner("edgepersona.sdk._store") == "edgepersona.sdk"
    assert _private_owner("edgepersona.sdk.protocol.assign._x") == "edgepersona.sdk.protocol.assign"
    assert _private_owner("edgepersona.sdk.protocol.assign") is None
    assert _private_owner("edgepersona.trainer.collector.__init__") is None


@pytest.mark.parametrize(("top", "forbidden"), [
    ("sdk", ("edgepersona.trainer",)),
    ("sdk/protocol", ("edgepersona.trainer", "edgepersona.sdk._")),
])
def test_arrows_that_must_never_exist(top: str, forbidden: tuple[str, ...]) -> None:
    bad = [f"{path.relative_to(ROOT)}:{line} imports {module}"
           for path in sorted((ROOT / top).rglob("*.py"))
           for line, module, names in _imports(path)
           for target in [module] + [f"{module}.{n}" for n in names]
           if target.startswith(forbidden)]
    assert bad == []


# The trainer's parts and the parts each may import (ARCHITECTURE.md); `cli` may import all.
TRAINER_ARROWS = {
    "data": {"engines", "errors"},
    "engines": {"errors"},
    "privacy": {"data", "engines", "errors"},
    "release": {"collector", "data", "engines", "errors", "privacy"},
    "collector": {"errors"},
    "report": {"errors", "privacy", "release"},
}


def test_the_trainer_parts_import_only_what_architecture_allows() -> None:
    bad = []
    for path in sorted((ROOT / "trainer").rglob("*.py")):
        parts = path.relative_to(ROOT / "trainer").parts
        if len(parts) < 2 or parts[0] not in TRAINER_ARROWS:
            continue
        for line, module, _ in _imports(path):
            if module.startswith("edgepersona.trainer."):
                target = module.split(".")[2]
                if target != parts[0] and target not in TRAINER_ARROWS[parts[0]]:
                    bad.append(f"trainer/{'/'.join(parts)}:{line} imports {module}")
    assert bad == []


def test_no_package_file_is_over_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for top in PACKAGES for p in (ROOT / top).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def _sdk_import_graph() -> dict[str, set[str]]:
    """Module -> the sdk modules it imports (any import anywhere in the file, TYPE_CHECKING aside)."""
    modules = {_module_name(p): p for p in sorted((ROOT / "sdk").rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycle_inside_the_sdk() -> None:
    graph = _sdk_import_graph()
    assert graph["edgepersona.sdk.protocol.rotation"] >= {"edgepersona.sdk.protocol.signing"}
    # A package root importing its own modules lazily (the _EXPORTS table) is not an edge here:
    # importlib.import_module calls are not import statements.
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_circle_and_a_deferred_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    graph = _sdk_import_graph()
    graph["edgepersona.sdk.protocol.signing"].add("edgepersona.sdk.protocol.rotation")
    assert _cycles(graph) == [["edgepersona.sdk.protocol.rotation", "edgepersona.sdk.protocol.signing"]]


def test_public_tables_match_their_typing_mirror() -> None:
    """Each lazy package root lists a name once in _EXPORTS and once for type checkers."""
    for init in (ROOT / "sdk/__init__.py", ROOT / "sdk/protocol/__init__.py", ROOT / "trainer/__init__.py"):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        typed: dict[str, set[str]] = {}
        table: dict[str, set[str]] = {}
        for node in tree.body:
            if isinstance(node, ast.If):  # the TYPE_CHECKING block
                for sub in node.body:
                    if isinstance(sub, ast.ImportFrom) and sub.level == 1 and sub.module:
                        typed[sub.module] = {a.name for a in sub.names}
            if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_EXPORTS":
                assert isinstance(node.value, ast.Dict)
                for key, value in zip(node.value.keys, node.value.values, strict=True):
                    assert isinstance(key, ast.Constant) and isinstance(value, ast.Tuple)
                    table[key.value] = {e.value for e in value.elts if isinstance(e, ast.Constant)}
        assert typed == table, init
