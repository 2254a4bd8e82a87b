"""The report's answer to 'is B better than A?': seeds aggregated, Welch's t-test over seeds with Holm's correction
(checked by simulation, against scipy and against the old rule), curves, and the torch-free CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from ganime_steps import comparison

STUDIES = 4000  # simulated studies per check: a rate's binomial SE at 5% is 0.0034
ALPHA = comparison.ALPHA


def _bound(rate: float = ALPHA) -> float:
    """The largest false-positive rate a correct test shows in STUDIES studies: alpha + 3 binomial SEs."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / STUDIES)


def _false_positives(n: int, sd_a: float, sd_b: float, rng: np.random.Generator) -> tuple[float, float]:
    """Share of studies with no true difference in which (Welch's verdict, the old rule) named a winner."""
    a, b = rng.normal(100, sd_a, (STUDIES, n)), rng.normal(100, sd_b, (STUDIES, n))
    w = comparison.welch(a, b)
    welch = np.mean(comparison.decide(w["difference"], w["p_value"]) != "no_difference")
    return float(welch), float(np.mean(_old_rule(a, b)))


def _old_rule(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sabotage: the verdict this module used to give, 'significant' when |mean A - mean B| > the larger std."""
    spread = np.maximum(a.std(axis=-1, ddof=1), b.std(axis=-1, ddof=1))
    return np.abs(a.mean(axis=-1) - b.mean(axis=-1)) > spread


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("sds", [(1.0, 1.0), (1.0, 2.0), (2.0, 1.0)], ids=["equal", "b_noisier", "a_noisier"])
def test_no_true_difference_names_a_winner_at_most_alpha_of_the_time(n, sds):
    """Seeds' spreads equal, or one side's twice the other's. (Welch runs slightly liberal at more lopsided spreads
    and 2-3 seeds: 5.7% at a 4x spread and 3 seeds, 6.2% at 10x and 2 seeds, in 400,000 simulated studies.)"""
    rng = np.random.default_rng(1000 * n + int(10 * sds[1]))
    welch, old = _false_positives(n, *sds, rng)
    assert welch <= _bound(), (n, sds, welch)
    assert old > _bound(), (n, sds, old)  # the old rule fails this very check (33% at 2 seeds)


def test_three_seed_stds_are_detected_at_five_seeds():
    rng = np.random.default_rng(7)
    a, b = rng.normal(300, 10, (STUDIES, 5)), rng.normal(270, 10, (STUDIES, 5))  # B better by 3 stds
    w = comparison.welch(a, b)
    verdicts = comparison.decide(w["difference"], w["p_value"])
    assert np.mean(verdicts == "b_better") >= 0.80 and not np.any(verdicts == "a_better")
    higher = comparison.decide(w["difference"], w["p_value"], higher_is_better=True)
    assert np.mean(higher == "a_better") >= 0.80  # higher is better: the same numbers favour A


def test_holm_keeps_the_family_wise_error_rate_over_six_null_comparisons():
    rng = np.random.default_rng(11)
    p = comparison.welch(rng.normal(0, 1, (STUDIES, 6, 3)), rng.normal(0, 1, (STUDIES, 6, 3)))["p_value"]
    fwer_holm = np.mean([min(comparison.holm(list(row))) <= ALPHA for row in p])
    fwer_raw = np.mean((p <= ALPHA).any(axis=1))
    assert fwer_holm <= _bound(), fwer_holm
    assert fwer_raw > _bound(), fwer_raw  # uncorrected, the same check fails


def test_holm_adjusts_as_the_textbook_does():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> made non-decreasing
    assert comparison.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert comparison.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and comparison.holm([]) == []


def test_welch_matches_scipy_ttest_ind():
    a, b = [312.1, 298.4, 305.0], [290.2, 301.7, 288.9, 295.5]
    ref = stats.ttest_ind(b, a, equal_var=False)
    low, high = ref.confidence_interval(0.95)
    c = comparison.compare(a, b)
    assert c["p_value"] == pytest.approx(ref.pvalue, rel=1e-12) and c["df"] == pytest.approx(ref.df, rel=1e-12)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((low, high), rel=1e-12)
    assert c["difference"] == pytest.approx(np.mean(b) - np.mean(a)) and (c["n_a"], c["n_b"]) == (3, 4)


def test_seeds_for_power_matches_a_simulated_power():
    k = comparison.seeds_for_power(3.0, 2.0)  # effect size 1.5
    rng = np.random.default_rng(3)
    for n, side in ((k, "reached"), (k - 1, "short")):
        w = comparison.welch(rng.normal(0, 2, (STUDIES, n)), rng.normal(3, 2, (STUDIES, n)))
        power = np.mean(w["p_value"] <= ALPHA)
        assert (power >= 0.76) if side == "reached" else (power < 0.80), (n, power)  # Welch ~ pooled t here
    assert comparison.seeds_for_power(0.01, 10.0) is None  # beyond MAX_SEEDS


def test_judge_sentences():
    win = comparison.judge(comparison.compare([312.1, 318.4, 315.0, 312], [290.2, 301.7, 288.9, 291]))
    assert win["verdict"] == "b_better"
    assert win["sentence"].startswith("B better than A by 21.4 (95% CI 12.6 to 30.3, p = 0.002, n = 4+4 seeds)")
    null = comparison.judge(comparison.compare([312.1, 298.4, 305.0], [290.2, 301.7, 288.9]))
    assert null["verdict"] == "no_difference" and null["power_seeds"] == 7
    assert null["sentence"].startswith("no difference detected at this many seeds (B − A = -11.6; the 95% CI spans")
    assert "-27.3 to 4.2, p = 0.111, n = 3+3 seeds" in null["sentence"]
    assert "about 7 seeds per side would detect a difference of this size at 80% power" in null["sentence"]
    zero = comparison.judge(comparison.compare([1.0, 2.0], [2.0, 1.0]))
    assert zero["verdict"] == "no_difference" and "exactly 0" in zero["sentence"]
    one = comparison.judge(comparison.compare([1.0], [5.0, 6.0]))
    assert one["sentence"] == "one seed on a side: not a result (n = 1+2 seeds)" and one["p_value"] is None
    flat = comparison.judge(comparison.compare([1.0, 1.0], [2.0, 2.0]))
    assert flat["verdict"] == "no_difference" and "cannot be tested" in flat["sentence"]
    tiny = comparison.judge(comparison.compare([10.0, 10.4, 9.6], [10.01, 10.41, 9.61]))
    assert "more than 50 seeds per side" in tiny["sentence"]
    held = comparison.judge(comparison.compare([312.1, 318.4, 315.0, 312], [290.2, 301.7, 288.9, 291]),
                            p_adjusted=0.2, n_tests=8)  # fmt: skip
    assert held["verdict"] == "no_difference" and "p = 0.200 after Holm over 8 comparisons" in held["sentence"]


# ----------------------------------------------------------------------------------------------------------------------
# the CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m ganime_steps.comparison ARGS`` in a fresh interpreter that then says which heavy modules loaded."""
    wrapper = (
        "import runpy, sys\n"
        "sys.argv = ['ganime_steps.comparison', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('ganime_steps.comparison', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "print('LOADED', sorted(m for m in ('torch', 'scipy') if m in sys.modules), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    return subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, timeout=120)


def test_cli_prints_one_json_object_and_imports_no_torch():
    proc = _cli("--a", "312.1", "298.4", "305.0", "--b", "290.2", "301.7", "288.9")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "LOADED ['scipy']" in proc.stderr  # the check sees what loaded: scipy yes, torch no
    ref = stats.ttest_ind([290.2, 301.7, 288.9], [312.1, 298.4, 305.0], equal_var=False)
    assert out["difference"] == pytest.approx(293.6 - 305.1666667) and out["p_value"] == pytest.approx(ref.pvalue)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert (out["verdict"], out["n_a"], out["n_b"]) == ("no_difference", 3, 3)
    assert out["sentence"].startswith("no difference detected")


def test_cli_direction_alpha_and_bad_input(capsys):
    assert comparison.main(["--a", "1", "2", "3", "--b", "11", "12", "13"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "a_better"  # lower is better
    assert comparison.main(["--a", "1", "2", "3", "--b", "11", "12", "13", "--higher-is-better"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "b_better"
    assert comparison.main(["--a", "1", "2", "3", "--b", "1.5", "2.5", "3.5", "--alpha", "0.9"]) == 0
    assert json.loads(capsys.readouterr().out)["alpha"] == 0.9
    for argv, words in (
        (["--a", "1", "x", "--b", "2", "3"], "--a 'x': not a finite number"),
        (["--a", "--b", "2"], "--a: give at least one value"),
        (["--a", "1", "2"], "--b: give at least one value"),
        (["--a", "1", "2", "--b", "nan", "3"], "--b 'nan'"),
        (["--a", "1", "2", "--b", "3", "4", "--alpha", "2"], "--alpha 2.0: must be between 0 and 1"),
    ):
        assert comparison.main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == "" and words in captured.err and len(captured.err.strip().splitlines()) == 1, argv


# ----------------------------------------------------------------------------------------------------------------------
# groups of seeds, and the report's verdicts


def _row(run, group, dataset, fds, family="dcgan", kid=0.01, n_real=500, **more):
    """A run as the report reads it (report._reference_values per reference): FD per reference (shared, train, gold)."""

    def block(fd, ref_dataset, k):
        values = {"fd": fd, "kid_mean": k, "kid_std": 0.001, "precision": None, "recall": None, "fd_inf": None,
                  "fd_ci": None, "kid_ci": None, "n_fake": 1000, "n_real": n_real, "reference_sha256": None,
                  "dataset": ref_dataset}  # fmt: skip
        return {**values, **more}

    refs = {"shared": block(fds[0], "A", kid), "train": block(fds[1], dataset, kid), "gold": block(fds[2], "gold", kid)}
    return {
        "run": run,
        "group": group,
        "family": family,
        "dataset": dataset,
        "resolution": 32,
        "feature_space": "inception",
        "is_fid": True,
        "references": refs,
    }


def test_aggregate_mean_and_sample_std_over_seeds():
    groups = comparison.aggregate([_row("a0", "a", "A", (10, 20, 30)), _row("a1", "a", "A", (12, 22, 34))])
    (g,) = groups
    assert g["n_seeds"] == 2 and g["runs"] == ["a0", "a1"]
    gold = g["references"]["gold"]
    assert gold["fd_mean"] == pytest.approx(32) and gold["fd_std"] == pytest.approx(2**0.5 * 2)
    assert gold["fd_values"] == [30, 34] and gold["n_real"] == 500 and gold["n_fake"] == 1000
    assert gold["dataset"] == "gold" and g["references"]["train"]["dataset"] == "A"
    assert gold["fd_ci"] is None and gold["fd_inf_mean"] is None  # no intervals measured (evaluate --bootstrap 0)


def test_within_run_uncertainty_is_read_and_carried():
    extra = {"fd_ci": (28.5, 31.5), "kid_ci": (0.008, 0.012), "fd_inf": 25.0, "reference_sha256": "ab" * 32}
    (g,) = comparison.aggregate([_row("a0", "a", "A", (10, 20, 30), **extra)])
    gold = g["references"]["gold"]
    assert gold["fd_ci"] == (28.5, 31.5) and gold["kid_ci"] == (0.008, 0.012) and gold["fd_inf_mean"] == 25.0
    assert gold["reference_sha256"] == "ab" * 32


def _ab(fd_a, fd_b, kid_a=(0.01, 0.011, 0.012), kid_b=(0.01, 0.011, 0.012), **kw):
    """Three seeds each of dcgan on A and on B; fd_*: per seed (shared, train, gold)."""
    rows = [_row(f"a{i}", "a", "A", fd, kid=k, **kw) for i, (fd, k) in enumerate(zip(fd_a, kid_a, strict=True))]
    rows += [_row(f"b{i}", "b", "B", fd, kid=k, **kw) for i, (fd, k) in enumerate(zip(fd_b, kid_b, strict=True))]
    return comparison.aggregate(rows)


A3 = [(10, 20, 30), (11, 21, 31), (12, 22, 32)]
B3 = [(10.5, 40, 20), (11.5, 41, 21), (12.5, 42, 22)]  # gold: B lower by 10, seed sd 1; train: B higher by 20


def test_verdicts_welch_holm_and_no_verdict_on_own_training_sets():
    groups = _ab(A3, B3)
    groups += comparison.aggregate([_row("s", "s", "B", (1, 1, 1), family="sngan")])  # another family: never paired
    v = {x["reference"]: x for x in comparison.verdicts(groups)}
    assert set(v) == {"shared", "train", "gold"}
    gold = v["gold"]
    assert gold["status"] == "tested" and gold["fd"]["verdict"] == "b_better" and gold["significant"]
    assert gold["fd"]["difference"] == pytest.approx(-10) and gold["fd"]["n_tests"] == 4  # fd + kid on shared, gold
    assert gold["fd"]["p_adjusted"] >= gold["fd"]["p_value"]
    assert gold["meaning"].startswith("B better than A by 10.00 (95% CI ")
    assert gold["kid"]["verdict"] == "no_difference" and "exactly 0" in gold["kid"]["sentence"]
    assert v["shared"]["fd"]["verdict"] == "no_difference" and not v["shared"]["significant"]
    train = v["train"]  # B is 20 worse on its own set, with no spread to speak of: still never a verdict
    assert train["status"] == "no_verdict" and train["fd"]["verdict"] is None and not train["significant"]
    assert train["fd"]["sentence"] == comparison.TRAIN_NOTE and train["fd"]["mean_b"] == pytest.approx(41)
    assert train["reference_dataset"] is None
    one = comparison.verdicts(comparison.aggregate([_row("a", "a", "A", (1, 1, 1)), _row("b", "b", "B", (5, 5, 5))]))
    assert all(not x["significant"] and "one seed" in x["meaning"] for x in one if x["reference"] != "train")


def test_gold_too_small_and_not_comparable_pairs_get_no_verdict():
    small = {x["reference"]: x for x in comparison.verdicts(_ab(A3, B3, n_real=120), gold_min=200)}
    assert small["gold"]["status"] == "gold_too_small" and small["gold"]["fd"]["verdict"] is None
    assert small["gold"]["meaning"] == "gold too small to judge (n = 120, need ≥ 200)"
    assert small["shared"]["status"] == "tested" and small["shared"]["fd"]["n_tests"] == 2
    groups = _ab(A3, B3, n_real=None)  # no gold size known: no verdict
    unknown = {x["reference"]: x for x in comparison.verdicts(groups, gold_min=200)}
    assert unknown["gold"]["status"] == "gold_too_small" and "unknown" in unknown["gold"]["meaning"]
    groups = _ab(A3, B3)
    groups[1]["references"]["gold"]["n_fake"] = 500
    groups[1]["references"]["shared"]["reference_sha256"] = "f" * 64
    groups[0]["references"]["shared"]["reference_sha256"] = "0" * 64
    v = {x["reference"]: x for x in comparison.verdicts(groups)}
    assert v["gold"]["status"] == "not_comparable" and "N differs (1000 vs 500" in v["gold"]["meaning"]
    assert v["shared"]["status"] == "not_comparable" and "different reference files" in v["shared"]["meaning"]


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
        _row("dragan_t_s0", "dragan_t", "t", (30, 20, 0), family="dragan"),
        _row("dragan_t_s1", "dragan_t", "t", (32, 22, 0), family="dragan"),
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
    (v,) = table["verdicts"]  # dragan f vs t against the train reference: numbers, never a verdict
    assert (v["better_dataset"], v["worse_dataset"], v["status"], v["significant"]) == ("t", "f", "no_verdict", False)
    (shared,) = comparison.study_tables(groups, {"faces": {**spec, "reference": "A"}})
    assert shared["cells"]["t"]["dragan"]["fd_mean"] == pytest.approx(31)  # the shared reference's numbers
    (w,) = shared["verdicts"]  # against a dataset: Welch's verdict (f lower by 20, seed sd 1.4, 2+2 seeds)
    assert w["status"] == "tested" and w["fd"]["verdict"] == "a_better"
    assert w["fd"]["n_tests"] == 1  # KID and gold: every seed gave the same number, nothing to test
