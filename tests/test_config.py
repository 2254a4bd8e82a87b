"""Config validation: both shipped configs pass; errors name the key."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from conftest import REPO, STYLEGAN_RUN, with_face_study

from ganime_steps import config as config_module
from ganime_steps.common import GanimeError
from ganime_steps.config import validate_config
from ganime_steps.gan import FAMILIES as GAN_FAMILIES
from ganime_steps.gan import available_families

FAMILIES = tuple(available_families())


def load(name):
    return yaml.safe_load((REPO / name).read_text())


def demo():
    """The demo config plus a progressive run and a face study, to check their settings (the demo has neither)."""
    config = with_face_study(load("configs/demo.yaml"))
    config["runs"]["stylegan_A"] = dict(STYLEGAN_RUN)
    return config


@pytest.mark.parametrize("name", ["config.yaml", "configs/demo.yaml"])
def test_shipped_configs_validate(name):
    config = load(name)
    assert "ema_kimg" not in str(config)  # neither config sets it: validation must fill in the schema default
    validate_config(config, families=FAMILIES)  # raises on the first error
    assert config["runs"] and all(run["ema_kimg"] == 10 for run in config["runs"].values())


def test_unknown_family_is_an_error():
    config = load("config.yaml")
    config["runs"]["wgangp_B"]["family"] = "wgangp"
    with pytest.raises(
        GanimeError, match=r"config key runs\.wgangp_B\.family: 'wgangp' is not a GAN family; available: "
    ):
        validate_config(config, families=FAMILIES)


def test_constants_match_the_code_they_mirror():
    """config.py avoids importing torch: its copies of the family table and the evaluator's minimum must agree."""
    progressive = {name: fam.start_resolution for name, fam in GAN_FAMILIES.items() if fam.progressive}
    assert config_module.PROGRESSIVE_START == progressive
    assert config_module.FAMILY_NAMES == FAMILIES
    from ganime_steps.metrics.defaults import MIN_SAMPLES

    assert config_module.MIN_SAMPLES == MIN_SAMPLES
    schema = yaml.safe_load(config_module.SCHEMA.read_text())
    assert schema["properties"]["evaluation"]["properties"]["n_samples"]["minimum"] == MIN_SAMPLES


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c["runs"]["dcgan_A"].update(kimg=-1), "runs.dcgan_A.kimg"),
        (lambda c: c["runs"]["dcgan_A"].update(dataset="Z"), "runs.dcgan_A.dataset"),
        (lambda c: c["datasets"]["B"]["drop"].update(ugly="auto"), "datasets.B.drop.ugly"),
        (lambda c: c["datasets"]["B"]["drop"].update(chibi=1.5), "datasets.B.drop.chibi"),
        (lambda c: c["scrape"].update(kind="pixiv"), "scrape.kind"),
        (
            lambda c: c["classifiers"]["chibi"].update(threshold_rule="precision:high"),
            "classifiers.chibi.threshold_rule",
        ),
        (lambda c: c.update(typo_section={}), "(top level)"),
        (lambda c: c["runs"]["dcgan_A"].update(family="dcgna"), "runs.dcgan_A.family: 'dcgna' is not a GAN family"),
        (lambda c: c["runs"].update({"dcgan.v2": {"family": "dcgan", "dataset": "A"}}), "runs.dcgan.v2: the name"),
        (lambda c: c["datasets"].update({"C/x": {}}), "datasets.C/x: the name"),
        (lambda c: c["classifiers"].update({"chi bi": {}}), "classifiers.chi bi: the name"),
        (lambda c: c["labels"].update({"chi.bi": "x.csv"}), "labels.chi.bi: the name"),
        (lambda c: c["scrape"].update(source="my.booru"), "scrape.source"),
        (lambda c: c["evaluation"].update(metric_samples=3), "evaluation.metric_samples: 3 is too few"),
        (
            lambda c: c["runs"]["stylegan_A"].update(start_resolution=64),
            "runs.stylegan_A.start_resolution: 64 is above",
        ),
        (
            lambda c: c["runs"]["stylegan_A"].update(batch_schedule="4:64"),
            "runs.stylegan_A.batch_schedule: resolution 4",
        ),
        (
            lambda c: c["runs"]["stylegan_A"].update(batch_schedule="64:8"),
            "runs.stylegan_A.batch_schedule: resolution 64",
        ),
        (
            lambda c: c["runs"]["stylegan_A"].update(batch_schedule="12:8"),
            "runs.stylegan_A.batch_schedule: resolution 12",
        ),
        (
            lambda c: c["runs"]["stylegan_A"].update(batch_schedule="16:0"),
            "runs.stylegan_A.batch_schedule: batch size 0",
        ),
        (
            lambda c: c["runs"]["dcgan_A"].update(start_resolution=8),
            "runs.dcgan_A.start_resolution: only the progressive",
        ),
        (lambda c: c["runs"]["dcgan_A"].update(stable_kimg=1), "runs.dcgan_A.stable_kimg: only the progressive"),
        (lambda c: c["runs"]["dcgan_A"].update(fade_kimg=1), "runs.dcgan_A.fade_kimg: only the progressive"),
        (
            lambda c: c["runs"]["dcgan_A"].update(batch_schedule="32:8"),
            "runs.dcgan_A.batch_schedule: only the progressive",
        ),
        (lambda c: c["scrape"].update(kind="dapi"), "scrape.base_url: required for kind 'dapi'"),
        (lambda c: c["scrape"].update(kind="danbooru", base_url=""), "scrape.base_url: required for kind 'danbooru'"),
        (lambda c: c["datasets"]["faces"].update(require_tags=["smile"]), "datasets.faces.require_tags: tag rules"),
        (lambda c: c["datasets"]["faces"].update(exclude_tags=["hat"]), "datasets.faces.exclude_tags: tag rules"),
        (lambda c: c["classifiers"]["multi"].update(arch="resnet343"), "classifiers.multi.arch: 'resnet343' is not"),
        (lambda c: c["classifiers"]["multi"].update(arch="resnet34"), "classifiers.multi.arch: 'resnet34' has no"),
        (lambda c: c["scrape"].update(kind="folder"), "scrape.path: required for kind 'folder'"),
        (lambda c: c["report"].update(study={"kept": {"Z": 5000}}), "report.study.kept.Z: 'Z' is not a dataset"),
    ],
)
def test_errors_name_the_key(edit, key):
    config = demo()
    edit(config)
    with pytest.raises(GanimeError, match=rf"^config key {re.escape(key)}"):
        validate_config(config, families=FAMILIES)


