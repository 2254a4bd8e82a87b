"""Reruns after code edits: a stage's code inputs are its module and every ganime_steps module it imports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, snakemake

from ganime_steps import codedeps
from ganime_steps.codedeps import imported_modules, stage_files

PKG = REPO / "ganime_steps"


def rel(files):
    return {str(Path(f).relative_to(PKG)) for f in files}


def test_train_lists_the_gan_package_common_and_evaluate():
    files = rel(stage_files("train"))
    assert {"train.py", "__init__.py", "common.py", "evaluate.py", "gan/__init__.py", "gan/loop.py"} <= files
    assert {"gan/losses.py", "gan/networks.py", "gan/progressive.py", "gan/stylegan.py"} <= files
    assert "scrape.py" not in files and "sources/http.py" not in files  # only what train runs


def test_scrape_lists_the_sources_package():
    files = rel(stage_files("scrape"))
    assert {"scrape.py", "common.py", "sources/__init__.py", "sources/http.py"} <= files
    assert not any(f.startswith("gan/") for f in files)


def test_every_stage_of_the_workflow_resolves_to_existing_files():
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    stages = set(re.findall(r'code\("([\w.]+)"\)', rules))
    if "code=training_code()" in rules:  # the train rule: the training modules of the train stage
        stages.add("train")
    assert {"scrape", "labels", "classifier", "train", "evaluate", "report", "sources.synthetic"} <= stages
    for stage in stages:
        files = stage_files(stage)
        assert str(codedeps.module_file(f"ganime_steps.{stage}")) in files, stage
        assert all(Path(f).is_file() for f in files), stage
    assert "imaging.py" in rel(stage_files("faces"))  # faces crops through imaging


def test_dotted_stage_is_a_subpackage_run_through_its_main():
    """``code("sources.synthetic")``: the package's __init__ and __main__, the modules they import, the parents."""
    files = rel(stage_files("sources.synthetic"))
    package = {"__init__", "__main__", "cli", "labels", "source", "render", "body", "head", "shapes", "plan"}
    assert {f"sources/synthetic/{name}.py" for name in package} <= files
    assert {"__init__.py", "sources/__init__.py", "common.py"} <= files
    assert "scrape.py" not in files and "sources/http.py" not in files


def test_dotted_stage_main_is_found_in_a_fake_package(tmp_path, monkeypatch):
    """The __main__ of a dotted stage is looked up under its path (a/b/__main__.py), not under 'a.b/'."""
    pkg = tmp_path / "ganime_steps"
    (pkg / "a" / "b").mkdir(parents=True)
    for name in ("__init__.py", "a/__init__.py", "a/b/__init__.py", "only_main_imports.py"):
        (pkg / name).write_text("")
    (pkg / "a" / "b" / "__main__.py").write_text("from ganime_steps import only_main_imports\n")
    monkeypatch.setattr(codedeps, "PACKAGE_DIR", pkg)
    files = {str(Path(f).relative_to(pkg)) for f in stage_files("a.b")}
    assert files == {"__init__.py", "a/__init__.py", "a/b/__init__.py", "a/b/__main__.py", "only_main_imports.py"}


def test_unknown_stage_is_an_error():
    with pytest.raises(FileNotFoundError, match="ganime_steps.nope"):
        stage_files("nope")


