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
        samples=report(
            "results/runs/{run}/samples.png",
            caption="../report/samples.rst",
            category="Samples",
            subcategory="{run}",
        ),
    params:
        spec=lambda wildcards: get_run(wildcards.run),
        out=lambda wildcards: f"results/runs/{wildcards.run}",
        lr=lambda wildcards: "" if get_run(wildcards.run)["lr"] is None else f"--lr {get_run(wildcards.run)['lr']}",
        diffaug=lambda wildcards: "--diffaug" if get_run(wildcards.run)["diffaug"] else "",
        features=lambda wildcards, input: (
            f"--feature-resolution {get_run(wildcards.run)['feature_resolution']} --feature-weights {input.feature_weights}"
            if input.feature_weights
            else ""
        ),
        metrics=lambda wildcards, input: (
            f"--metric-reference {input.metric_reference} {feature_flags(input)}"
            f" --metric-samples {config['evaluation']['metric_samples']}"
            f" --metric-seed {config['evaluation']['seed']}"
            + (f" --metrics-every {every}" if (every := get_run(wildcards.run)["metrics_every"]) else "")
            if config["evaluation"]["metric_samples"]
            else ""
        ),
        # progressive families: --start-resolution/--stable-kimg/--fade-kimg where set (null: the family's
        # published defaults). --batch-schedule always: '' keeps the schema's meaning (batch_size at every
        # resolution), 'auto' the family's published table. --lr-schedule always: the run's lr_schedule (schema:
        # 'auto', StyleGAN's official table; from 128 px). The schema's patterns for both allow no quote or space.
        growth=lambda wildcards: " ".join(
            [
                f"--{key.replace('_', '-')} {get_run(wildcards.run)[key]}"
                for key in ("start_resolution", "stable_kimg", "fade_kimg")
                if get_run(wildcards.run)[key] is not None
            ]
            + [f"--batch-schedule '{get_run(wildcards.run)['batch_schedule']}'"]
            + [f"--lr-schedule '{get_run(wildcards.run)['lr_schedule']}'"]
        ),
        # null: the family's reference (the CLI's auto: SNGAN decays its lr to 0 at the run's kimg, the others not)
        lr_decay=lambda wildcards: f"--lr-decay-kimg {get_run(wildcards.run)['lr_decay_kimg'] or 'auto'}",
        compile=lambda wildcards: "--compile" if get_run(wildcards.run)["compile"] else "",
        # the run's device (schema: auto); config.yaml's GPU runs say cuda, so a job without a GPU fails loudly
        device=lambda wildcards: get_run(wildcards.run)["device"],
        tf32=lambda wildcards: "--tf32 on" if get_run(wildcards.run)["tf32"] else "--tf32 off",
        # the run length: kimg, or epochs that the job turns into kimg from its packed set's size (validate_config
        # leaves kimg null on an epochs run)
        length=lambda wildcards: (
            f"--epochs {epochs}" if (epochs := get_run(wildcards.run)["epochs"]) is not None
            else f"--kimg {get_run(wildcards.run)['kimg']}"
        ),
        resume_other_code=lambda wildcards: "--resume-other-code" if get_run(wildcards.run)["resume_other_code"] else "",
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
        " --device {params.device}"
        " --family {params.spec[family]:q}"
        " --resolution {params.spec[resolution]}"
        " {params.length}"
        " --batch-size {params.spec[batch_size]}"
        " {params.lr}"
        " --channels {params.spec[channels]}"
        " --z-dim {params.spec[z_dim]}"
        " --seed {params.spec[seed]}"
        " --ema-kimg {params.spec[ema_kimg]}"
        " --checkpoint-every {params.spec[checkpoint_every]}"
        " {params.diffaug}"
        " {params.features}"
        " {params.growth}"
        " {params.lr_decay}"
        " {params.compile}"
        " {params.tf32}"
        " {params.resume_other_code}"
        " {params.metrics}"
        " --out {params.out:q}"
        " 2> {log:q}"