@pytest.mark.parametrize("value", ["precision:4", "precision:0", "precison:0.4", "precision:", "recall:0.5", 1.5, -0.1])
def test_a_malformed_drop_operating_point_is_one_line_naming_the_key_and_the_fix(value):
    config = demo()
    config["datasets"]["B"]["drop"]["aesthetic"] = value
    with pytest.raises(GanimeError) as caught:
        validate_config(config, families=FAMILIES)
    message = str(caught.value)
    assert message.startswith(f"config key datasets.B.drop.aesthetic: {value!r}: use auto, a score threshold")
    assert "precision:<p> with 0 < p <= 1 (e.g. precision:0.4)" in message and "\n" not in message


@pytest.mark.parametrize("value", ["precision:0.4", "precision:.4", "precision:1", "precision:1.0", "best_f1", 0, 0.3])
def test_a_drop_can_name_an_operating_point(value):
    config = demo()
    config["datasets"]["B"]["drop"]["aesthetic"] = value
    validate_config(config, families=FAMILIES)
    assert config["datasets"]["B"]["drop"]["aesthetic"] == value


def test_config_yaml_model_b_is_the_studys_weak_aesthetic_filter():
    """B = A's filters plus the aesthetic classifier's positives at the study's operating point, precision 0.4."""
    datasets = load("config.yaml")["datasets"]
    assert datasets["B"]["drop"] == {**datasets["A"]["drop"], "aesthetic": "precision:0.4"}


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["runs"]["stylegan_A"].update(batch_schedule="8:16,16:16,32:8", start_resolution=None),
        lambda c: c["runs"]["stylegan_A"].update(family="progan", start_resolution=None, batch_schedule="4:16,32:8"),
        lambda c: c["datasets"]["A"].update(require_tags=["solo"], exclude_tags=["hat"]),
        lambda c: c["evaluation"].update(metric_samples=0, n_samples=4),
        lambda c: c["scrape"].update(kind="danbooru", base_url="https://danbooru.donmai.us"),
        lambda c: c["runs"].update({"dcgan-v2": {"family": "dcgan", "dataset": "A"}}),
    ],
)
def test_valid_edits_pass(edit):
    """The checks above refuse only what is wrong: their valid neighbours pass."""
    config = demo()
    edit(config)
    validate_config(config, families=FAMILIES)
    validate_config(config, families=FAMILIES)  # idempotent on the validated (seed-expanded) config


