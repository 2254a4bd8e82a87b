"""Shared plumbing for every stage: the user-error type, atomic writes, logging, progress, CLI wrapper."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import hashlib
import inspect
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

log = logging.getLogger("ganime")
T = TypeVar("T")


class GanimeError(Exception):
    """A problem the user can fix. The message is one line: what is wrong, where (file/key/line), and the fix."""


def _temp_owner() -> str:
    return f"{socket.gethostname().replace('.', '-')}-{os.getpid()}"


def _new_temp_file(path: Path) -> Path:
    """An empty new file beside ``path``, named ``.<name>.<host>-<pid>.<random>.tmp<suffix>`` (writers such as
    ``np.save`` key on the suffix). Unlike ``tempfile.mkstemp`` (always 0600) it is created with mode 0666 like a
    plain ``open()``, so the kernel applies the umask (and a folder's default ACL): results stay readable where the
    user wants them."""
    _remove_dead_temp_files(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):  # 48 random bits: a clash is a stale temporary file at most, never a live one
        tmp = path.with_name(f".{path.name}.{_temp_owner()}.{os.urandom(6).hex()}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def _remove_dead_temp_files(path: Path) -> None:
    """Delete temporary files of ``path`` left by a killed writer on this host (kill -9 skips our cleanup; a 2 GB
    half-written pack should not stay forever). A live writer's file, or another host's, is left alone."""
    host = socket.gethostname().replace(".", "-")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.{glob.escape(host)}-*.tmp*"):
        owner = tmp.name[len(path.name) + len(host) + 3 :].split(".", 1)[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place with ``os.replace``.

    A killed job therefore never leaves a half-written file under its final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temp_file(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def write_parquet(path: str | os.PathLike, df) -> None:  # df: pandas.DataFrame
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def save_image(path: str | os.PathLike, image) -> None:  # image: PIL.Image.Image
    fmt = Path(path).suffix.lstrip(".").upper().replace("JPG", "JPEG")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)


def save_npy(path: str | os.PathLike, array) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a temporary file, into an open handle: given a path, torch names the zip's folder after
    it (here the temporary name, different at every write), so the same object gave different bytes each time."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, Paths and numpy scalars into plain JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalar
        return obj.item()
    return obj


def read_parquet(path: str | os.PathLike, columns: Iterable[str] = ()):
    """Read a table, failing with one clear line if it is missing or lacks required columns."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise GanimeError(f"{path}: file not found; run the stage that produces it first")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise GanimeError(f"{path}: not a readable Parquet table ({exc}); delete it and rerun its stage") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise GanimeError(f"{path}: missing column(s) {', '.join(missing)}; rerun the stage that produces it")
    return df


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", every_s: float = 10.0) -> Iterator[T]:
    """A tqdm bar on a terminal; periodic log lines otherwise (Snakemake logs, CI)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc)
        return
    last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            log.info("%s: %d%s", desc, done, f"/{total}" if total else "")
    log.info("%s: %d done", desc, done)


class JsonRecord:
    """A dataclass one stage writes as JSON for another: ``to_json`` gives every field as plain JSON
    (:func:`to_jsonable`), ``from_json`` reads every field's key back (a missing key raises KeyError). A record whose
    fields JSON cannot carry as they are (tuples, nested records) converts them from :meth:`field_values`."""

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def field_values(cls, obj: dict[str, Any]) -> dict[str, Any]:
        return {f.name: obj[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Any:
        return cls(**cls.field_values(obj))


def checked_setting(name: str, value: Any, annotation: Any) -> Any:
    """A settings dataclass's value checked against its field's annotation (``float | None``, ``tuple[str, ...]``):
    None where allowed, a bool, a JSON integer where a float is meant as that float, a list of strings as a tuple, an
    int, a string; anything else is one GanimeError line naming the setting."""
    kinds = [kind.strip() for kind in str(annotation).split("|")]
    if value is None and "None" in kinds:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kinds[0].startswith("tuple"):
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif "bool" in kinds:
        if isinstance(value, bool):
            return value
    elif "float" in kinds and number:
        return float(value)
    elif "int" in kinds and number and isinstance(value, int):
        return value
    if "str" in kinds and isinstance(value, str):
        return value
    raise GanimeError(f"setting {name}: {value!r} is not {' or '.join(kinds)}")


class Settings:
    """Base of a stage's settings dataclass (``RunSettings``, ``ScrapeSettings``, ``ClassifierSettings``): every value
    checked against its field's type when made (:func:`checked_setting`), read from and written as the JSON a run
    saves (``*_config.json``, ``--settings``), and made from a CLI's ``--config``/``--settings`` and setting flags.
    ``what`` names the settings in errors; ``accepts_paths``: a path-like value is taken as its string."""

    what: ClassVar[str] = "settings"
    accepts_paths: ClassVar[bool] = False

    def __post_init__(self) -> None:
        """Each value of its field's type (a JSON integer where a float is meant becomes that float, a list of
        strings a tuple)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if self.accepts_paths and isinstance(value, os.PathLike):
                value = os.fspath(value)
            object.__setattr__(self, f.name, checked_setting(f.name, value, f.type))

    @classmethod
    def from_json(cls, data: Any, where: str) -> Any:
        """Settings from a JSON object (a ``*_config.json``, ``--settings``): a key left out keeps its default; a
        non-object, an unknown key or a value of the wrong type is one GanimeError line naming ``where``."""
        if not isinstance(data, dict):
            raise GanimeError(f"{where}: expected a JSON object of {cls.what}, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise GanimeError(f"{where}: unknown setting {key!r}; the settings are {', '.join(names)}")
        try:
            return cls(**data)
        except GanimeError as exc:
            raise GanimeError(f"{where}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_args(cls, args: argparse.Namespace, override: Callable[[Any, dict[str, Any]], Any] | None = None) -> Any:
        """The settings a CLI was given: ``--config``'s file or ``--settings``' JSON (else the defaults), then every
        setting flag given (a setting's flag has no argparse default, so one not given is absent from ``args``),
        applied by ``override(settings, flags)`` (default: :func:`dataclasses.replace`)."""
        given = settings_json_arg(args.config, args.settings)
        base = cls.from_json(*given) if given else cls()
        flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        return override(base, flags) if override else dataclasses.replace(base, **flags)


Options = list[tuple[str, dict[str, Any]]]  # (flag, add_argument's keyword arguments), in --help order


def add_settings_options(
    p: argparse.ArgumentParser, stage: str, config_file: str, groups: Iterable[tuple[str | None, Options]]
) -> None:
    """A settings stage's CLI (train, scrape): ``--config FILE`` or ``--settings JSON`` (read by
    :func:`settings_json_arg`), then each group of flags under its --help title (None: the main options)."""
    given = p.add_mutually_exclusive_group()
    given.add_argument(
        "--config", type=Path, help=f"{config_file} (saved by a {stage} run, or written by hand): the settings"
    )
    given.add_argument("--settings", help=f"the settings as one JSON object (the workflow's {stage} rule passes them)")
    for title, options in groups:
        group = p if title is None else p.add_argument_group(title)
        for flag, kw in options:
            group.add_argument(flag, **kw)


def settings_json_arg(config: str | os.PathLike | None, settings: str | None) -> tuple[Any, str] | None:
    """The JSON a stage's settings start from, and how an error names it: ``--config FILE`` (a person's, or a
    ``*_config.json`` a run saved) or ``--settings JSON`` (the workflow's); None when neither is given."""
    if config is not None:
        try:
            return json.loads(Path(config).read_text(encoding="utf-8")), f"--config {config}"
        except FileNotFoundError:
            raise GanimeError(f"--config {config}: file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            message = " ".join(str(exc).split())
            raise GanimeError(f"--config {config}: not a readable JSON file ({message})") from None
    if settings is not None:
        try:
            return json.loads(settings), "--settings"
        except json.JSONDecodeError as exc:
            raise GanimeError(f"--settings: not a JSON object ({exc})") from None
    return None


def run_cli(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], Any], argv=None) -> int:
    """Parse, run, log the summary; turn a GanimeError into one line on stderr and exit status 2."""
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        summary = handler(args)
    except GanimeError as exc:
        print(f"ganime error: {exc}", file=sys.stderr)
        return 2
    if summary is not None:
        log.info("summary: %s", json.dumps(to_jsonable(summary), sort_keys=True))
    return 0


def args_for(func: Callable[..., Any], args: argparse.Namespace) -> dict[str, Any]:
    """The keyword parameters of ``func`` that ``args`` (parsed CLI flags) holds under the same names."""
    return {name: getattr(args, name) for name in inspect.signature(func).parameters if hasattr(args, name)}


def call_with_args(func: Callable[..., T], args: argparse.Namespace, **overrides: Any) -> T:
    """Call ``func`` with :func:`args_for` its flags, ``overrides`` added or replacing: a CLI handler's
    flags-to-keywords plumbing, written once."""
    return func(**{**args_for(func, args), **overrides})


def parse_assignments(items: Iterable[str], flag: str, expected: str = "NAME=VALUE") -> dict[str, str]:
    """``["chibi=path", ...]`` → dict, order kept; one clear line naming ``flag`` for the first malformed item."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise GanimeError(f"{flag} {item!r}: expected {expected}")
        result[key] = value
    return result


def add_subcommand(sub, name: str, about: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` description is its one-line summary in the command list."""
    return sub.add_parser(name, help=about, description=about, **kwargs)


def file_digest(path: str | os.PathLike, algorithm: str, block: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read ``block`` bytes at a time."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")  # the loaded kernel module's version (Linux)


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version, read without CUDA (which is what failed); None where no driver is loaded."""
    try:
        text = NVIDIA_DRIVER_FILE.read_text()
    except OSError:
        return None
    words = text.split("Kernel Module", 1)[-1].split()
    return words[0] if words else text.strip()[:60] or None


def cuda_versions() -> str:
    """What a CUDA failure depends on, in one phrase: torch's version and CUDA build, the driver, the visible GPUs."""
    import torch

    build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    driver = nvidia_driver_version()
    parts = [f"torch {torch.__version__} {build}", f"NVIDIA driver {driver}" if driver else "no NVIDIA driver found"]
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        parts.append(f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}")
    return "; ".join(parts)


def torch_device(name: str = "auto"):
    """'auto' picks CUDA when present. An explicit 'cuda' with no usable GPU is an error, never a silent CPU run (a
    rule that claims a GPU asks for it). Threads follow the job's allotment (Snakemake sets OMP_NUM_THREADS)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        fix = "run it where a GPU is visible, or use --device cpu or auto (workflow: the run's device key)"
        if not torch.cuda.is_available():
            raise GanimeError(f"--device {name}: no usable CUDA GPU ({cuda_versions()}); {fix}")
        index = torch.device(name).index
        if index is not None and index >= (count := torch.cuda.device_count()):
            raise GanimeError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
