"""Config validation: both shipped configs pass; errors name the key."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO

from ganime_steps.common import GanimeError
from ganime_steps.config import validate_config

FAMILIES = ("dcgan", "wgan-gp", "dragan", "sngan")


def load(name):
    return yaml.safe_load((REPO / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "configs/demo.yaml"])
def test_shipped_configs_validate(name):
    config = load(name)
    validate_config(config, families=FAMILIES)
    assert all(run["z_dim"] > 0 for run in config["runs"].values())  # defaults filled in
    assert config["faces"]["size"] == 64


def test_unavailable_family_is_skipped_with_a_warning():
    config = load("config.yaml")
    warnings = validate_config(config, families=FAMILIES)
    assert "stylegan_A" not in config["runs"] and "wgangp_B" in config["runs"]
    assert any("stylegan" in w and "not available" in w for w in warnings)


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
    ],
)
def test_errors_name_the_key(edit, key):
    config = copy.deepcopy(load("configs/demo.yaml"))
    edit(config)
    with pytest.raises(GanimeError, match=rf"config key {__import__('re').escape(key)}"):
        validate_config(config, families=FAMILIES)


def test_seeds_expand_into_one_run_each_and_revalidate_unchanged():
    config = copy.deepcopy(load("configs/demo.yaml"))
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
    config = copy.deepcopy(load("configs/demo.yaml"))
    edit(config)
    with pytest.raises(GanimeError, match=__import__("re").escape(message)):
        validate_config(config, families=FAMILIES)