def test_seeds_expand_into_one_run_each_and_revalidate_unchanged():
    config = demo()
    config["runs"]["dcgan_A"]["seeds"] = [3, 7]
    validate_config(config, families=FAMILIES)
    assert [r for r in config["runs"] if r.startswith("dcgan_A")] == ["dcgan_A_s3", "dcgan_A_s7"]
    assert config["runs"]["dcgan_A_s7"]["seed"] == 7 and config["runs"]["dcgan_A_s7"]["group"] == "dcgan_A"
    assert config["runs"]["dcgan_B_s0"]["group"] == "dcgan_B"
    before = copy.deepcopy(config["runs"])
    validate_config(config, families=FAMILIES)  # Snakemake may validate the same config twice
    assert config["runs"] == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["datasets"].update(gold={}), "datasets.gold: the name is reserved"),
        (lambda c: c["runs"]["dcgan_A"].update(metrics_every=15), "runs.dcgan_A.metrics_every: 15 is not a multiple"),
        (lambda c: c["runs"].update(dcgan_A_s1={"family": "dcgan", "dataset": "A"}), "dcgan_A_s1' is taken"),
        (lambda c: c["evaluation"].update(n_samples=3), "evaluation.n_samples"),
    ],
)
def test_gold_metric_and_seed_errors_name_the_key(edit, message):
    config = demo()
    edit(config)
    with pytest.raises(GanimeError, match=re.escape(message)):
        validate_config(config, families=FAMILIES)


def _two_sources(config):
    config["sources"]["other"] = {"kind": "folder", "path": "data/other"}
    config["datasets"]["faces_other"] = {"from": "faces", "source": "other"}
    return config


def test_matrix_expands_into_runs_per_family_dataset_and_seed():
    config = _two_sources(demo())
    config["matrix"] = {
        "families": ["dragan", "sngan"], "datasets": ["faces", "faces_other"], "seeds": [0, 1, 2],
        "resolution": 32, "kimg": 4, "reference": "faces",
    }  # fmt: skip
    validate_config(config, families=FAMILIES)
    made = [name for name, run in config["runs"].items() if run["study"] == "study"]
    assert made == [f"{f}_{d}_s{s}" for f in ("dragan", "sngan") for d in ("faces", "faces_other") for s in (0, 1, 2)]
    run = config["runs"]["sngan_faces_other_s2"]
    assert (run["family"], run["dataset"], run["seed"]) == ("sngan", "faces_other", 2)
    assert run["group"] == "sngan_faces_other"
    assert (run["resolution"], run["kimg"], run["reference"], run["ema_kimg"]) == (32, 4, "faces", 10)  # + defaults
    assert config["runs"]["dcgan_A_s0"]["study"] is None  # the config's own runs are in no study
    assert config["datasets"]["A"]["source"] == "synthetic" and config["datasets"]["faces_other"]["source"] == "other"
    before = copy.deepcopy(config)
    validate_config(config, families=FAMILIES)  # validating the validated config again changes nothing
    assert config == before


