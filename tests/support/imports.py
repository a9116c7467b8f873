"""The project's modules and what they import, read with ast (nothing is imported): what
tests/test_layers.py and tests/test_private_names.py check."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support import REPO

# Where imports are looked for: the checkout (cache, models, pipeline, tasks) and tests/,
# which pytest puts on sys.path (test modules, conftest, support).
ROOTS = (REPO, REPO / "tests")


@dataclass(frozen=True)
class Import:
    """One name a module imports: `import module` (name None) or `from module import name`."""

    module: str  # absolute, relative imports resolved
    name: str | None
    asname: str | None
    line: int


def python_files(*folders: str) -> list[Path]:
    """Every .py file under the checkout's `folders`, sorted."""
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    """The dotted name a file is imported as, from the root it lies under (tests/ before the checkout)."""
    root = next(root for root in reversed(ROOTS) if path.is_relative_to(root))
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find(module: str) -> Path | None:
    """The file of a module of this checkout (a package's __init__.py), or None (another project's)."""
    for root in ROOTS:
        base = root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
    return None


def imports(path: Path, source: str | None = None) -> Iterator[Import]:
    """Every import of the file (its text `source` if given), those inside functions and conditions too."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            yield from (Import(alias.name, None, alias.asname, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield from (Import(module, alias.name, alias.asname, node.lineno) for alias in node.names)


def imported_module(item: Import) -> str:
    """The module an import reaches: `from package import module` reaches the submodule."""
    if item.name is not None and find(f"{item.module}.{item.name}"):
        return f"{item.module}.{item.name}"
    return item.module


def bound_module(item: Import) -> tuple[str, str] | None:
    """The name an import binds to a module, and that module's name; None when it binds
    something else (`from module import function`)."""
    if item.name is None:  # `import a.b` binds a; `import a.b as c` binds c to a.b
        return (item.asname, item.module) if item.asname else (item.module.split(".")[0],) * 2
    module = imported_module(item)
    return (item.asname or item.name, module) if module != item.module else None
