# Stage 1: list and download posts, per source (config scrape, the main one, and each of sources). Local rule:
# compute nodes are often offline. Resumable: results/scrape/<source>/listing.jsonl and store.jsonl survive a failed or killed job, so the
# rerun continues the listing and never downloads a verified image again.
localrules:
    scrape,
    synthetic_labels,


rule scrape:
    input:
        code=code("scrape"),
    output:
        posts="results/scrape/{source}/posts.parquet",
        failures="results/scrape/{source}/failures.parquet",
        summary="results/scrape/{source}/scrape_summary.json",
        settings="results/scrape/{source}/scrape_config.json",  # the settings the stage ran with
    params:
        # every setting of config scrape / sources.<name>, one JSON object (common.smk scrape_settings_json)
        settings=lambda wildcards: scrape_settings_json(wildcards.source),
        out=lambda wildcards, output: Path(output.posts).parent,
    resources:
        # each job keeps its own rate limit, so two booru scrapes at once (config.yaml: the full-body and the face
        # Safebooru queries) would double the requests to one host: profiles give booru=1, one at a time
        booru=lambda wildcards: 1 if SOURCES[wildcards.source]["kind"] in HTTP_KINDS else 0,
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/scrape/{source}.log",
    shell:
        "python -m ganime_steps.scrape --settings {params.settings:q} --out {params.out:q} 2> {log:q}"


# The synthetic booru's ground truth and its simulated hand labels (demo only; named as synthetic).
rule synthetic_labels:
    input:
        code=code("sources.synthetic"),
        posts=POSTS,
    output:
        truth="results/synthetic/truth.parquet",
        csvs=expand(
            "results/synthetic/synthetic_hand_labels_{task}.csv", task=["chibi", "multi", "aesthetic"]
        ),
    params:
        name=MAIN_SOURCE,
        n_posts=config["scrape"]["synthetic"]["n_posts"],
        seed=config["scrape"]["synthetic"]["seed"],
        style=config["scrape"]["synthetic"]["style"],
        fraction=config["scrape"]["synthetic"]["label_fraction"],
        error_rate=config["scrape"]["synthetic"]["label_error_rate"],
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/scrape/synthetic_labels.log",
    shell:
        "python -m ganime_steps.sources.synthetic"
        " --n-posts {params.n_posts}"
        " --seed {params.seed}"
        " --style {params.style}"
        " --name {params.name:q}"
        " --label-fraction {params.fraction}"
        " --label-error-rate {params.error_rate}"
        " --posts {input.posts:q}"
        " --out results/synthetic"
        " 2> {log:q}"