def test_named_matrices_and_reference_train():
    config = _two_sources(demo())
    config["matrix"] = {
        "faces": {"families": ["dragan"], "datasets": ["faces", "faces_other"]},
        "posts": {"families": ["wgan-gp"], "datasets": ["A", "B"], "seeds": [4]},
    }
    validate_config(config, families=FAMILIES)
    assert config["runs"]["dragan_faces_other"]["study"] == "faces"
    # train: a face run's shared reference is a face set, never evaluation.reference (A, full-body posts)
    assert config["runs"]["dragan_faces_other"]["reference"] == "faces_other"
    assert config["runs"]["wgan-gp_B_s4"]["study"] == "posts" and config["matrix"]["posts"]["reference"] == "train"
    assert config["runs"]["wgan-gp_B_s4"]["reference"] == "A"  # posts runs: evaluation.reference


def test_every_run_is_measured_against_its_own_kind():
    """The demo's face runs once fell back to evaluation.reference (A: full-body posts) as their shared reference."""
    config = _two_sources(demo())
    config["matrix"] = {"families": ["dragan"], "datasets": ["faces", "faces_other"]}
    config["evaluation"]["face_reference"] = "faces"
    validate_config(config, families=FAMILIES)
    units = {name: ds["from"] for name, ds in config["datasets"].items()}
    for name, run in config["runs"].items():
        assert units[run["reference"]] == units[run["dataset"]], name
    assert config["runs"]["dragan_faces_other"]["reference"] == "faces"  # evaluation.face_reference
    assert config["runs"]["dcgan_B_s0"]["reference"] == "A"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["runs"]["dcgan_A"].update(reference="faces"),
            "config key runs.dcgan_A.reference: 'faces' is a dataset of faces but the run trains on 'A', a dataset of "
            "posts",
        ),
        (
            lambda c: c["matrix"].update(reference="A"),
            "config key matrix.study.reference: 'A' is a dataset of posts but the run trains on 'faces'",
        ),
        (lambda c: c["evaluation"].update(face_reference="B"), "config key evaluation.face_reference: 'B' is a dat"),
        (lambda c: c["evaluation"].update(face_reference="x"), "config key evaluation.face_reference: 'x' is not a da"),
        (lambda c: c["evaluation"].update(reference="x"), "config key evaluation.reference: 'x' is not a dataset"),
    ],
)
def test_a_reference_of_the_other_kind_is_refused(edit, message):
    config = demo()
    edit(config)
    with pytest.raises(GanimeError, match=re.escape(message)):
        validate_config(config, families=FAMILIES)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["matrix"].update(kimg=-1), "config key matrix.study.kimg: -1 is less than"),
        (lambda c: c["matrix"].update(datasets=["faces", "nope"]), "config key matrix.study.datasets: 'nope' is not"),
        (lambda c: c["matrix"].update(families=["dcgann"]), "config key matrix.study.families: 'dcgann' is not a GAN"),
        (
            lambda c: c["matrix"].update(reference="gone"),
            "matrix.study.reference: 'gone' is not a dataset in datasets (run",
        ),
        (lambda c: c["matrix"].update(start_resolution=8), "matrix.study.start_resolution: only the progressive"),
        (lambda c: c["matrix"].update(metrics_every=3, checkpoint_every=2), "config key matrix.study.metrics_every"),
        (lambda c: c["matrix"].update(families=["dcgan"], datasets=["A"]), "matrix.study: its run 'dcgan_A'"),
        (lambda c: c["matrix"].pop("datasets"), "config key matrix.study: 'datasets' is a required property"),
        (lambda c: c["sources"]["other"].update(kind="dapi"), "config key sources.other.base_url: required"),
        (lambda c: c["sources"]["other"].update(path=None), "config key sources.other.path: required"),
        (lambda c: c["sources"].update(synthetic={"kind": "folder", "path": "x"}), "config key sources.synthetic: "),
        (lambda c: c["sources"]["other"].update(source="x"), "config key sources.other.source: a sources entry"),
        (lambda c: c["datasets"]["faces_other"].update(source="x"), "config key datasets.faces_other.source: 'x' is"),
    ],
)
def test_matrix_and_source_errors_name_the_key(edit, message):
    config = _two_sources(demo())
    config["matrix"] = {"families": ["dragan", "sngan"], "datasets": ["faces", "faces_other"]}
    edit(config)
    with pytest.raises(GanimeError, match=re.escape(message)):
        validate_config(config, families=FAMILIES)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["runs"]["dcgan_A"].update(epochs=350),
            "config key runs.dcgan_A.epochs: runs.dcgan_A also sets kimg",
        ),
        (lambda c: c["matrix"].update(epochs=350), "config key matrix.study.epochs: matrix.study also sets kimg (6)"),
        (lambda c: c["runs"]["dcgan_A"].update(kimg=None), "config key runs.dcgan_A.kimg: null is no run length"),
    ],
)
def test_a_run_length_is_kimg_or_epochs(edit, message):
    config = demo()
    edit(config)
    with pytest.raises(GanimeError, match=re.escape(message)):
        validate_config(config, families=FAMILIES)


