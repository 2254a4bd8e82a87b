"""The report's answer to 'is B better than A?': seeds aggregated, verdicts against the seeds' spread, curves."""

from __future__ import annotations

import json

import pytest

from ganime_steps import comparison


def _row(run, group, dataset, fds, family="dcgan"):
    refs = {
        "shared": {"fd": fds[0], "kid_mean": 0.01, "kid_std": 0.001, "reference_data": "r/datasets/A/pack_32.npy"},
        "train": {"fd": fds[1], "kid_mean": 0.02, "kid_std": 0.001, "reference_data": f"r/datasets/{dataset}/p.npy"},
        "gold": {"fd": fds[2], "kid_mean": 0.03, "kid_std": 0.002, "reference_data": "r/datasets/gold/pack_32.npy"},
    }
    return {
        "run": run,
        "group": group,
        "family": family,
        "dataset": dataset,
        "resolution": 32,
        "feature_space": "inception",
        "is_fid": True,
        "references": comparison.run_references({"references": refs}),
    }


def test_aggregate_mean_and_sample_std_over_seeds():
    groups = comparison.aggregate([_row("a0", "a", "A", (10, 20, 30)), _row("a1", "a", "A", (12, 22, 34))])
    (g,) = groups
    assert g["n_seeds"] == 2 and g["runs"] == ["a0", "a1"]
    gold = g["references"]["gold"]
    assert gold["fd_mean"] == pytest.approx(32) and gold["fd_std"] == pytest.approx(2**0.5 * 2)
    assert gold["dataset"] == "gold" and g["references"]["train"]["dataset"] == "A"


def test_verdict_beyond_spread_within_spread_and_single_seed():
    rows = [_row("a0", "a", "A", (10, 20, 30)), _row("a1", "a", "A", (11, 21, 31))]
    rows += [_row("b0", "b", "B", (10.2, 25, 20)), _row("b1", "b", "B", (11.2, 26, 21))]
    rows += [_row("s", "s", "B", (1, 1, 1), family="sngan")]  # another family: never paired with dcgan
    v = {x["reference"]: x for x in comparison.verdicts(comparison.aggregate(rows))}
    assert v["gold"]["better"] == "b" and v["gold"]["significant"] and v["gold"]["difference"] == pytest.approx(10)
    assert v["shared"]["better"] == "a" and not v["shared"]["significant"] and "within" in v["shared"]["meaning"]
    assert v["train"]["better"] == "a" and v["train"]["reference_dataset"] is None
    one = comparison.verdicts(comparison.aggregate([_row("a", "a", "A", (1, 1, 1)), _row("b", "b", "B", (5, 5, 5))]))
    assert all(not x["significant"] and "one seed" in x["meaning"] for x in one)


def test_curves_read_jsonl_and_log_and_draw(tmp_path):
    rows = [{"kimg": 1.0, "fid": 80.0}, {"kimg": 2.0, "fid": 60.0}, {"kimg": 3.0, "fid": 70.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"kimg": 4, "fid"')
    (tmp_path / "log.csv").write_text("step,kimg,loss_g,loss_d\n1,0.5,1.0,1.2\n2,1.0,0.9,1.1\n")
    curves = comparison.read_curves(tmp_path)
    assert len(curves["metrics"]) == 3 and len(curves["losses"]) == 2  # the cut last line is skipped
    assert comparison.best_snapshot(curves) == {"kimg": 2.0, "metric": "fid", "value": 60.0}
    png = comparison.curve_png("run", curves)
    assert png.startswith(b"\x89PNG")
    assert comparison.curve_png("run", comparison.read_curves(tmp_path / "missing")) is None


def test_study_table_pivots_datasets_by_families_over_seeds():
    rows = [
        _row("dragan_f_s0", "dragan_f", "f", (10, 40, 0), family="dragan"),
        _row("dragan_f_s1", "dragan_f", "f", (12, 44, 0), family="dragan"),
        _row("dragan_t_s0", "dragan_t", "t", (10, 20, 0), family="dragan"),
        _row("dragan_t_s1", "dragan_t", "t", (12, 22, 0), family="dragan"),
        _row("sngan_f_s0", "sngan_f", "f", (30, 50, 0), family="sngan"),
        _row("dcgan_A", "dcgan_A", "A", (1, 1, 1)),  # not in the study
    ]
    groups = comparison.aggregate(rows)
    spec = {"reference": "train", "groups": ["dragan_f", "dragan_t", "sngan_f", "sngan_t"]}
    (table,) = comparison.study_tables(groups, {"faces": spec})
    assert table["datasets"] == ["f", "t"] and table["families"] == ["dragan", "sngan"]
    cell = table["cells"]["f"]["dragan"]
    assert cell["fd_mean"] == pytest.approx(42) and cell["fd_std"] == pytest.approx(2**0.5 * 2)
    assert cell["n_seeds"] == 2 and cell["reference_dataset"] == "f"  # train: each against its own set
    assert "sngan" not in table["cells"].get("t", {}) and table["missing"] == ["sngan_t"]
    (v,) = table["verdicts"]  # dragan f vs t against the train reference; sngan has one dataset only
    assert (v["better_dataset"], v["worse_dataset"], v["significant"]) == ("t", "f", True)
    (shared,) = comparison.study_tables(groups, {"faces": {**spec, "reference": "A"}})
    assert shared["cells"]["t"]["dragan"]["fd_mean"] == pytest.approx(11)  # the shared reference's numbers
