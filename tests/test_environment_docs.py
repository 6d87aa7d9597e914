"""Every environment variable Tunery reads (or sets) is in docs/environment.md: the source is scanned for reads —
``os.environ.get/[...]/setdefault/pop``, ``os.getenv``, ``"X" in env``, helpers named *env*, module constants
named *ENV* and tuples of names looped over next to an environment read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "tunery"
DOC = REPO / "docs" / "environment.md"
NAME = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")


def _is_env(node: ast.AST) -> bool:
    text = ast.unparse(node)
    return text.endswith("environ") or text in ("env", "environment")


def _names(node: ast.AST, constants: dict[str, str]) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.match(node.value):
        return {node.value}
    if isinstance(node, ast.Name) and node.id in constants:
        return {constants[node.id]}
    return set()


def env_reads_in(source: str) -> set[str]:
    tree = ast.parse(source)
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                 for t in n.targets if isinstance(t, ast.Name)}
    found = {value for name, value in constants.items() if "ENV" in name and NAME.match(value)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault") and _is_env(func.value):
                found |= _names(node.args[0], constants)
            elif "env" in ast.unparse(func).rsplit(".", 1)[-1].lower():
                found |= _names(node.args[0], constants)
        elif isinstance(node, ast.Subscript) and _is_env(node.value):
            found |= _names(node.slice, constants)
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                and any(_is_env(c) for c in node.comparators):
            found |= _names(node.left, constants)
        elif isinstance(node, (ast.comprehension, ast.For)) and isinstance(node.iter, (ast.Tuple, ast.List)):
            if "environ" in ast.unparse(node if isinstance(node, ast.For) else _parent_of(tree, node)):
                for element in node.iter.elts:
                    found |= _names(element, constants)
    return found


def _parent_of(tree: ast.AST, target: ast.comprehension) -> ast.AST:
    for node in ast.walk(tree):
        if target in getattr(node, "generators", ()):
            return node
    return target


def documented() -> set[str]:
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", DOC.read_text(encoding="utf-8"), re.M))


def test_every_environment_variable_read_is_documented():
    read = {name for path in SRC.rglob("*.py") for name in env_reads_in(path.read_text(encoding="utf-8"))}
    assert {"USE_MODELSCOPE_HUB", "USE_OPENMIND_HUB", "API_LOG_LEVEL", "MALLOC_MMAP_THRESHOLD_"} <= read
    missing = sorted(read - documented())
    assert not missing, f"read in src/tunery but not in docs/environment.md: {', '.join(missing)}"


def test_the_scanner_finds_each_kind_of_read():
    source = '''
import os
SAVES_ENV = "A_SAVES"
def f(env=os.environ):
    os.environ.get("A_GET"); os.getenv("A_GETENV"); os.environ["A_ITEM"]; _truthy_env("A_HELPER")
    os.environ.get(SAVES_ENV)
    if "A_IN" in env: pass
    any(os.environ.get(v) for v in ("A_LOOP1", "A_LOOP2"))
    print("NOT_AN_ENV")
'''
    assert env_reads_in(source) == {"A_SAVES", "A_GET", "A_GETENV", "A_ITEM", "A_HELPER", "A_IN", "A_LOOP1",
                                    "A_LOOP2"}
