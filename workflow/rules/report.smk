# Stage 7b: one self-contained HTML page comparing runs (also embedded in `snakemake --report`).
localrules:
    report,


rule report:
    input:
        code=code("report"),
        run_metrics=all_run_outputs("metrics.json"),
        sample_grids=all_run_outputs("samples.png"),
        train_summaries=all_run_outputs("train_summary.json"),
        classifier_metrics=expand("results/classifiers/{task}/metrics.json", task=config["classifiers"]),
        dataset_summaries=expand("results/datasets/{dataset}/summary.json", dataset=config["datasets"]),
    output:
        html=report("results/report/index.html", caption="../report/comparison.rst", category="Comparison"),
        table="results/report/metrics.csv",
    params:
        title=config["report"]["title"],
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/report/report.log",
    shell:
        "python -m ganime_steps.report"
        " --run-metrics {input.run_metrics:q}"
        " --classifier-metrics {input.classifier_metrics:q}"
        " --dataset-summaries {input.dataset_summaries:q}"
        " --sample-grids {input.sample_grids:q}"
        " --title {params.title:q}"
        " --out results/report"
        " 2> {log:q}"
