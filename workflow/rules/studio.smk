# Stage 7b: latent directions of each run for the style studio (python -m ganime_steps.studio) and the report:
# PCA of sampled latents (GANSpace) and one linear boundary per cleaning classifier (InterFaceGAN).


rule directions:
    input:
        code=code("studio.directions"),
        generator="results/runs/{run}/generator.pt",
        classifiers=expand("results/classifiers/{task}/model.pt", task=list(config["classifiers"])),
    output:
        npz="results/runs/{run}/directions.npz",
        figure="results/runs/{run}/directions.png",
    params:
        # one `--classifier TASK=PATH` per configured cleaning classifier (task names are schema-checked identifiers)
        classifiers=lambda wildcards, input: " ".join(
            f"--classifier {task}={path}" for task, path in zip(config["classifiers"], input.classifiers)
        ),
        seed=config["evaluation"]["seed"],
        n=config["evaluation"]["direction_samples"],
        device=config["device"],
    threads: 2
    resources:
        gpu=DEVICE_GPUS,
        mem_mb=8000,
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/studio/directions_{run}.log",
    shell:
        "OMP_NUM_THREADS={threads} python -m ganime_steps.studio.directions"
        " --generator {input.generator:q}"
        " {params.classifiers}"
        " --seed {params.seed}"
        " --n {params.n}"
        " --device {params.device}"
        " --out {output.npz:q}"
        " --figure {output.figure:q}"
        " 2> {log:q}"
