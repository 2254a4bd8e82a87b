# Stage 3: hand labels (CSV, Label Studio JSON / JSON-MIN / CSV exports, folders per class) -> validated label
# tables, one per task. A label folder lists its image files as inputs: adding or removing one reruns the task.
from ganime_steps.labels import label_file_args


rule labels:
    input:
        code=code("labels"),
        posts=POSTS,
        label_files=get_label_files,  # a missing label file: one line saying how to make it (common.smk)
    output:
        table="results/labels/{task}.parquet",
        counts="results/labels/{task}_counts.json",
    params:
        label_files=lambda wildcards: label_file_args(config["labels"][wildcards.task]),
    conda:
        "../../envs/scrape.yaml"
    log:
        "logs/labels/{task}.log",
    shell:
        "python -m ganime_steps.labels"
        " --posts {input.posts:q}"
        " --task {wildcards.task}"
        " --label-file {params.label_files:q}"
        " --out {output.table:q}"
        " 2> {log:q}"
