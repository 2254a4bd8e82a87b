# Stage 1: list and download posts. Local rule: compute nodes are often offline.
localrules:
    scrape,
    synthetic_labels,


rule scrape:
    input:
        code=code("scrape"),
    output:
        posts=POSTS,
        failures=f"{SCRAPE}/failures.parquet",
        summary=f"{SCRAPE}/scrape_summary.json",
    params:
        source=config["scrape"]["source"],
        kind=config["scrape"]["kind"],
        tags=config["scrape"]["tags"],
        limit=config["scrape"]["limit"],
        page_size=config["scrape"]["page_size"],
        rate=config["scrape"]["rate"],
        base_url=f"--base-url {shlex.quote(config['scrape']['base_url'])}" if config["scrape"]["base_url"] else "",
        n_posts=config["scrape"]["synthetic"]["n_posts"],
        seed=config["scrape"]["synthetic"]["seed"],
        out=lambda wildcards, output: Path(output.posts).parent,
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/scrape/scrape.log",
    shell:
        "python -m ganime_steps.scrape"
        " --kind {params.kind:q}"
        " --name {params.source:q}"
        " --tags {params.tags:q}"
        " --limit {params.limit}"
        " --page-size {params.page_size}"
        " --rate {params.rate}"
        " {params.base_url}"
        " --n-posts {params.n_posts}"
        " --seed {params.seed}"
        " --out {params.out:q}"
        " 2> {log:q}"


# The synthetic booru's ground truth and its simulated hand labels (demo only; named as synthetic).
rule synthetic_labels:
    input:
        code=code("synthetic"),
        posts=POSTS,
    output:
        truth="results/synthetic/truth.parquet",
        csvs=expand(
            "results/synthetic/synthetic_hand_labels_{task}.csv", task=["chibi", "multi", "aesthetic"]
        ),
    params:
        n_posts=config["scrape"]["synthetic"]["n_posts"],
        seed=config["scrape"]["synthetic"]["seed"],
        fraction=config["scrape"]["synthetic"]["label_fraction"],
        error_rate=config["scrape"]["synthetic"]["label_error_rate"],
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/scrape/synthetic_labels.log",
    shell:
        "python -m ganime_steps.synthetic"
        " --n-posts {params.n_posts}"
        " --seed {params.seed}"
        " --label-fraction {params.fraction}"
        " --label-error-rate {params.error_rate}"
        " --posts {input.posts:q}"
        " --out results/synthetic"
        " 2> {log:q}"
