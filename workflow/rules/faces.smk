# Stage 2: 64x64 face crops (OpenCV lbpcascade_animeface, or the source's own face boxes).
# faces.cascade: null uses the cascade vendored in this checkout (resources/lbpcascade_animeface.xml, MIT, license
# beside it). To use the canonical download instead (sha256-pinned, the same file), set faces.cascade to
# resources/download/lbpcascade_animeface.xml: rule fetch_cascade makes it.
localrules:
    fetch_cascade,


rule fetch_cascade:
    input:
        code=code("faces"),
    output:
        "resources/download/lbpcascade_animeface.xml",
    conda:
        "../../envs/vision.yaml"
    log:
        "logs/faces/fetch_cascade.log",
    shell:
        "python -m ganime_steps.faces fetch-cascade --out {output:q} 2> {log:q}"


# One job per source: the main source's crops in results/faces/ (as with one source), another's in
# results/faces_<source>/.
rule faces:
    input:
        code=code("faces"),
        posts=lambda wildcards: posts_of(source_of_suffix(wildcards.suffix)),
        cascade=get_cascade,
    output:
        faces="results/faces{suffix}/faces.parquet",
    params:
        detector=lambda wildcards: face_detector(source_of_suffix(wildcards.suffix)),
        size=config["faces"]["size"],
        margin=config["faces"]["margin"],
        min_size=config["faces"]["min_size"],
        cascade_flag=lambda wildcards, input: f"--cascade {input.cascade}" if input.cascade else "",
        out=lambda wildcards, output: Path(output.faces).parent,
    wildcard_constraints:
        suffix=SOURCE_SUFFIX,
    threads: 4
    conda:
        "../../envs/vision.yaml"
    log:
        "logs/faces/faces{suffix}.log",
    shell:
        "python -m ganime_steps.faces crop"
        " --posts {input.posts:q}"
        " --detector {params.detector}"
        " {params.cascade_flag}"
        " --size {params.size}"
        " --margin {params.margin}"
        " --min-size {params.min_size}"
        " --workers {threads}"
        " --out {params.out:q}"
        " 2> {log:q}"
