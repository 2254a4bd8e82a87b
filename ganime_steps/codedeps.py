"""The source files a stage runs: its module and every ``ganime_steps`` module it imports, transitively.

The workflow lists them as a rule's inputs (``code(stage)`` in ``workflow/rules/common.smk``), so that editing any
module a stage uses (``common.py``, ``imaging.py``, ``sources/*``, ``gan/*``, ...) reruns that stage. Imports are
read with :mod:`ast` (nothing is imported, so no torch at parse time): plain and relative imports, ``from package
import submodule``, imports inside functions (lazy imports run too), and the ``__init__.py`` of every package on
the way, which Python executes before the module itself.

Training is narrower (:func:`training_files`): the modules a training run executes, which restart a run when they change
(``gan.checkpoint.training_code_fingerprint``, which ``train.run_train`` passes in) and rerun the train rule. Its lazy
import of the metric code (``evaluate``, and the classifier package behind a classifier feature space) is not training:
only the gan package's lazy imports (the families' networks, D's feature network) are followed. :func:`code_fingerprint`
hashes files as parsed, so comments, docstrings and formatting do not count.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name
TRAINING_PACKAGE = f"{PACKAGE}.gan"  # a training run builds its family's networks through this package's lazy imports


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


def imported_modules(path: Path, module: str, lazy: bool = True) -> set[str]:
    """Every module name ``path`` (the file of ``module``) may import, including ``pkg.name`` for each
    ``from pkg import name`` (``name`` may be a submodule) and the parent packages of each. ``lazy=False``: only the
    imports that run when the module is imported (not those inside functions)."""
    stat = path.stat()
    return set(_imported_modules(path, module, lazy, stat.st_mtime_ns, stat.st_size))


def _eager_nodes(tree: ast.AST):
    """The nodes that run at import: everything outside function bodies (class bodies run)."""
    for node in ast.iter_child_nodes(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield node
            yield from _eager_nodes(node)


# The workflow asks for every rule's stage (two dozen), and the stages share most modules: each file is parsed once
# per process (keyed by its mtime and size, so an edited file is read again).
@functools.lru_cache(maxsize=1024)
def _imported_modules(path: Path, module: str, lazy: bool, mtime_ns: int, size: int) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree) if lazy else _eager_nodes(tree):
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


def stage_files(stage: str, lazy_within: str | None = PACKAGE) -> list[str]:
    """Sorted absolute paths of the stage's module (``ganime_steps/<stage>.py`` or a package ``<stage>/``) and of
    every ``ganime_steps`` module it imports, directly or not, with the ``__init__.py`` files on the way.

    ``stage`` may be dotted (``sources.synthetic``: the package ``ganime_steps/sources/synthetic/``). Imports inside
    functions are followed in the modules of package ``lazy_within`` only (default: everywhere; None: nowhere)."""
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
        lazy = lazy_within is not None and (module == lazy_within or module.startswith(f"{lazy_within}."))
        todo.extend(imported_modules(path, module, lazy))
    return sorted({str(path) for path in seen.values()})


def training_files() -> list[str]:
    """The modules a training run executes: the train stage, what it and every module it reaches import at module
    level, and the gan package's lazy imports (a family's networks, D's pretrained features). Not the metric code
    that train imports lazily for snapshots (:func:`metric_files`): editing it restarts no run."""
    return stage_files("train", lazy_within=TRAINING_PACKAGE)


def metric_files(classifier: bool = False) -> list[str]:
    """What a training run's metric snapshots execute besides training code: ``evaluate`` and its module-level
    imports (Inception); with ``classifier`` (a classifier's feature space) also the classifier package."""
    files = set(stage_files("evaluate", lazy_within=None))
    if classifier:
        files.update(stage_files("classifier", lazy_within=None))
    return sorted(files)


def normalized_source(path: Path) -> str:
    """The module as Python parses it, without docstrings: comments, docstrings and formatting leave it unchanged."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def code_fingerprint(files: list[str]) -> str:
    """sha256 over ``files`` (paths under the package) by relative path and :func:`normalized_source`."""
    digest = hashlib.sha256()
    for name in sorted(files):
        path = Path(name)
        stat = path.stat()
        source_digest = _normalized_digest(path, stat.st_mtime_ns, stat.st_size)
        digest.update(f"{path.relative_to(PACKAGE_DIR).as_posix()}\0{source_digest}\0".encode())
    return digest.hexdigest()


# Every Trainer takes the fingerprint (parsing and unparsing ~15 modules, ~0.1 s): once per file version and process.
@functools.lru_cache(maxsize=256)
def _normalized_digest(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(normalized_source(path).encode()).hexdigest()
