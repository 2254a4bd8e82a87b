# Stage 2: 64x64 face crops (OpenCV lbpcascade_animeface, or the source's own face boxes).
localrules:
    fetch_cascade,


rule fetch_cascade:
    input:
        code=code("faces"),
    output:
        "resources/lbpcascade_animeface.xml",
    conda:
        "../../envs/vision.yaml"
    log:
        "logs/faces/fetch_cascade.log",
    shell:
        "python -m ganime_steps.faces fetch-cascade --out {output:q} 2> {log:q}"


rule faces:
    input:
        code=code("faces"),
        posts=POSTS,
        cascade=get_cascade(),
    output:
        faces=FACES,
    params:
        detector=config["faces"]["detector"],
        size=config["faces"]["size"],
        margin=config["faces"]["margin"],
        min_size=config["faces"]["min_size"],
        cascade_flag=lambda wildcards, input: f"--cascade {input.cascade}" if input.cascade else "",
    conda:
        "../../envs/vision.yaml"
    log:
        "logs/faces/faces.log",
    shell:
        "python -m ganime_steps.faces crop"
        " --posts {input.posts:q}"
        " --detector {params.detector}"
        " {params.cascade_flag}"
        " --size {params.size}"
        " --margin {params.margin}"
        " --min-size {params.min_size}"
        " --out results/faces"
        " 2> {log:q}"
