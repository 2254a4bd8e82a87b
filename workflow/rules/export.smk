# Stage 5b: publish a cleaned dataset as results/export/<dataset>/ in the Hugging Face imagefolder layout: train/ (the
# kept images, as scraped or at export.resolution) with metadata.jsonl (post, source, URL, tags, rating, md5 and every
# cleaning classifier's score) and the dataset card README.md; with export.zip also results/export/<dataset>.zip.
# Not part of `all`: `snakemake --cores 2 export` publishes export.datasets; any dataset by its path.
for _name in config["export"]["datasets"]:
    if _name not in config["datasets"]:
        raise WorkflowError(
            f"ganime config error: config key export.datasets: {_name!r} is not a dataset; "
            f"the datasets are {', '.join(config['datasets'])}"
        )


localrules:
    export,


rule export_dataset:
    input:
        code=code("export"),
        manifest="results/datasets/{dataset}/manifest.parquet",
        summary="results/datasets/{dataset}/summary.json",
        posts=lambda wildcards: posts_of(get_dataset(wildcards.dataset)["source"]),
        # every cleaning classifier, not only the dataset's filters: the metadata carries all their scores
        scores=lambda wildcards: [
            scores_of(task, get_dataset(wildcards.dataset)["source"]) for task in config["classifiers"]
        ],
        metrics=expand("results/classifiers/{task}/metrics.json", task=list(config["classifiers"])),
    output:
        folder=directory("results/export/{dataset}"),
        **({"archive": "results/export/{dataset}.zip"} if config["export"]["zip"] else {}),
    params:
        scores=lambda wildcards, input: [f"{t}={p}" for t, p in zip(config["classifiers"], input.scores)],
        metrics=lambda wildcards, input: [f"{t}={p}" for t, p in zip(config["classifiers"], input.metrics)],
        # the card's query and site: the scrape settings of the dataset's source (flags left out where unset)
        card=lambda wildcards: (
            lambda spec: " ".join(
                f"--{flag} {shlex.quote(str(value))}"
                for flag, value in [("query", spec["tags"]), ("kind", spec["kind"]), ("site", spec["base_url"] or spec["path"])]
                if value
            )
        )(SOURCES[get_dataset(wildcards.dataset)["source"]]),
        resolution=(
            f"--resolution {config['export']['resolution']}" if config["export"]["resolution"] is not None else ""
        ),
        zip="--zip" if config["export"]["zip"] else "",
    wildcard_constraints:
        dataset="|".join(config["datasets"]),
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/export/{dataset}.log",
    shell:
        "python -m ganime_steps.export"
        " --dataset {wildcards.dataset}"
        " --manifest {input.manifest:q}"
        " --summary {input.summary:q}"
        " --posts {input.posts:q}"
        " --scores {params.scores:q}"
        " --metrics {params.metrics:q}"
        " {params.card}"
        " {params.resolution}"
        " {params.zip}"
        " --out {output.folder:q}"
        " 2> {log:q}"


rule export:
    input:
        expand("results/export/{dataset}", dataset=config["export"]["datasets"]),
        expand("results/export/{dataset}.zip", dataset=config["export"]["datasets"] if config["export"]["zip"] else []),
