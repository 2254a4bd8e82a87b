# Stage 7a: FID (standard Inception weights; a labelled classifier feature space only as a fallback), KID and
# precision/recall of each run against three cached references: the shared one, its own training set and the gold
# set (posts known clean on every task). Data FID: every dataset against gold, with no GAN at all.
localrules:
    fetch_inception,
    gold_queue,


rule fetch_inception:
    input:
        code=code("inception"),
    output:
        INCEPTION,
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/evaluate/fetch_inception.log",
    shell:
        "python -m ganime_steps.inception convert --out {output:q} 2> {log:q}"


# The gold sample: evaluation.gold_queue.size posts drawn uniformly, queued for labelling on every task
# (results/label_queue/gold/<task>.json); gold is the drawn posts labelled clean on all of them.
rule gold_queue:
    input:
        code=code("label_queue"),
        posts=POSTS,
    output:
        sample=GOLD_SAMPLE,
        tasks=expand("results/label_queue/gold/{task}.json", task=config["classifiers"]),
    params:
        tasks=" ".join(config["classifiers"]) or "gold",
        n=config["evaluation"]["gold_queue"]["size"],
        seed=config["evaluation"]["gold_queue"]["seed"],
        url_prefix=config["evaluation"]["gold_queue"]["url_prefix"],
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/label_queue/gold.log",
    shell:
        "python -m ganime_steps.label_queue gold"
        " --posts {input.posts:q}"
        " --tasks {params.tasks}"
        " --n {params.n}"
        " --seed {params.seed}"
        " --url-prefix {params.url_prefix:q}"
        " --out results/label_queue/gold"
        " 2> {log:q}"


rule gold:
    input:
        unpack(get_gold_inputs),
        code=code("gold"),
    output:
        manifest="results/datasets/{gold}/manifest.parquet",
        summary="results/datasets/{gold}/summary.json",
    params:
        basis=lambda wildcards, input: (
            f"--truth {input.truth}"
            if "truth" in input.keys()
            else "--labels " + " ".join(f"{task}={input['labels_' + task]}" for task in config["classifiers"])
        ),
        faces=lambda wildcards, input: f"--faces {input.faces}" if "faces" in input.keys() else "",
    wildcard_constraints:
        gold="|".join(GOLD_DATASETS.values()),
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/evaluate/{gold}.log",
    shell:
        "python -m ganime_steps.gold"
        " --posts {input.posts:q}"
        " {params.basis}"
        " {params.faces}"
        " --sample {input.sample:q}"
        " --out results/datasets/{wildcards.gold}"
        " 2> {log:q}"


rule evaluate_reference:
    input:
        unpack(lambda wildcards: get_feature_inputs()),
        code=code("evaluate"),
        data="results/datasets/{dataset}/pack_{res}.npy",
    output:
        "results/evaluation/reference_{dataset}_{res}.npz",
    params:
        n=config["evaluation"]["n_samples"],
        seed=config["evaluation"]["seed"],
        batch_size=config["evaluation"]["batch_size"],
        features=lambda wildcards, input: feature_flags(input),
        device=config["device"],
    threads: 2
    resources:
        gpu=DEVICE_GPUS,  # Inception features on the config's device
        mem_mb=8000,
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/evaluate/reference_{dataset}_{res}.log",
    shell:
        "OMP_NUM_THREADS={threads} python -m ganime_steps.evaluate reference"
        " --data {input.data:q}"
        " --dataset {wildcards.dataset:q}"
        " --n {params.n}"
        " --seed {params.seed}"
        " --batch-size {params.batch_size}"
        " --device {params.device}"
        " {params.features}"
        " --out {output:q}"
        " 2> {log:q}"


rule data_fid:
    input:
        code=code("evaluate"),
        data="results/evaluation/reference_{dataset}_{res}.npz",
        gold=lambda wildcards: f"results/evaluation/reference_{gold_of(wildcards.dataset)}_{wildcards.res}.npz",
    output:
        "results/evaluation/data_{dataset}_{res}.json",
    params:
        seed=config["evaluation"]["seed"],
    threads: 1
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/evaluate/data_{dataset}_{res}.log",
    shell:
        "python -m ganime_steps.evaluate distance"
        " --device cpu"  # distances between cached features: cheap on the CPU, no GPU claimed
        " --a {input.data:q}"
        " --b {input.gold:q}"
        " --seed {params.seed}"
        " --out {output:q}"
        " 2> {log:q}"


rule evaluate:
    input:
        unpack(lambda wildcards: get_feature_inputs()),
        code=code("evaluate"),
        generator="results/runs/{run}/generator.pt",
        references=lambda wildcards: list(get_run_references(wildcards.run).values()),
    output:
        "results/runs/{run}/metrics.json",
    params:
        references=lambda wildcards: [f"{name}={path}" for name, path in get_run_references(wildcards.run).items()],
        n=config["evaluation"]["n_samples"],
        seed=config["evaluation"]["seed"],
        batch_size=config["evaluation"]["batch_size"],
        features=lambda wildcards, input: feature_flags(input),
        device=config["device"],
    threads: 2
    resources:
        gpu=DEVICE_GPUS,  # the generator and Inception features on the config's device
        mem_mb=8000,
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/evaluate/{run}.log",
    shell:
        "OMP_NUM_THREADS={threads} python -m ganime_steps.evaluate run"
        " --generator {input.generator:q}"
        " --reference {params.references:q}"
        " --n {params.n}"
        " --seed {params.seed}"
        " --batch-size {params.batch_size}"
        " --device {params.device}"
        " {params.features}"
        " --out {output:q}"
        " 2> {log:q}"
