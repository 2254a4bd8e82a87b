# Stage 4: ResNet classifiers (timm) trained from the labels, then every post scored.


rule classifier_train:
    input:
        code=code("classifier"),
        posts=POSTS,
        labels="results/labels/{task}.parquet",
    output:
        model="results/classifiers/{task}/model.pt",
        metrics="results/classifiers/{task}/metrics.json",
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
        spec=lambda wildcards: config["classifiers"][wildcards.task],
        out=lambda wildcards: f"results/classifiers/{wildcards.task}",
    threads: 2
    resources:
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
        " --arch {params.spec[arch]:q}"
        " --image-size {params.spec[image_size]}"
        " --epochs {params.spec[epochs]}"
        " --batch-size {params.spec[batch_size]}"
        " --lr {params.spec[lr]}"
        " --pretrained {params.spec[pretrained]:q}"
        " --seed {params.spec[seed]}"
        " --val-fraction {params.spec[val_fraction]}"
        " --patience {params.spec[patience]}"
        " --threshold-rule {params.spec[threshold_rule]:q}"
        " --out {params.out:q}"
        " 2> {log:q}"


rule classifier_score:
    input:
        code=code("classifier"),
        posts=POSTS,
        model="results/classifiers/{task}/model.pt",
    output:
        "results/classifiers/{task}/scores.parquet",
    threads: 2
    resources:
        mem_mb=8000,
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/classifiers/{task}_score.log",
    shell:
        "OMP_NUM_THREADS={threads} python -m ganime_steps.classifier score"
        " --posts {input.posts:q}"
        " --model {input.model:q}"
        " --out {output:q}"
        " 2> {log:q}"
