# Stage 7a: Fréchet distance (FID with Inception weights, else a labelled classifier feature space),
# KID and precision/recall of each run against one shared, cached reference.


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
    threads: 2
    resources:
        mem_mb=8000,
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/evaluate/reference_{dataset}_{res}.log",
    shell:
        "OMP_NUM_THREADS={threads} python -m ganime_steps.evaluate reference"
        " --data {input.data:q}"
        " --n {params.n}"
        " --seed {params.seed}"
        " --batch-size {params.batch_size}"
        " {params.features}"
        " --out {output:q}"
        " 2> {log:q}"


rule evaluate:
    input:
        unpack(lambda wildcards: get_feature_inputs()),
        code=code("evaluate"),
        generator="results/runs/{run}/generator.pt",
        reference=lambda wildcards: get_reference(wildcards.run),
    output:
        "results/runs/{run}/metrics.json",
    params:
        n=config["evaluation"]["n_samples"],
        seed=config["evaluation"]["seed"],
        batch_size=config["evaluation"]["batch_size"],
        features=lambda wildcards, input: feature_flags(input),
    threads: 2
    resources:
        mem_mb=8000,
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/evaluate/{run}.log",
    shell:
        "OMP_NUM_THREADS={threads} python -m ganime_steps.evaluate run"
        " --generator {input.generator:q}"
        " --reference {input.reference:q}"
        " --n {params.n}"
        " --seed {params.seed}"
        " --batch-size {params.batch_size}"
        " {params.features}"
        " --out {output:q}"
        " 2> {log:q}"
