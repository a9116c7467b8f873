"""The layers of the project, lowest first: a module imports only from its own layer and
lower ones (imports inside functions too), so the storage never knows of models, the work
never knows of Luigi, and so on up. A new package or top-level module of pipeline/ fails
the test until LAYERS places it."""
from __future__ import annotations

from support.imports import imported_module, imports, module_name, python_files

LAYERS = [
    ["cache.storage"],
    ["cache"],  # the rest of cache/: schema, compact, reader, export
    ["models"],
    ["pipeline.spec", "pipeline.runtime"],
    ["pipeline.views"],
    ["pipeline.data"],
    ["pipeline.inference", "pipeline.evaluation"],
    ["pipeline.teacher", "pipeline.training"],
    ["pipeline.checks"],
    ["pipeline.bench"],
    ["tasks"],
    ["pipeline.api"],  # the loader API users import: the work's loader, and the tasks' outputs by name
]
PACKAGES = ("cache", "models", "pipeline", "tasks")


def layer(module: str) -> int | None:
    """The layer of a module (that of the longest name in LAYERS it lies in), or None."""
    placed = [(len(name), i) for i, names in enumerate(LAYERS) for name in names
              if module == name or module.startswith(name + ".")]
    return max(placed)[1] if placed else None


def imports_by_module() -> dict[str, list[str]]:
    """Every module of PACKAGES, and the modules of PACKAGES it imports."""
    return {module_name(path): [imported_module(item) for item in imports(path)
                                if imported_module(item).split(".")[0] in PACKAGES]
            for path in python_files(*PACKAGES)}


def upward(imported: dict[str, list[str]]) -> list[str]:
    """Each import of a higher layer, as `module imports higher.module`."""
    return [f"{module} imports {target}" for module, targets in imported.items() for target in targets
            if None not in (layer(module), layer(target)) and layer(target) > layer(module)]


def test_every_module_has_a_layer():
    parents = {name.rsplit(".", 1)[0] for names in LAYERS for name in names}  # e.g. pipeline, only a docstring
    assert [module for module in imports_by_module() if layer(module) is None and module not in parents] == []


def test_no_module_imports_a_higher_layer():
    found = upward(imports_by_module())
    assert found == [], "imports of a higher layer:\n" + "\n".join(found)


def test_layers_are_found_by_the_longest_name():
    assert [layer(m) for m in ("cache.storage.blocks", "cache.reader", "cache", "pipeline.training.train", "tasks")] \
        == [0, 1, 1, 7, 10]


def test_the_check_finds_an_import_of_a_higher_layer():
    imported = {"cache.storage.blocks": ["cache.storage.files", "models.factory"], "tasks.base": ["cache.reader"],
                "pipeline.data.readers": ["pipeline.views.records", "pipeline.training.loader"]}
    assert upward(imported) == ["cache.storage.blocks imports models.factory",
                                "pipeline.data.readers imports pipeline.training.loader"]


def test_tests_take_their_helpers_from_support():
    """Helpers shared by tests live in tests/support, not in conftest or another test module."""
    reached = [f"{module_name(path)} imports {imported_module(item)}" for path in python_files("tests")
               for item in imports(path)
               if imported_module(item).split(".")[0] == "conftest" or imported_module(item).startswith("test_")]
    assert reached == [], "\n".join(reached)
