# Stage 6: one GPU job per run. The checkpoint is deliberately not an output: Snakemake deletes a job's
# outputs before rerunning it, and a requeued or interrupted run must resume from its newest checkpoint.


rule train:
    input:
        # metric snapshots over training (metrics.jsonl) use the run's shared reference and the FID weights
        unpack(lambda wildcards: get_feature_inputs() if config["evaluation"]["metric_samples"] else {}),
        metric_reference=lambda wildcards: get_reference(wildcards.run) if config["evaluation"]["metric_samples"] else [],
        # the modules training executes (gan/*, what they import; the checkpoint's code fingerprint covers the same)
        code=training_code(),
        metric_code=metric_code,
        feature_weights=feature_network_weights,
        data=lambda wildcards: "results/datasets/{dataset}/pack_{res}.npy".format(
            dataset=get_run(wildcards.run)["dataset"], res=get_run(wildcards.run)["resolution"]
        ),
    output:
        generator="results/runs/{run}/generator.pt",
        log_csv="results/runs/{run}/log.csv",
        summary="results/runs/{run}/train_summary.json",
        # the job's settings as the stage read them (`python -m ganime_steps.train --config` of it reruns the run)
        settings="results/runs/{run}/run_config.json",
        samples=report(
            "results/runs/{run}/samples.png",
            caption="../report/samples.rst",
            category="Samples",
            subcategory="{run}",
        ),
    params:
        # the run's settings, one JSON object (RunSettings; common.run_settings_json): every config key of the run
        # but those the workflow itself consumes (dataset, reference, device, gpus, resources, seeds, ...)
        settings=lambda wildcards: run_settings_json(wildcards.run),
        out=lambda wildcards: f"results/runs/{wildcards.run}",
        dataset=lambda wildcards: get_run(wildcards.run)["dataset"],  # its name, for the report
        # the run's device (schema: auto; runtime, not a setting); config.yaml's GPU runs say cuda, so a job
        # without a GPU fails loudly
        device=lambda wildcards: get_run(wildcards.run)["device"],
        # how fast it runs (runtime, not settings): TF32 matmuls on CUDA, torch.compile
        tf32=lambda wildcards: "on" if get_run(wildcards.run)["tf32"] else "off",
        compile=lambda wildcards: "--compile" if get_run(wildcards.run)["compile"] else "",
        feature_weights=lambda wildcards, input: (
            f"--feature-weights {input.feature_weights}" if input.feature_weights else ""
        ),
        metrics=lambda wildcards, input: (
            f"--metric-reference {input.metric_reference} {feature_flags(input)}"
            f" --metric-samples {config['evaluation']['metric_samples']}"
            f" --metric-seed {config['evaluation']['seed']}"
            if config["evaluation"]["metric_samples"]
            else ""
        ),
        # one run over N GPUs of a node (the run's `gpus`, schema: 1): torchrun starts N data-parallel ranks
        # (DDP: the global batch is split over them; rank 0 writes the files; resume works as with one GPU)
        launcher=lambda wildcards: (
            f"torchrun --standalone --nproc_per_node {n}"
            if (n := int(get_run(wildcards.run)["gpus"])) > 1
            else "python"
        ),
        # each rank's share of the job's cores (torchrun starts one process per GPU, each with this many threads)
        rank_threads=lambda wildcards, threads: max(1, threads // int(get_run(wildcards.run)["gpus"])),
    # cores per GPU (the run's cpus_per_gpu, schema: 2) times its GPUs: one rank feeds each GPU from its own cores
    # (a SLURM job's --cpus-per-task)
    threads: lambda wildcards: get_run(wildcards.run)["cpus_per_gpu"] * int(get_run(wildcards.run)["gpus"])
    resources:
        # a cpu run claims no GPU (auto keeps the claim: it uses the GPU where the job gets one)
        gpu=lambda wildcards: 0 if get_run(wildcards.run)["device"] == "cpu" else int(get_run(wildcards.run)["gpus"]),
        mem_mb=lambda wildcards: get_run(wildcards.run)["mem_mb"],
        # a resubmitted job (profile `retries`) resumes from its checkpoint and also asks for more time,
        # so a run that hit the queue's time limit finishes on the next attempt
        runtime=lambda wildcards, attempt: get_run(wildcards.run)["runtime"] * attempt,
    conda:
        "../../envs/torch.yaml"
    log:
        "logs/train/{run}.log",
    shell:
        "OMP_NUM_THREADS={params.rank_threads} {params.launcher} -m ganime_steps.train"
        " --data {input.data:q}"
        " --dataset {params.dataset:q}"
        " --settings {params.settings:q}"
        " --device {params.device}"
        " --tf32 {params.tf32}"
        " {params.compile}"
        " {params.feature_weights}"
        " {params.metrics}"
        " --out {params.out:q}"
        " 2> {log:q}"