def test_relative_from_and_lazy_imports_are_followed(tmp_path, monkeypatch):
    """A fake package: every import form the parser must see, including one inside a function."""
    pkg = tmp_path / "ganime_steps"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stage.py").write_text(
        "import os\nfrom . import helper\nfrom .sub import deep\n\ndef f():\n    from ganime_steps import lazy\n"
    )
    (pkg / "helper.py").write_text("import numpy\n")
    (pkg / "lazy.py").write_text("")
    (pkg / "unused.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("from ..helper import x\nfrom ganime_steps.sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("")
    monkeypatch.setattr(codedeps, "PACKAGE_DIR", pkg)
    files = {str(Path(f).relative_to(pkg)) for f in stage_files("stage")}
    assert files == {
        "__init__.py",
        "stage.py",
        "helper.py",
        "lazy.py",
        "sub/__init__.py",
        "sub/deep.py",
        "sub/leaf.py",
    }
    assert "ganime_steps.helper" in imported_modules(pkg / "sub" / "deep.py", "ganime_steps.sub.deep")


def test_lazy_imports_are_followed_only_within_the_named_package(tmp_path, monkeypatch):
    """``lazy_within``: imports inside functions count in that package's modules only (class bodies always run)."""
    pkg = tmp_path / "ganime_steps"
    (pkg / "gan").mkdir(parents=True)
    for name in ("__init__.py", "gan/__init__.py", "metric.py", "family.py", "shared.py", "typed.py"):
        (pkg / name).write_text("")
    (pkg / "stage.py").write_text(
        "from ganime_steps.gan import net\n\nclass C:\n    from ganime_steps import typed\n\n"
        "def snapshot():\n    from ganime_steps import metric\n"
    )
    net = "import ganime_steps.shared\n\ndef build():\n    from ganime_steps import family\n"
    (pkg / "gan" / "net.py").write_text(net)
    monkeypatch.setattr(codedeps, "PACKAGE_DIR", pkg)
    every = {"__init__.py", "stage.py", "typed.py", "shared.py", "gan/__init__.py", "gan/net.py"}
    assert rel_to(pkg, stage_files("stage", lazy_within=None)) == every
    assert rel_to(pkg, stage_files("stage", lazy_within="ganime_steps.gan")) == every | {"family.py"}
    assert rel_to(pkg, stage_files("stage")) == every | {"family.py", "metric.py"}


def rel_to(pkg, files):
    return {str(Path(f).relative_to(pkg)) for f in files}


def test_training_files_are_the_modules_a_training_run_executes():
    files = rel(codedeps.training_files())
    gan = {
        f"gan/{m}.py"
        for m in ("__init__", "loop", "losses", "networks", "progressive", "stylegan", "projected")
        + ("data", "augment", "steps", "checkpoint", "snapshots", "parallel")
    }
    assert {"train.py", "common.py", "imaging.py", "checkpoints.py", "backbones.py"} | gan <= files
    # the packs are read through metrics/images.py (the one .npy reader); the package's __init__ imports nothing
    assert {"metrics/__init__.py", "metrics/images.py"} <= files
    assert {f for f in files if f.startswith("metrics/")} == {"metrics/__init__.py", "metrics/images.py"}
    # train imports evaluate (and through it the classifier package) lazily, for metric snapshots only
    assert not any(f.startswith("classifier/") for f in files)
    assert {"evaluate.py", "inception.py", "report.py"}.isdisjoint(files)
    assert any(f.startswith("classifier/") for f in rel(stage_files("train")))  # what the full closure reaches
    metric = rel(codedeps.metric_files())
    assert {"evaluate.py", "inception.py"} <= metric and not any(f.startswith("classifier/") for f in metric)
    assert "classifier/plots.py" in rel(codedeps.metric_files(classifier=True))


def test_normalized_source_ignores_comments_docstrings_and_formatting(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('"""Module."""\n\n\ndef loss(x):\n    """Doc."""\n    return x * 2  # twice\n\n\nclass K:\n    "d"\n')
    b.write_text("# a comment\ndef loss( x ):\n    return (x*2)\nclass K:\n    '''another doc'''\n")
    c.write_text("def loss(x):\n    return x * 3\n\n\nclass K:\n    pass\n")
    assert codedeps.normalized_source(a) == codedeps.normalized_source(b) != codedeps.normalized_source(c)


def test_train_job_inputs_are_training_and_metric_code_only(tmp_path):
    """Editing a classifier or report module does not rerun train (the demo measures snapshots with Inception)."""
    config = tmp_path / "run.yaml"
    config.write_text((REPO / "configs" / "demo.yaml").read_text())
    target = "results/runs/dcgan_A_s0/train_summary.json"
    result = snakemake("-n", "--configfile", str(config), "--directory", str(tmp_path), target)
    assert result.returncode == 0, result.stderr[-3000:]
    train = next(job for job in re.split(r"\n(?:local)?rule ", result.stdout) if job.startswith("train:"))
    inputs = {Path(f.strip()) for f in train.split("input:")[1].splitlines()[0].split(",")}
    code = {str(f.relative_to(PKG)) for f in inputs if f.is_relative_to(PKG)}
    assert code == rel(codedeps.training_files()) | rel(codedeps.metric_files())
    assert "gan/losses.py" in code and "evaluate.py" in code
    assert not any(f.startswith("classifier/") for f in code) and "report.py" not in code
