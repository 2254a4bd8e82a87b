"""The workflow: lint, dry runs of both configs, a tiny end-to-end run, and the Model B property."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, STYLEGAN_RUN, planned_jobs, snakemake, tiny_config, with_face_study


def settings_of(command: str) -> dict:
    """The settings a train or scrape job's command passes (--settings, one JSON object)."""
    argv = shlex.split(command.split(" 2> ")[0])
    return json.loads(argv[argv.index("--settings") + 1])


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


@pytest.mark.parametrize("configfile", ["config.yaml", "configs/demo.yaml"])
def test_dry_run_plans_every_stage(configfile, tmp_path):
    (tmp_path / "labels").mkdir()
    for task in ("chibi", "multi", "aesthetic"):  # the real config reads the user's own hand labels
        (tmp_path / "labels" / f"{task}.csv").write_text("post_id,label\n")
    result = snakemake("-n", "--configfile", str(REPO / configfile), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result)
    for rule in (
        "scrape",
        "labels",
        "classifier_train",
        "classifier_score",
        "clean_filter",
        "clean_pack",
        "train",
        "evaluate_reference",
        "evaluate",
        "gold",
        "data_fid",
        "fetch_inception",
        "report",
    ):
        assert jobs.get(rule, 0) >= 1, (rule, jobs)
    config = yaml.safe_load((REPO / configfile).read_text())
    n_jobs = sum(len(run.get("seeds") or [None]) for run in config["runs"].values())
    # config.yaml: one study, families x datasets x seeds runs named <family>_<dataset>_s<seed>; the demo has none
    matrix = config.get("matrix") or {"families": [], "datasets": [], "seeds": []}
    n_jobs += len(matrix["families"]) * len(matrix["datasets"]) * len(matrix["seeds"])
    assert jobs["train"] == n_jobs, "every configured run, matrix cell and seed is planned (no family is missing)"
    for family in matrix["families"]:
        for dataset in matrix["datasets"]:
            for seed in matrix["seeds"]:
                assert f"results/runs/{family}_{dataset}_s{seed}/metrics.json" in result.stdout
    if configfile == "config.yaml":  # the main source and the second one, each its own jobs
        assert jobs["scrape"] == 2 and jobs["faces"] == 2 and matrix["families"]
    if configfile == "configs/demo.yaml":  # the seeds of dcgan_A are jobs of their own
        assert "results/runs/dcgan_A_s2/metrics.json" in result.stdout and jobs["gold_queue"] == 1
    assert "is not available" not in result.stderr
    if configfile == "config.yaml":  # faces.cascade: null is the vendored cascade: nothing to download
        assert "fetch_cascade" not in jobs
        assert f"{REPO}/resources/lbpcascade_animeface.xml" in result.stdout


def _placeholder_labels(folder):
    (folder / "labels").mkdir(exist_ok=True)
    for task in ("chibi", "multi", "aesthetic"):  # the real config reads the user's own hand labels
        (folder / "labels" / f"{task}.csv").write_text("post_id,label\n")


