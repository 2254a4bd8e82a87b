"""common: atomic writes keep the file modes a plain open() gives, and never leave a temporary file behind."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ganime_steps import common


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


WRITERS = {
    "bytes": lambda p: common.write_bytes(p, b"x"),
    "json": lambda p: common.write_json(p.with_suffix(".json"), {"a": 1}),
    "parquet": lambda p: common.write_parquet(p.with_suffix(".parquet"), pd.DataFrame({"a": [1]})),
    "png": lambda p: common.save_image(p.with_suffix(".png"), Image.new("RGB", (2, 2))),
    "npy": lambda p: common.save_npy(p.with_suffix(".npy"), np.zeros(3)),
    "torch": lambda p: common.torch_save(p.with_suffix(".pt"), {"w": np.zeros(3)}),
}


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o027, 0o640)])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_atomic_writes_respect_the_umask_like_open(tmp_path, umask, mask, expected, writer):
    umask(mask)
    with open(tmp_path / "plain", "w") as f:  # what a plain open() gives under this umask
        f.write("x")
    assert mode(tmp_path / "plain") == expected
    WRITERS[writer](tmp_path / "out")
    (written,) = [p for p in tmp_path.iterdir() if p.name.startswith("out")]  # no temporary file left beside it
    assert mode(written) == expected, (writer, oct(mode(written)))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["plain", written.name])


def test_temporary_file_is_beside_the_target_keeps_its_suffix_and_respects_the_umask(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "sub" / "pack.npy"
    with common.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".pack.npy.") and tmp.suffix == ".npy"
        assert tmp.exists() and mode(tmp) == 0o644 and not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data" and not tmp.exists()


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    common.write_text(target, "old")
    with pytest.raises(RuntimeError), common.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_torch_files_of_the_same_object_have_the_same_bytes(tmp_path):
    """Reproducible outputs: the zip inside a torch file is named the same whatever the (temporary) path it was
    written to (by path, torch names it after the file: the temporary name, new at every write)."""
    import torch

    obj = {"w": torch.arange(6.0).view(2, 3), "step": 3}
    common.torch_save(tmp_path / "a.pt", obj)
    common.torch_save(tmp_path / "other" / "b.pt", obj)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "other" / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], obj["w"])


def test_writers_that_recreate_the_temporary_file_still_land(tmp_path, umask):
    """A writer may unlink and recreate the path it is given; the result is still moved into place."""
    umask(0o022)
    target = tmp_path / "b.bin"
    with common.atomic_path(target) as tmp:
        tmp.unlink()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o644


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """kill -9 skips the cleanup; the next write of the same file removes the dead writer's temporary file, and
    leaves a live writer's (this process) and another host's alone."""
    target = tmp_path / "pack.npy"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = common._temp_owner().rsplit("-", 1)[0]
    stale = tmp_path / f".pack.npy.{host}-{dead.pid}.0123456789ab.tmp.npy"
    live = tmp_path / f".pack.npy.{common._temp_owner()}.0123456789ab.tmp.npy"
    remote = tmp_path / f".pack.npy.otherhost-{dead.pid}.0123456789ab.tmp.npy"
    for p in (stale, live, remote):
        p.write_bytes(b"half")
    common.write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert not stale.exists() and live.exists() and remote.exists()
