# Stage 1: list and download posts. Local rule: compute nodes are often offline.
# Resumable: results/scrape/<source>/listing.jsonl and store.jsonl survive a failed or killed job, so the
# rerun continues the listing and never downloads a verified image again.
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
        burst=config["scrape"]["burst"],
        workers=config["scrape"]["workers"],
        retries=config["scrape"]["retries"],
        backoff=config["scrape"]["backoff"],
        timeout=config["scrape"]["timeout"],
        max_pixels=config["scrape"]["max_pixels"],
        max_bytes=config["scrape"]["max_bytes"],
        base_url=f"--base-url {shlex.quote(config['scrape']['base_url'])}" if config["scrape"]["base_url"] else "",
        path=f"--path {shlex.quote(config['scrape']['path'])}" if config["scrape"]["path"] else "",
        # optional flags, each only when set: tag/rating/host lists and the names of credential variables
        optional=" ".join(
            f"--{key.replace('_', '-')} {shlex.quote(' '.join(value) if isinstance(value, list) else value)}"
            for key in ("blacklist", "ratings", "image_hosts", "user_env", "api_key_env")
            if (value := config["scrape"][key])
        ),
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
        " {params.path}"
        " --rate {params.rate}"
        " --burst {params.burst}"
        " --workers {params.workers}"
        " --retries {params.retries}"
        " --backoff {params.backoff}"
        " --timeout {params.timeout}"
        " --max-pixels {params.max_pixels}"
        " --max-bytes {params.max_bytes}"
        " {params.base_url}"
        " {params.optional}"
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
