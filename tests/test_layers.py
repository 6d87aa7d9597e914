"""The package's import graph: no cycles between modules, and imports only point down the layers of the README's
architecture (lazy imports inside functions count too: they are the same dependency, only later)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tunery"

# Lowest first. A module may import its own layer and the layers below it.
LAYERS = [
    {"errors", "utils"},  # utils/handoff.py: whether and how `tunery train` starts torchrun
    {"config"},
    {"data", "model"},
    {"train", "chat", "eval", "export", "estimate", "runs"},
    {"api", "webui", "demo"},
    # the commands; the package's own __init__ re-exports ChatModel, env reports its __version__
    {"cli", "launch", "torchrun", "env", "__init__", "__main__"},
]


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    return imports_of_text(path, module_name(path))


def imports_of_text(path: Path, name: str) -> set[str]:
    """Every tunery module ``path`` imports, at module level or inside functions (TYPE_CHECKING blocks aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = name.split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tunery"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target.startswith("tunery"):
                continue
            found.add(target)
            for alias in node.names:  # `from tunery.x import y` where y is a module
                candidate = f"{target}.{alias.name}"
                if _exists(candidate):
                    found.add(candidate)
    return {_resolve(m) for m in found if _resolve(m)}


def _exists(module: str) -> bool:
    path = SRC.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _resolve(module: str) -> str | None:
    parts = module.split(".")
    while parts and not _exists(".".join(parts)):
        parts.pop()
    return ".".join(parts) if parts else None


def graph() -> dict[str, set[str]]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = module_name(path)
        out[name] = {m for m in imports_of(path) if m != name}
    return out


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module}: its package '{top}' is in no layer of tests/test_layers.py — add it")


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between modules (package __init__ re-exports excluded), or None."""
    edges = {m: {d for d in deps if not _is_parent(d, m)} for m, deps in g.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _is_parent(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_imports_point_down_the_layers():
    wrong = []
    for module, deps in sorted(graph().items()):
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(module):
                wrong.append(f"{module} → {dep}")
    assert not wrong, "imports from a lower layer to a higher one:\n" + "\n".join(wrong)


def test_the_checker_sees_a_cycle_and_a_lazy_import(tmp_path):
    assert find_cycle({"tunery.a": {"tunery.b"}, "tunery.b": {"tunery.c"}, "tunery.c": {"tunery.a"}}) == \
        ["tunery.a", "tunery.b", "tunery.c", "tunery.a"]
    assert find_cycle({"tunery.a": {"tunery.b"}, "tunery.b": set()}) is None
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from tunery.cli import main\n    from .errors import TuneryError\n")
    assert {"tunery.cli", "tunery.errors"} <= imports_of_text(lazy, "tunery.lazy")


MAX_LINES = 600  # one module, one job (README): a file past this is split along its seams


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
