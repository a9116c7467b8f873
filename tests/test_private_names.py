"""No module uses a private name (a leading underscore, not a dunder) of a module in another
directory of this checkout: neither `from module import _name` nor `module._name`. A module
may use the private names of its own directory's modules; other projects' are not checked."""
from __future__ import annotations

import ast
from pathlib import Path

from support import REPO
from support.imports import bound_module, find, imported_module, imports, python_files

FOLDERS = ("cache", "models", "pipeline", "tasks", "tests", "docs/probes")


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(path: Path, source: str | None = None) -> list[str]:
    """Each use in the file (its text `source` if given) of a private name of another
    directory's module, as `file:line uses module._name`."""
    source = path.read_text() if source is None else source
    uses, modules = [], {}  # modules: the names the file binds to modules, and those modules
    for item in imports(path, source):
        target = find(imported_module(item))
        if target is None:  # another project's
            continue
        if binding := bound_module(item):
            modules[binding[0]] = binding[1]
        if item.name and private(item.name) and target.parent != path.parent:
            uses.append(f"{path.relative_to(REPO)}:{item.line} uses {item.module}.{item.name}")
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Attribute) and private(node.attr):
            module = _module(node.value, modules)
            target = find(module) if module else None
            if target is not None and target.parent != path.parent:
                uses.append(f"{path.relative_to(REPO)}:{node.lineno} uses {module}.{node.attr}")
    return uses


def _module(node: ast.expr, modules: dict[str, str]) -> str | None:
    """The dotted name an expression such as `a.b.c` spells, where `a` names a module."""
    if isinstance(node, ast.Name):
        return modules.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _module(node.value, modules)
        return f"{base}.{node.attr}" if base else None
    return None


def test_no_module_uses_another_directorys_private_names():
    uses = [use for path in python_files(*FOLDERS) for use in private_uses(path)]
    assert uses == [], "private names used from another directory:\n" + "\n".join(uses)


BAD = """
from pipeline.data.readers import _private_function
import cache.storage.blocks as storage_blocks
from cache.storage import blocks
import cache.storage.blocks

def f():
    from ..storage.blocks import _inside
    return storage_blocks._MARKERS, blocks._MARKERS, cache.storage.blocks._MARKERS
"""


def used(path: Path, source: str) -> list[str]:
    return [use.split(":")[-1] for use in private_uses(path, source)]


def test_the_check_finds_private_names_of_another_directory():
    assert used(REPO / "cache" / "sub" / "new.py", BAD) == [
        "2 uses pipeline.data.readers._private_function", "8 uses cache.storage.blocks._inside",
        *["9 uses cache.storage.blocks._MARKERS"] * 3]


def test_a_module_may_use_private_names_of_its_own_directory():
    assert used(REPO / "cache" / "storage" / "new.py", BAD) == ["2 uses pipeline.data.readers._private_function"]


def test_the_check_allows_public_and_dunder_names_and_other_projects():
    source = """
import os
import models
from cache.storage.blocks import MANIFEST
from luigi.parameter import _no_value
os._exit, models.__doc__, models.factory.__name__, MANIFEST, _no_value
"""
    assert used(REPO / "tests" / "new.py", source) == []