def test_face_study_plans_its_safebooru_side_and_getchu_only_when_brought(tmp_path):
    """config.yaml plans the face study's own Safebooru scrape and its runs (350 epochs), and nothing that needs a
    folder the user lacks; the Getchu side is an extra config file that stops a dry run in one line until the crawl is
    in place, then plans it."""
    _placeholder_labels(tmp_path)
    result = snakemake("-n", "-p", "--configfile", str(REPO / "config.yaml"), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    scrapes = [line for line in result.stdout.splitlines() if "-m ganime_steps.scrape " in line]
    faces_scrape = next(settings_of(line) for line in scrapes if settings_of(line)["name"] == "safebooru_faces")
    assert faces_scrape["kind"] == "dapi" and faces_scrape["tags"] == "1girl solo portrait"
    assert faces_scrape["base_url"] == "https://safebooru.org" and faces_scrape["limit"] == 60000
    assert not any(settings_of(line)["kind"] == "folder" for line in scrapes), scrapes
    assert "--posts results/scrape/safebooru_faces/posts.parquet" in result.stdout
    jobs = re.split(r"\n(?:local)?rule ", result.stdout)
    assert all("booru=1" in job for job in jobs if job.startswith("scrape:")), "two Safebooru scrapes, one at a time"
    trains = [line for line in result.stdout.splitlines() if "-m ganime_steps.train" in line]
    face_runs = [settings_of(line) for line in trains if "--data results/datasets/faces/pack_64.npy" in line]
    assert len(face_runs) == 9 and all((s["epochs"], s["kimg"]) == (350, None) for s in face_runs)
    assert {s["family"] for s in face_runs} == {"dcgan", "dragan", "sngan"}
    assert sum(settings_of(line)["epochs"] is not None for line in trains) == len(face_runs)

    both = ("--configfile", str(REPO / "config.yaml"), str(REPO / "configs" / "face_study_getchu.yaml"))
    result = snakemake("-n", *both, "--directory", str(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    lines = [line for line in output.splitlines() if "ganime config error" in line]
    assert len(lines) == 1 and "config key sources.getchu.path: data/getchu does not exist; put" in lines[0], output
    assert "your Getchu crawl" in lines[0] and "Traceback" not in output and "Job stats" not in output

    (tmp_path / "data" / "getchu").mkdir(parents=True)  # the crawl in place: the Getchu side is planned
    result = snakemake("-n", "-p", *both, "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    scrapes = [settings_of(line) for line in result.stdout.splitlines() if "-m ganime_steps.scrape " in line]
    assert any((s["kind"], s["name"]) == ("folder", "getchu") for s in scrapes), scrapes
    assert "--out results/faces_getchu" in result.stdout
    for family in ("dcgan", "dragan", "sngan"):
        for seed in (0, 1, 2):
            assert f"--out results/runs/{family}_faces_getchu_s{seed}" in result.stdout, (family, seed)
    # once scraped, the crawl may go (its images are stored under results/scrape/getchu/): nothing is refused
    (tmp_path / "data" / "getchu").rmdir()
    for name in ("posts.parquet", "failures.parquet", "scrape_summary.json", "scrape_config.json"):
        (tmp_path / "results" / "scrape" / "getchu").mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / "scrape" / "getchu" / name).write_text("")
    result = snakemake("-n", "-p", *both, "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    scrapes = [settings_of(line) for line in result.stdout.splitlines() if "-m ganime_steps.scrape " in line]
    assert not any(s["name"] == "getchu" for s in scrapes) and "--out results/faces_getchu" in result.stdout


def test_config_yaml_plans_the_studys_ladder_and_model_b(tmp_path):
    """The study's ladder on A (dcgan, wgan-gp, progan grown from 4 px, stylegan; three seeds each) and stylegan on B,
    each with metric snapshots (the report's time to quality), progan and stylegan against one reference so their times
    compare; B drops the aesthetic classifier's positives at precision 0.4, read off the classifier's metrics.json."""
    (tmp_path / "labels").mkdir()
    for task in ("chibi", "multi", "aesthetic"):
        (tmp_path / "labels" / f"{task}.csv").write_text("post_id,label\n")
    result = snakemake("-n", "-p", "--configfile", str(REPO / "config.yaml"), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    train = {re.search(r"--out results/runs/(\S+)", c).group(1): c for c in lines if "-m ganime_steps.train" in c}
    for group, family, res in (
        ("dcgan_A", "dcgan", 64),
        ("wgangp_A", "wgan-gp", 64),
        ("progan_A", "progan", 128),
        ("stylegan_A", "stylegan", 128),
        ("stylegan_B", "stylegan", 128),
    ):
        for seed in (0, 1, 2):
            command = train[f"{group}_s{seed}"]
            settings = settings_of(command)
            assert (settings["family"], settings["resolution"], settings["seed"]) == (family, res, seed), command
            assert "--metric-samples 5000" in command, command
            assert f"--metric-reference results/evaluation/reference_A_{res}.npz" in command, command
    assert settings_of(train["progan_A_s0"])["start_resolution"] == 4
    clean = {re.search(r"--dataset (\S+)", c).group(1): c for c in lines if "-m ganime_steps.clean filter" in c}
    assert "--drop chibi=auto multi=auto --classifier-metrics  " in clean["A"]
    assert "--drop chibi=auto multi=auto aesthetic=precision:0.4" in clean["B"]
    assert "--classifier-metrics aesthetic=results/classifiers/aesthetic/metrics.json" in clean["B"]
    report = next(c for c in lines if "-m ganime_steps.report" in c)
    assert "--study-scraped 20000 --study-kept A=12000 B=5000" in report


def test_each_source_crops_faces_with_its_own_detector(tmp_path):
    config = with_face_study(yaml.safe_load((REPO / "configs" / "demo.yaml").read_text()))
    config["sources"]["tachie"]["face_detector"] = "lbpcascade"  # e.g. a folder of Getchu images
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(config))
    targets = ("results/faces/faces.parquet", "results/faces_tachie/faces.parquet")
    result = snakemake("-n", "-p", "--configfile", str(tmp_path / "two.yaml"), "--directory", str(tmp_path), *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines() if "ganime_steps.faces crop" in line]
    main, other = sorted(commands, key=lambda c: "faces_tachie" in c)
    assert "--detector annotations" in main and "--posts results/scrape/synthetic/posts.parquet" in main
    assert "--detector lbpcascade" in other and "--posts results/scrape/tachie/posts.parquet" in other
    assert "resources/lbpcascade_animeface.xml" in other and "--out results/faces_tachie" in other


def test_downloaded_cascade_is_an_option(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["faces"]["cascade"] = "resources/download/lbpcascade_animeface.xml"
    (tmp_path / "labels").mkdir()
    for task in ("chibi", "multi", "aesthetic"):
        (tmp_path / "labels" / f"{task}.csv").write_text("post_id,label\n")
    (tmp_path / "download.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(tmp_path / "download.yaml"), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert planned_jobs(result)["fetch_cascade"] == 1


def test_config_error_names_the_key(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["runs"]["dcgan_A"]["batch_size"] = 0
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(tmp_path / "bad.yaml"), "--directory", str(tmp_path))
    assert result.returncode != 0
    assert "config key runs.dcgan_A.batch_size" in result.stdout + result.stderr


@pytest.mark.slow
def test_end_to_end_then_model_b_reruns_only_b(tmp_path):
    config_path = tiny_config(tmp_path)
    work = tmp_path / "work"
    # tiny CPU jobs, mostly start-up: two torch jobs at a time (the profile's gpu=1 would run them one by one)
    result = snakemake(
        "--cores", "2", "--resources", "gpu=2", "--configfile", str(config_path), "--directory", str(work)
    )
    assert result.returncode == 0, result.stderr[-4000:]
    results = work / "results"
    posts = pd.read_parquet(results / "scrape" / "synthetic" / "posts.parquet")
    assert 40 <= len(posts) <= 60  # the query matches ~85 % of the 64 synthetic posts
    for task in ("chibi", "multi", "aesthetic"):
        metrics = json.loads((results / "classifiers" / task / "metrics.json").read_text())
        assert 0 <= metrics["threshold"] <= 1
    a = json.loads((results / "datasets" / "A" / "summary.json").read_text())
    b = json.loads((results / "datasets" / "B" / "summary.json").read_text())
    assert 0 < b["n_kept"] <= a["n_kept"] <= a["n_total"] == len(posts)
    drawn = pd.read_csv(results / "label_queue" / "gold" / "sample.csv")
    assert a["removed_by"]["gold sample"] == len(drawn) == 20  # the uniform gold draw is held out of training
    assert np.load(results / "datasets" / "A" / "pack_16.npy").shape[1:] == (16, 16, 3)
    for run in ("dcgan_A_s0", "dcgan_A_s1", "dcgan_B_s0", "dcgan_B_s1", "stylegan_A"):
        metrics = json.loads((results / "runs" / run / "metrics.json").read_text())
        assert metrics["is_fid"] is True and metrics["feature_space"] == "inception", run  # real FID by default
        assert set(metrics["references"]) == {"shared", "train", "gold"}
        assert metrics["references"]["gold"]["reference_data"].endswith("datasets/gold/pack_16.npy")
        snapshots = [json.loads(line) for line in (results / "runs" / run / "metrics.jsonl").read_text().splitlines()]
        assert [row["kimg"] for row in snapshots] == [0, 0.032, 0.064] and all(row["fid"] > 0 for row in snapshots)
        assert (results / "runs" / run / "generator_best.pt").is_file()
        assert (results / "runs" / run / "samples.png").stat().st_size > 0
    gold = json.loads((results / "datasets" / "gold" / "summary.json").read_text())
    assert 4 <= gold["n_kept"] < len(drawn) and gold["n_total"] == len(posts) and gold["basis"] == "synthetic truth"
    for dataset in ("A", "B"):
        data_fid = json.loads((results / "evaluation" / f"data_{dataset}_16.json").read_text())
        assert data_fid["is_fid"] is True and data_fid["fid"] > 0
    html = (results / "report" / "index.html").read_text()
    assert "dcgan_A_s1" in html and "data:image/png;base64," in html
    assert "Does stricter cleaning make a better GAN?" in html and "Data FID" in html and "best snapshot" in html
    assert (results / "runs" / "stylegan_A" / "directions.npz").is_file() and "Latent directions" in html
    summary = json.loads((results / "report" / "report_summary.json").read_text())
    groups = {g["group"]: g for g in summary["groups"]}
    assert groups["dcgan_A"]["n_seeds"] == 2 and groups["dcgan_A"]["references"]["gold"]["fd_std"] is not None
    dcgan = [v for v in summary["verdicts"] if v["family"] == "dcgan"]
    assert {(v["better_dataset"], v["worse_dataset"]) for v in dcgan} <= {("A", "B"), ("B", "A")}
    assert len(dcgan) == 3  # dcgan A vs B against the shared, own and gold references
    # The dataset study: a second source (its own scrape and faces), and the matrix's 2x2 table.
    tachie = pd.read_parquet(results / "scrape" / "tachie" / "posts.parquet")
    assert len(tachie) > 0 and set(tachie["source"]) == {"tachie"}
    tachie_faces = pd.read_parquet(results / "faces_tachie" / "faces.parquet")
    assert len(tachie_faces) > 0 and set(tachie_faces["source"]) == {"tachie"}
    assert set(tachie_faces["post_id"]) <= set(tachie["post_id"])
    (study,) = summary["studies"]
    assert (study["study"], study["reference"]) == ("study", "train")
    assert study["datasets"] == ["faces", "faces_tachie"] and study["families"] == ["dragan"]
    for dataset in study["datasets"]:
        for family in study["families"]:
            cell = study["cells"][dataset][family]
            assert cell["group"] == f"{family}_{dataset}" and cell["fd_mean"] > 0, cell
            assert cell["reference_dataset"] == dataset  # each run against its own training set
            run_metrics = results / "runs" / f"{cell['group']}_s0" / "metrics.json"
            shared = json.loads(run_metrics.read_text())["references"]["shared"]
            assert shared["reference_data"].endswith(f"datasets/{dataset}/pack_16.npy")  # faces, never posts A
    assert "Dataset study: study" in html

    # Model B: change only dataset B's filter settings; nothing upstream of cleaning may be planned.
    config = yaml.safe_load(config_path.read_text())
    config["datasets"]["B"]["drop"]["aesthetic"] = 0.9
    config_path.write_text(yaml.safe_dump(config))
    dry = snakemake("-n", "--configfile", str(config_path), "--directory", str(work))
    assert dry.returncode == 0, dry.stderr
    jobs = planned_jobs(dry)
    expected = {"clean_filter": 1, "clean_removed_grid": 3, "clean_pack": 1, "train": 2, "evaluate": 2,
                "evaluate_reference": 1, "data_fid": 1, "groundtruth": 1, "report": 1, "all": 1}  # fmt: skip
    assert jobs == expected, jobs
    outputs = [line for line in dry.stdout.splitlines() if line.strip().startswith("output:")]
    assert any("datasets/B/" in line for line in outputs)
    assert not any("datasets/A/" in line or "runs/dcgan_A" in line or "gold" in line for line in outputs), outputs

    # And the report renders through Snakemake's own report.
    rep = snakemake("--configfile", str(config_path), "--directory", str(work), "--report", "report.html")
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert (work / "report.html").stat().st_size > 10_000


def _dry_run(tmp_path, config, *targets):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    return snakemake("-n", "--configfile", str(tmp_path / "run.yaml"), "--directory", str(tmp_path), *targets)


# Through the real dry run: a check in the config module and one that imports timm lazily. Every other refusal is
# unit-tested in test_config.py (the same validate_config call the workflow makes), at a fraction of the time.
@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (lambda c: c["runs"]["wgangp_B"].update(family="wgangp"), "config key runs.wgangp_B.family: 'wgangp'"),
        (lambda c: c["classifiers"]["chibi"].update(arch="resnet_34"), "config key classifiers.chibi.arch"),
    ],
)
def test_dry_run_refuses_a_bad_config_in_one_line(edit, line, tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    edit(config)
    result = _dry_run(tmp_path, config)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    errors = [text for text in output.splitlines() if "ganime config error" in text]
    assert len(errors) == 1 and line in errors[0], output[-3000:]
    assert "Traceback" not in output


def test_dry_run_without_hand_labels_names_them_all_at_once(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    result = _dry_run(tmp_path, config)  # a first real run: no labels/ folder yet
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "MissingInputException" not in output, output[-3000:]
    # one line names every task's file (not one per attempt), each with the command that makes its first queue
    lines = [text for text in output.splitlines() if "hand-label file(s) missing" in text]
    assert len(lines) == 1, output[-3000:]
    found = re.findall(r"labels\.(\w+): labels/(\w+)\.csv does not exist", lines[0])
    assert sorted(task for task, _ in found) == ["aesthetic", "chibi", "multi"], lines[0]
    for task, name in found:
        assert task == name
        assert f"`snakemake --cores 1 results/label_queue/first/{task}.json`" in lines[0], task
        assert f"point labels.{task} at your file" in lines[0], task
    assert "snakemake --cores 1 first_label_queues" in lines[0]
    # a file that exists is not named: with chibi's labels in place, multi and aesthetic are still named together
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "chibi.csv").write_text("post_id,label\n1,1\n")
    result = _dry_run(tmp_path, config)
    line = next(text for text in (result.stdout + result.stderr).splitlines() if "hand-label file(s) missing" in text)
    assert sorted(re.findall(r"labels\.(\w+): labels/\w+\.csv does not exist", line)) == ["aesthetic", "multi"], line


def test_missing_hand_labels_do_not_block_targets_that_need_none(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    result = _dry_run(tmp_path, config, "results/faces/faces.parquet")  # scrape and faces: no labels needed
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = planned_jobs(result)
    assert jobs.get("scrape") == 1 and jobs.get("faces") == 1 and "labels" not in jobs, jobs
    # the first round's own target, first_label_queues, is run for real without labels in test_label_queue.py


def test_code_edits_rerun_the_stages_that_import_them(tmp_path):
    """Each job lists its stage's imports as inputs: editing sources/http.py reruns scrape, gan/loop.py train."""
    result = _dry_run(tmp_path, yaml.safe_load((REPO / "configs" / "demo.yaml").read_text()))
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = re.split(r"\n(?:local)?rule ", result.stdout)
    scrape = next(job.split("output:")[0] for job in jobs if job.startswith("scrape:"))
    train = next(job.split("output:")[0] for job in jobs if job.startswith("train:"))
    assert f"{REPO}/ganime_steps/sources/http.py" in scrape and f"{REPO}/ganime_steps/common.py" in scrape
    assert f"{REPO}/ganime_steps/gan/loop.py" not in scrape
    for module in ("gan/loop.py", "gan/losses.py", "common.py", "evaluate.py"):
        assert f"{REPO}/ganime_steps/{module}" in train, module


def test_run_setting_resume_other_code_reaches_the_train_command(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["runs"]["stylegan_A"] = dict(STYLEGAN_RUN)
    config["runs"]["dcgan_A"]["resume_other_code"] = True
    targets = ("results/runs/dcgan_A_s0/train_summary.json", "results/runs/stylegan_A/train_summary.json")
    result = _dry_run(tmp_path, config, "-p", *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines() if "-m ganime_steps.train" in line]
    dcgan, stylegan = sorted(commands, key=lambda c: "stylegan_A" in c)
    assert "--out results/runs/dcgan_A_s0" in dcgan and settings_of(dcgan)["resume_other_code"] is True
    assert "--out results/runs/stylegan_A" in stylegan and settings_of(stylegan)["resume_other_code"] is False


def test_readme_run_folders_are_runs_of_config_yaml():
    """Every results/runs/<run> the README names (the generate and studio commands, the Docker mount example) is a run
    config.yaml makes (a run with seeds is <run>_s<seed>), so the commands work as written after a real run."""
    from ganime_steps.config import FAMILY_NAMES, validate_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(config, families=FAMILY_NAMES)
    named = set(re.findall(r"results/runs/([A-Za-z0-9_]+)", (REPO / "README.md").read_text()))
    assert named, "the README names no run folder"
    assert named <= set(config["runs"]), sorted(named - set(config["runs"]))
