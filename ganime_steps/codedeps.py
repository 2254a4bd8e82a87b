"""The source files a stage runs: its module and every ``ganime_steps`` module it imports, transitively.

The workflow lists them as a rule's inputs (``code(stage)`` in ``workflow/rules/common.smk``), so that editing any
module a stage uses (``common.py``, ``imaging.py``, ``sources/*``, ``gan/*``, ...) reruns that stage. Imports are
read with :mod:`ast` (nothing is imported, so no torch at parse time): plain and relative imports, ``from package
import submodule``, imports inside functions (lazy imports run too), and the ``__init__.py`` of every package on
the way, which Python executes before the module itself.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name


def module_file(module: str) -> Path | None:
    """``ganime_steps.gan.loop`` -> its file (a module or a package's ``__init__.py``); None outside the package."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported_modules(path: Path, module: str) -> set[str]:
    """Every module name ``path`` (the file of ``module``) may import, including ``pkg.name`` for each
    ``from pkg import name`` (``name`` may be a submodule) and the parent packages of each."""
    stat = path.stat()
    return set(_imported_modules(path, module, stat.st_mtime_ns, stat.st_size))


# The workflow asks for every rule's stage (two dozen), and the stages share most modules: each file is parsed once
# per process (keyed by its mtime and size, so an edited file is read again).
@functools.lru_cache(maxsize=1024)
def _imported_modules(path: Path, module: str, mtime_ns: int, size: int) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: one level is the current package, each further level one package up
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
    parents = {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 1)}
    return frozenset(names | parents)


def stage_module(stage: str) -> str:
    return f"{PACKAGE}.{stage}"


def stage_files(stage: str) -> list[str]:
    """Sorted absolute paths of the stage's module (``ganime_steps/<stage>.py`` or a package ``<stage>/``) and of
    every ``ganime_steps`` module it imports, directly or not, with the ``__init__.py`` files on the way.

    ``stage`` may be dotted (``sources.synthetic``: the package ``ganime_steps/sources/synthetic/``)."""
    start = stage_module(stage)
    if module_file(start) is None:
        raise FileNotFoundError(f"no module {start} in {PACKAGE_DIR}")
    main = PACKAGE_DIR.joinpath(*stage.split("."), "__main__.py")  # a package stage runs through its __main__
    parents = [".".join(start.split(".")[:i]) for i in range(1, start.count(".") + 1)]  # run before the stage
    todo = [start, *parents] + ([f"{start}.__main__"] if main.is_file() else [])
    seen: dict[str, Path] = {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = module_file(module)
        if path is None:  # not ours (stdlib, torch, ...), or `from pkg import name` where name is not a module
            continue
        seen[module] = path
        todo.extend(imported_modules(path, module))
    return sorted({str(path) for path in seen.values()})