def test_epochs_runs_leave_their_kimg_to_the_train_job():
    """A run in epochs (a matrix's too) keeps its epochs and no kimg: the train job resolves it from its set's size."""
    config = demo()
    config["runs"]["dcgan_A"].pop("kimg")
    config["runs"]["dcgan_A"]["epochs"] = 2
    config["matrix"].pop("kimg")
    config["matrix"]["epochs"] = 350
    validate_config(config, families=FAMILIES)
    assert (config["runs"]["dcgan_A_s0"]["epochs"], config["runs"]["dcgan_A_s0"]["kimg"]) == (2, None)
    assert (config["runs"]["dragan_faces_s0"]["epochs"], config["runs"]["dragan_faces_s0"]["kimg"]) == (350, None)
    assert (config["runs"]["dcgan_B_s0"]["epochs"], config["runs"]["dcgan_B_s0"]["kimg"]) == (None, 80)
    before = copy.deepcopy(config)
    validate_config(config, families=FAMILIES)  # Snakemake may validate the same config twice
    assert config == before


def test_classifier_arch_is_checked_against_timm_through_a_per_version_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = load("configs/demo.yaml")
    config["classifiers"]["chibi"]["arch"] = "resnet_34"
    with pytest.raises(
        GanimeError, match=r"config key classifiers\.chibi\.arch: 'resnet_34' is not a timm model .*resnet34"
    ):
        validate_config(copy.deepcopy(config), families=FAMILIES)
    cached = list(tmp_path.glob("ganime/timm-*-models.txt"))
    assert len(cached) == 1 and "resnet34" in cached[0].read_text().split()
    # the next check reads the cache, not timm: a name only the cache knows passes (with a pretrained tag), and a
    # real timm name the cache lacks is refused
    cached[0].write_text("only_in_cache\n")
    for spec in config["classifiers"].values():
        spec.update(arch="only_in_cache.some_tag", pretrained="none")  # no offline weights for a made-up arch
    validate_config(copy.deepcopy(config), families=FAMILIES)
    config["classifiers"]["chibi"]["arch"] = "resnet34"
    with pytest.raises(GanimeError, match=r"classifiers\.chibi\.arch: 'resnet34' is not a timm model"):
        validate_config(copy.deepcopy(config), families=FAMILIES)
    cached[0].write_text("")  # an empty (damaged) cache is made again
    validate_config(load("configs/demo.yaml"), families=FAMILIES)
    assert "resnet34" in cached[0].read_text().split()
