# Stage 3: hand labels (CSV) -> validated label tables, one per task.


rule labels:
    input:
        code=code("labels"),
        posts=POSTS,
        csvs=get_label_csvs,
    output:
        table="results/labels/{task}.parquet",
        counts="results/labels/{task}_counts.json",
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/labels/{task}.log",
    shell:
        "python -m ganime_steps.labels"
        " --posts {input.posts:q}"
        " --task {wildcards.task}"
        " --csv {input.csvs:q}"
        " --out {output.table:q}"
        " 2> {log:q}"
