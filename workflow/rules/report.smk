# Stage 7b: one self-contained HTML page comparing runs (also embedded in `snakemake --report`), and, on the
# synthetic source, each dataset filter checked against the generator's ground truth.
from ganime_steps.clean import removed_grid_paths

localrules:
    report,


rule groundtruth:
    input:
        code=code("groundtruth"),
        truth="results/synthetic/truth.parquet",
        manifests=lambda wildcards: [
            f"results/datasets/{name}/manifest.parquet"
            for name, spec in config["datasets"].items()
            if spec["from"] == "posts" and spec["source"] == MAIN_SOURCE
        ],
    output:
        summary="results/groundtruth/groundtruth.json",
        table=report("results/groundtruth/groundtruth.csv", caption="../report/groundtruth.rst", category="Ground truth"),
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/report/groundtruth.log",
    shell:
        "python -m ganime_steps.groundtruth"
        " --truth {input.truth:q}"
        " --manifests {input.manifests:q}"
        " --out results/groundtruth"
        " 2> {log:q}"


rule report:
    input:
        # the ground-truth check exists only for the synthetic source (it knows what every post shows)
        unpack(
            lambda wildcards: (
                {"groundtruth": "results/groundtruth/groundtruth.json"}
                if is_synthetic()
                and any(spec["from"] == "posts" and spec["source"] == MAIN_SOURCE for spec in config["datasets"].values())
                else {}
            )
        ),
        code=code("report"),
        # the page's Jinja2 templates and CSS: data files, so codedeps (imports only) does not list them
        templates=sorted(str(p) for p in (REPO / "ganime_steps" / "templates").rglob("*") if p.is_file()),
        run_metrics=all_run_outputs("metrics.json"),
        sample_grids=all_run_outputs("samples.png"),
        directions=[f"results/runs/{r}/directions.png" for r, spec in config["runs"].items() if spec["directions"]],
        train_summaries=all_run_outputs("train_summary.json"),
        classifier_metrics=expand("results/classifiers/{task}/metrics.json", task=config["classifiers"]),
        label_counts=expand("results/labels/{task}_counts.json", task=config["classifiers"]),
        label_queues=expand("results/label_queue/{task}.csv", task=config["classifiers"]),
        dataset_summaries=expand("results/datasets/{dataset}/summary.json", dataset=config["datasets"]),
        data_fid=data_fid_outputs(),
        removed_grids=[path for name, spec in config["datasets"].items() for path in removed_grid_paths(name, spec)],
    output:
        html=report("results/report/index.html", caption="../report/comparison.rst", category="Comparison"),
        table="results/report/metrics.csv",
    params:
        title=config["report"]["title"],
        gold_min=config["evaluation"]["gold_min"],
        # the published study's dataset sizes, shown beside each dataset's yield
        study_name=config["report"]["study"]["name"],
        study_scraped=lambda wildcards: f"--study-scraped {n}" if (n := config["report"]["study"]["scraped"]) else "",
        study_kept=[f"{name}={n}" for name, n in config["report"]["study"]["kept"].items()],
        groups=[f"{name}={run['group']}" for name, run in config["runs"].items()],
        studies=[f"{study}={spec['reference']}" for study, spec in config["matrix"].items()],
        study_groups=list(dict.fromkeys(f"{r['group']}={r['study']}" for r in config["runs"].values() if r["study"])),
        groundtruth=lambda wildcards, input: f"--groundtruth {input.groundtruth}" if "groundtruth" in input.keys() else "",
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/report/report.log",
    shell:
        "python -m ganime_steps.report"
        " --run-metrics {input.run_metrics:q}"
        " --classifier-metrics {input.classifier_metrics:q}"
        " --label-counts {input.label_counts:q}"
        " --label-queues {input.label_queues:q}"
        " --dataset-summaries {input.dataset_summaries:q}"
        " --removed-grids {input.removed_grids:q}"
        " {params.groundtruth}"
        " --sample-grids {input.sample_grids:q}"
        " --data-fid {input.data_fid:q}"
        " --directions {input.directions:q}"
        " --groups {params.groups:q}"
        " --studies {params.studies:q}"
        " --study-groups {params.study_groups:q}"
        " --gold-min {params.gold_min}"
        " --study-name {params.study_name:q}"
        " {params.study_scraped}"
        " --study-kept {params.study_kept:q}"
        " --title {params.title:q}"
        " --out results/report"
        " 2> {log:q}"
