"""Time to quality: each family's FID against training time and kimg, over seeds, and who reached a quality first."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from ganime_steps import comparison, report
from ganime_steps import time_to_quality as tq
from ganime_steps.metrics.result import MetricResult, Scores, Side, Weights
from ganime_steps.train_record import TrainSummary

IDENTITY = {"reference_sha256": "ab12", "n_fake": 5000, "n_real": 9000}
KIMG = [0, 200, 400, 600, 800, 1000]
# Per seed, FID at KIMG. ProGAN trains at 40 s per kimg, StyleGAN at 20: StyleGAN's mean curve (45, 40, 38, 37 from
# 400 kimg) passes ProGAN's best mean (45 at 1000 kimg) at 400 kimg.
PROGAN = [[300, 100, 60 + s, 50 + s, 45 + s, 44 + s] for s in range(3)]  # mean best 45 at 1000 kimg
STYLEGAN = [[310, 80, 45 - s, 40, 38, 37] for s in range(3)]  # mean 44 at 400 kimg, best 37 at 1000


def write_run(root: Path, run: str, fids, seconds_per_kimg: float, *, log=True, row_seconds=True, identity=IDENTITY):
    """A run folder as training leaves it: metrics.jsonl (a snapshot per 200 kimg) and log.csv (a row per 10 kimg)."""
    folder = root / run
    folder.mkdir(parents=True)
    rows = [
        {"kimg": k, "fid": f, **identity, **({"seconds": k * seconds_per_kimg} if row_seconds else {})}
        for k, f in zip(KIMG, fids, strict=True)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if log:
        lines = ["step,kimg,loss_g,loss_d,seconds"] + [
            f"{k},{k},1.0,1.0,{k * seconds_per_kimg}" for k in range(10, 1001, 10)
        ]
        (folder / "log.csv").write_text("\n".join(lines) + "\n")
    return folder


def ladder(tmp_path: Path, **progan_kw):
    runs, curves = [], {}
    for group, family, fids, speed in (
        ("progan_A", "progan", PROGAN, 40.0),
        ("stylegan_A", "stylegan", STYLEGAN, 20.0),
    ):
        for seed, f in enumerate(fids):
            run = f"{group}_s{seed}"
            folder = write_run(tmp_path, run, f, speed, **(progan_kw if family == "progan" else {}))
            runs.append({"run": run, "group": group, "family": family, "dataset": "A", "resolution": 128})
            curves[run] = comparison.read_curves(folder)
    return runs, curves


def test_stylegan_reaches_progans_best_sooner_in_time_and_in_images(tmp_path):
    runs, curves = ladder(tmp_path)
    view = tq.build(runs, curves)
    (only,) = view["sets"]
    progan, stylegan = only["groups"]
    assert (progan.best.kimg, progan.best.value, progan.best.seconds) == (1000, 45.0, 40000)
    assert (stylegan.best.kimg, stylegan.best.value, stylegan.best.seconds) == (1000, 37.0, 20000)
    assert stylegan.best.std == 0.0 and progan.points[2].std == pytest.approx(1.0)  # seeds 60, 61, 62
    (pair,) = only["pairs"]
    assert (pair.better, pair.worse, pair.target) == ("stylegan_A", "progan_A", 45.0)
    fast, slow = pair.reaches["stylegan_A"], pair.reaches["progan_A"]
    # the time and the images where each first reached FID 45: kimg and seconds are not interchangeable here
    assert (fast.kimg, fast.seconds) == (400, 8000) and (slow.kimg, slow.seconds) == (1000, 40000)
    assert fast.seed_kimg == [400, 400, 400] and slow.seed_kimg == [800, 1000, None]  # seed 2's best is 46
    assert pair.sentence == (
        "stylegan_A reached progan_A's best FID (45.00) at 2.2 h (400 kimg); progan_A at 11.1 h (1000 kimg): "
        "stylegan_A 5× sooner in training time and 2.5× sooner in images. progan_A never reached "
        "stylegan_A's best (37.00) in the 1000 kimg (11.1 h) it trained."
    )
    assert pair.seed_notes == [
        "stylegan_A: 3 of 3 seeds reached it on their own curves, at 2.2 h",
        "progan_A: 2 of 3 seeds reached it on their own curves, at 8.9 h–11.1 h",
    ]


def test_seconds_come_from_log_csv_where_snapshots_lack_them_and_kimg_alone_without_either(tmp_path):
    runs, curves = ladder(tmp_path / "log", row_seconds=False)  # progan's rows without seconds: read off log.csv
    (pair,) = tq.build(runs, curves)["sets"][0]["pairs"]
    assert pair.reaches["progan_A"].seconds == pytest.approx(40000)
    assert "5× sooner in training time" in pair.sentence
    runs, curves = ladder(tmp_path / "none", row_seconds=False, log=False)  # progan: no time recorded at all
    view = tq.build(runs, curves)
    (pair,) = view["sets"][0]["pairs"]
    assert pair.reaches["progan_A"].seconds is None and view["sets"][0]["groups"][0].trained_kimg == 1000
    assert "progan_A at time not recorded (1000 kimg): stylegan_A 2.5× sooner in images." in pair.sentence
    assert "training time" not in pair.sentence  # no time factor without both times
    page = report.render_html("T", [], [], [], [], time_view=view)
    assert "time not recorded" in page and page.count('<img src="data:image/png') == 1


def test_only_comparable_groups_are_paired_and_runs_without_snapshots_are_named(tmp_path):
    runs, curves = ladder(tmp_path)
    other = {**IDENTITY, "reference_sha256": "cd34"}  # e.g. dcgan_A at 64 px: another reference file
    curves["dcgan_A_s0"] = comparison.read_curves(write_run(tmp_path, "dcgan_A_s0", PROGAN[0], 5.0, identity=other))
    curves["wgangp_A_s0"] = comparison.read_curves(tmp_path / "missing")  # no metrics.jsonl, no log.csv
    runs += [
        {"run": "dcgan_A_s0", "group": "dcgan_A", "family": "dcgan", "dataset": "A", "resolution": 64},
        {"run": "wgangp_A_s0", "group": "wgangp_A", "family": "wgan-gp", "dataset": "A", "resolution": 64},
    ]
    view = tq.build(runs, curves)
    assert [[g.group for g in s["groups"]] for s in view["sets"]] == [["progan_A", "stylegan_A"], ["dcgan_A"]]
    assert view["sets"][1]["pairs"] == [] and view["without_snapshots"] == ["wgangp_A_s0"]
    page = report.render_html("T", [], [], [], [], time_view=view)
    section = page.split("<h2>Time to quality</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<h3>A at 64 px: FID of 5000 generated images per snapshot</h3>" in section
    assert "Only dcgan_A is measured against this reference" in section
    assert "No metric snapshots for wgangp_A_s0" in section
    assert "stylegan_A reached progan_A&#39;s best FID (45.00) at 2.2 h (400 kimg)" in section
    row = '<tr><td class="t">progan_A</td><td class="t">progan</td><td>3 of 3</td><td>45.00 ± 1.00</td>'
    assert row in section and "<td>11.1 h, 1000 kimg</td><td>1000 kimg, 11.1 h</td>" in section


def test_a_group_curve_is_the_mean_over_the_kimg_every_seed_reached(tmp_path):
    seeds = [
        tq.run_curve("a_s0", comparison.read_curves(write_run(tmp_path, "a_s0", [9, 8, 7, 6, 5, 4], 1.0))),
        tq.run_curve("a_s1", comparison.read_curves(write_run(tmp_path, "a_s1", [9, 6, 5, 4, 3, 2], 3.0))),
    ]
    seeds[1].points = seeds[1].points[:3]  # a seed still training: snapshots up to 400 kimg
    g = tq.group_curve("a", {"family": "dcgan", "dataset": "A"}, seeds)
    assert [(p.kimg, p.value, p.seconds) for p in g.points] == [(0, 9, 0), (200, 7, 400), (400, 6, 800)]
    assert g.best.kimg == 400 and g.best.std == pytest.approx(2**0.5)  # values 7 and 5
    assert tq.group_curve("b", {}, [tq.RunCurve("b_s0", None, (), [])]) is None


def test_single_group_report_summary_and_cli(tmp_path):
    res = tmp_path / "results" / "runs"
    folder = write_run(res, "stylegan_B_s0", STYLEGAN[0], 20.0)
    metrics = folder / "metrics.json"
    pack = "results/datasets/B/pack_128.npy"
    scores = Scores(
        fd=37.0, kid_mean=0.01, kid_std=0.001, kid_subsets=100, kid_subset_size=1000, n_fake=5000, n_real=9000
    )
    real = Side("results/evaluation/reference_B_128.npz", pack, [128, 128], "ab12", dataset="B")
    ref = MetricResult(kind="run", feature_space="inception", is_fid=True, scores=scores, real=real, seed=0)
    weights = Weights("weights.pth", "sha256-of-weights", "identity", "test")
    run = dataclasses.replace(ref, fake=Side(str(folder / "generator.pt")), weights=weights, references={"shared": ref})
    metrics.write_text(json.dumps(run.to_json()))
    train = TrainSummary(family="stylegan", resolution=128, data=pack, out=str(folder), kimg_target=1000.0,
                         images_seen=1_000_000, images_this_run=1_000_000, step=1, resumed=False, lr=1e-3,
                         betas=(0.0, 0.99), n_critic=1, device="cuda", amp="off", diffaug=False, seconds_total=20000.0,
                         seconds_this_run=20000.0, img_per_s=50.0, n_params_g=1, n_params_d=1, loss_g=None,
                         loss_d=None, penalty=None, dataset="B")  # fmt: skip
    (folder / "train_summary.json").write_text(json.dumps(train.to_json()))
    out = tmp_path / "rep"
    assert report.main(["--run-metrics", str(metrics), "--groups", "stylegan_B_s0=stylegan_B", "--out", str(out)]) == 0
    summary = json.loads((out / "report_summary.json").read_text())["time_to_quality"]
    (group,) = summary["sets"][0]["groups"]
    assert group["group"] == "stylegan_B" and group["best"] == {
        "kimg": 1000,
        "value": 37,
        "seconds": 20000,
        "std": None,
    }
    assert group["identity"] == IDENTITY and summary["sets"][0]["pairs"] == []
    page = (out / "index.html").read_text()
    assert re.search(r"<h3>B at 128 px: FID of 5000 generated images per snapshot</h3>", page)
    assert "Only stylegan_B is measured against this reference" in page


def test_durations():
    assert [tq.duration(s) for s in (None, 48, 150, 7200, 40000)] == [
        "time not recorded",
        "48 s",
        "2.5 min",
        "2.0 h",
        "11.1 h",
    ]


def test_log_rows_without_a_time_are_passed_over():
    curves = {
        "metrics": [{"kimg": 0, "fid": 9.0}, {"kimg": 20, "fid": 5.0}, {"kimg": 30, "fid": 4.0}],
        "losses": [{"kimg": "10", "seconds": ""}, {"kimg": "20", "seconds": "50"}],
    }
    curve = tq.run_curve("r", curves)
    # kimg 30 is past log.csv's last row: its time is unknown, not extrapolated; the run trained at least that far
    assert [(p.kimg, p.seconds) for p in curve.points] == [(0, 0.0), (20, 50.0), (30, None)]
    assert (curve.trained_kimg, curve.trained_seconds) == (30, None)
