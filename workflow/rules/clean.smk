# Stage 5: named datasets (filters from config) and their packed training arrays.
# Each dataset's filter settings are params of its own job only: changing dataset B reruns B's branch alone.
# The audit: manifest.parquet and removed.csv name the filter and score that removed every post, and one
# removed_<filter>.png per filter shows a sample of what it removed.
from ganime_steps.clean import filter_from_slug, removed_grid_paths


rule clean_filter:
    input:
        unpack(lambda wildcards: {"code": code("clean"), "table": get_dataset_table(wildcards), **get_holdout(wildcards)}),
        scores=lambda wildcards: list(get_dataset_scores(wildcards).values()),
        operating_points=lambda wildcards: list(get_operating_point_metrics(wildcards).values()),
    output:
        manifest="results/datasets/{dataset}/manifest.parquet",
        summary="results/datasets/{dataset}/summary.json",
        removed=report(
            "results/datasets/{dataset}/removed.csv",
            caption="../report/removed.rst",
            category="Datasets",
            subcategory="{dataset}",
        ),
    params:
        table_flag=lambda wildcards: "--faces" if get_dataset(wildcards.dataset)["from"] == "faces" else "--posts",
        scores=lambda wildcards: [f"{t}={p}" for t, p in get_dataset_scores(wildcards).items()],
        drop=lambda wildcards: [f"{t}={v}" for t, v in get_dataset(wildcards.dataset)["drop"].items()],
        metrics=lambda wildcards: [f"{t}={p}" for t, p in get_operating_point_metrics(wildcards).items()],
        require=lambda wildcards: get_dataset(wildcards.dataset)["require_tags"],
        exclude=lambda wildcards: get_dataset(wildcards.dataset)["exclude_tags"],
        holdout=lambda wildcards, input: f"--holdout {input.holdout}" if "holdout" in input.keys() else "",
        out=lambda wildcards: f"results/datasets/{wildcards.dataset}",
    wildcard_constraints:
        # the gold sets come from rule gold ('/' follows the name in every path of this rule)
        dataset=rf"(?!(?:{'|'.join(GOLD_DATASETS.values())})/)[A-Za-z0-9_-]+",
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/clean/{dataset}_filter.log",
    shell:
        "python -m ganime_steps.clean filter"
        " --dataset {wildcards.dataset}"
        " {params.table_flag} {input.table:q}"
        " --scores {params.scores:q}"
        " --drop {params.drop:q}"
        " --classifier-metrics {params.metrics:q}"
        " --require-tags {params.require:q}"
        " --exclude-tags {params.exclude:q}"
        " {params.holdout}"
        " --out {params.out:q}"
        " 2> {log:q}"


rule clean_pack:
    input:
        code=code("clean"),
        manifest="results/datasets/{dataset}/manifest.parquet",
    output:
        pack="results/datasets/{dataset}/pack_{res}.npy",
        preview=report(
            "results/datasets/{dataset}/preview_{res}.png",
            caption="../report/dataset.rst",
            category="Datasets",
            subcategory="{dataset}",
        ),
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/clean/{dataset}_pack_{res}.log",
    # image decoding and resizing in worker processes; Snakemake caps threads at the cores it is given
    threads: 8
    shell:
        "python -m ganime_steps.clean pack"
        " --manifest {input.manifest:q}"
        " --resolution {wildcards.res}"
        " --workers {threads}"
        " --preview {output.preview:q}"
        " --out {output.pack:q}"
        " 2> {log:q}"


rule clean_removed_grid:
    input:
        code=code("clean"),
        manifest="results/datasets/{dataset}/manifest.parquet",
    output:
        report(
            "results/datasets/{dataset}/removed_{filter}.png",
            caption="../report/removed.rst",
            category="Datasets",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "removed by {filter}"},
        ),
    params:
        name=lambda wildcards: filter_from_slug(
            wildcards.dataset, get_dataset(wildcards.dataset), wildcards.filter
        ),
    wildcard_constraints:
        filter=r"[A-Za-z0-9_-]+",
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/clean/{dataset}_removed_{filter}.log",
    shell:
        "python -m ganime_steps.clean removed-grid"
        " --manifest {input.manifest:q}"
        " --filter {params.name:q}"
        " --out {output:q}"
        " 2> {log:q}"
