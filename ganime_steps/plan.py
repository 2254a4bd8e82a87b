"""What a config will cost before it runs: ``python -m ganime_steps.plan`` (config in, nothing run).

The config is merged and validated as the workflow does it (several ``--configfile`` are merged in order, as
Snakemake merges them), its runs expanded (matrix, seeds), and three tables printed:

- datasets: images per epoch of each dataset a run trains on. Measured where the workflow already made the dataset
  (``pack_<res>.npy``, else ``manifest.parquet``'s kept rows); otherwise estimated from what comes before it (the
  source's ``faces.parquet`` or ``posts.parquet``, a folder source's image files, else the scrape limit, with one face
  assumed per post), and the table says which;
- runs: the length in epochs and kimg (one configured, the other from the dataset's images) and the GPU hours of its
  training at the s/kimg that ``python -m benchmarks gpu`` measured for its family and resolution on that GPU
  (``benchmarks/results/gpu.json``), else "not measured". Training only: evaluation is not counted;
- disk: the stored images of each source, its face crops and the training packs, per image from sizes measured on
  disk where they exist, else an assumption (``--image-mb``) or a bound, each named in the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import yaml

from ganime_steps.common import GanimeError, read_parquet, run_cli, write_json
from ganime_steps.config import FAMILY_NAMES, PROGRESSIVE_START, all_sources, validate_config
from ganime_steps.sources.folder import DEFAULT_MAX_BYTES, IMAGE_SUFFIXES, _Reader

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BENCH = REPO / "benchmarks" / "results" / "gpu.json"  # where `python -m benchmarks gpu` writes its summary
NPY_HEADER = 128  # bytes before the pixels of a packed .npy (numpy's format 1.0 header, padded to 64)
FACES_PER_POST = 1  # before any crop exists: one face per post assumed (the tables say so)


@dataclass
class Count:
    """A number of images and how it is known."""

    n: int
    how: str
    measured: bool = False


@dataclass
class RunPlan:
    run: str
    family: str
    dataset: str
    resolution: int
    length: str  # as configured: "350 epochs" or "10000 kimg"
    images_per_epoch: int
    epochs: float
    kimg: float
    s_per_kimg: float | None
    gpu_hours: float | None
    timing: str  # the benchmark row the hours come from, or why there are none


@dataclass
class DiskItem:
    what: str
    images: int
    bytes_per_image: float
    how: str

    @property
    def total(self) -> float:
        return self.images * self.bytes_per_image


@dataclass
class Plan:
    configs: list[str]
    gpu: str | None
    bench: str
    datasets: dict[str, Count] = field(default_factory=dict)
    runs: list[RunPlan] = field(default_factory=list)
    disk: list[DiskItem] = field(default_factory=list)


# --- the config ---------------------------------------------------------------------------------------------------


def shown(path: Path) -> str:
    """A path as a person would type it here: relative to the working directory when under it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base`` as Snakemake merges config files: nested mappings key by key, anything else replaced."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def load_config(paths: list[Path]) -> dict:
    config: dict = {}
    for path in paths:
        if not Path(path).is_file():
            raise GanimeError(f"--configfile {path}: not found")
        merge(config, yaml.safe_load(Path(path).read_text()) or {})
    validate_config(config, families=FAMILY_NAMES)
    return config


# --- counts: measured where the workflow made them, else estimated from what comes before ---------------------------


def suffix_of(source: str, main: str) -> str:
    """The workflow's path suffix of a source's faces and scores (common.smk): '' for the main source."""
    return "" if source == main else f"_{source}"


def folder_images(path: Path) -> list[int]:
    """Sizes of the image files a folder source would take (a folder, .zip or .tar), without reading them."""
    members = _Reader(path, DEFAULT_MAX_BYTES).members()
    return [
        size for name, size, refused in members if not refused and PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES
    ]


def posts_count(name: str, spec: dict, root: Path) -> Count:
    posts = root / "results" / "scrape" / name / "posts.parquet"
    if posts.exists():
        return Count(len(read_parquet(posts, ["md5"])), f"{posts.relative_to(root)} (measured)", True)
    limit = spec["limit"]
    if spec["kind"] == "folder":
        path = root / spec["path"]
        if not path.exists():
            return Count(limit, f"{name}'s limit {limit:,} ({spec['path']} is missing)")
        n = len(folder_images(path))
        return Count(min(n, limit), f"{n:,} images in {spec['path']}, limit {limit:,} (measured)", True)
    return Count(limit, f"{name}'s scrape limit {limit:,} (not scraped yet)")


def faces_count(name: str, spec: dict, root: Path, main: str) -> Count:
    faces = root / "results" / f"faces{suffix_of(name, main)}" / "faces.parquet"
    if faces.exists():
        return Count(len(read_parquet(faces, ["file"])), f"{faces.relative_to(root)} (measured)", True)
    posts = posts_count(name, spec, root)
    return Count(posts.n * FACES_PER_POST, f"1 face a post assumed x {posts.how}")


def dataset_count(name: str, config: dict, root: Path) -> Count:
    folder = root / "results" / "datasets" / name
    packs = sorted(folder.glob("pack_*.npy"))
    if packs:  # every resolution packs the same images
        return Count(len(np.load(packs[0], mmap_mode="r")), f"{packs[0].relative_to(root)} (measured)", True)
    manifest = folder / "manifest.parquet"
    if manifest.exists():
        kept = int(read_parquet(manifest, ["kept"])["kept"].astype(bool).sum())
        return Count(kept, f"kept rows of {manifest.relative_to(root)} (measured)", True)
    ds = config["datasets"][name]
    source, spec = ds["source"], all_sources(config)[ds["source"]]
    if ds["from"] == "faces":
        count = faces_count(source, spec, root, config["scrape"]["source"])
    else:
        count = posts_count(source, spec, root)
    # an estimate from before cleaning (and before the gold draw is held out): an upper bound
    return Count(count.n, f"at most: {count.how}")


# --- GPU hours from the device benchmark --------------------------------------------------------------------------


def load_bench(path: Path) -> list[dict]:
    """The rows of ``python -m benchmarks gpu``: its summary gpu.json, else the rows file gpu.jsonl beside it (kept
    when a run was killed before the summary)."""
    if path.is_file():
        data = json.loads(path.read_text())
        return data["rows"] if isinstance(data, dict) else list(data)
    rows_file = path.with_suffix(".jsonl")
    if rows_file.is_file():
        return [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    return []


def local_gpu() -> str | None:
    """This machine's first GPU by name (nvidia-smi), or None."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0].strip() if out.strip() else None


def measured_gpus(rows: list[dict]) -> list[str]:
    return sorted({r["device"] for r in rows if r.get("s_per_kimg") and r.get("device") not in (None, "cpu")})


def choose_gpu(rows: list[dict], wanted: str | None) -> str | None:
    """The GPU whose rows give the hours: the one named (``--gpu``, matched by substring), else this machine's, else
    the one the benchmark file measured. None when that GPU has no rows."""
    devices = measured_gpus(rows)
    wanted = wanted or local_gpu()
    if wanted is None:
        return devices[0] if len(devices) == 1 else None
    return next((d for d in devices if wanted.lower() in d.lower()), None)


def bench_rate(rows: list[dict], gpu: str, run: dict) -> tuple[float, str] | None:
    """(s/kimg, which row) of the run's family at its resolution on ``gpu``, channels_last and its compile setting; a
    progressive family's schedule-weighted total. The run's own batch and channels where measured. The first such
    row: the benchmark times every family with the default precision (amp auto, recorded as what it resolved to)
    before its precision variants, and a run trains with that default."""
    progressive = run["family"] in PROGRESSIVE_START
    found = [
        r
        for r in rows
        if r.get("device") == gpu
        and r.get("kind") == "train"
        and r.get("family") == run["family"]
        and r.get("resolution") == run["resolution"]
        and r.get("s_per_kimg")
        and not r.get("error")
        and r.get("channels_last", True)
        and bool(r.get("compile")) == bool(run.get("compile"))
        and (r.get("phase") == "total" if progressive else r.get("phase") != "total")
    ]
    if not found:
        return None
    same = [r for r in found if (r.get("batch"), r.get("channels")) == (run["batch_size"], run["channels"])]
    row = (same or found)[0]
    note = f"{row['family']} {row['resolution']} px, batch {row.get('batch')}, channels {row.get('channels')}"
    if not same:
        note += f" (the run: batch {run['batch_size']}, channels {run['channels']})"
    return float(row["s_per_kimg"]), note + (", schedule-weighted" if progressive else "")


def plan_run(name: str, run: dict, images: Count, rows: list[dict], gpu: str | None) -> RunPlan:
    n = images.n
    if run["epochs"] is not None:
        length, epochs, kimg = f"{run['epochs']:g} epochs", float(run["epochs"]), run["epochs"] * n / 1000
    else:
        length, kimg = f"{run['kimg']:g} kimg", float(run["kimg"])
        epochs = kimg * 1000 / n if n else float("nan")
    rate = bench_rate(rows, gpu, run) if gpu else None
    if rate is not None:
        timing = rate[1]
    else:
        timing = f"no {run['family']} {run['resolution']} px row" if gpu else "no benchmark for this GPU"
    return RunPlan(
        run=name,
        family=run["family"],
        dataset=run["dataset"],
        resolution=run["resolution"],
        length=length,
        images_per_epoch=n,
        epochs=epochs,
        kimg=kimg,
        s_per_kimg=rate[0] if rate else None,
        gpu_hours=kimg * rate[0] / 3600 if rate else None,
        timing=timing,
    )


# --- disk -----------------------------------------------------------------------------------------------------------


def mean_file_size(files: list[Path]) -> float | None:
    sizes = [p.stat().st_size for p in files if p.is_file()]
    return sum(sizes) / len(sizes) if sizes else None


def scrape_disk(name: str, spec: dict, root: Path, image_mb: float) -> DiskItem:
    count = posts_count(name, spec, root)
    folder = root / "results" / "scrape" / name
    posts = folder / "posts.parquet"
    if posts.exists():
        mean = mean_file_size([folder / f for f in read_parquet(posts, ["file"])["file"]])
        if mean is not None:
            return DiskItem(f"images {name}", count.n, mean, "mean of the stored files (measured)")
    if spec["kind"] == "folder" and (root / spec["path"]).exists():
        sizes = folder_images(root / spec["path"])
        if sizes:
            return DiskItem(
                f"images {name}", count.n, sum(sizes) / len(sizes), f"mean file in {spec['path']} (measured)"
            )
    return DiskItem(f"images {name}", count.n, image_mb * 1e6, f"assumed (--image-mb {image_mb:g}): nothing stored yet")


def faces_disk(name: str, spec: dict, root: Path, main: str, size: int) -> DiskItem:
    count = faces_count(name, spec, root, main)
    folder = root / "results" / f"faces{suffix_of(name, main)}"
    if (folder / "faces.parquet").exists():
        mean = mean_file_size([folder / f for f in read_parquet(folder / "faces.parquet", ["file"])["file"]])
        if mean is not None:
            return DiskItem(f"face crops {name}", count.n, mean, "mean of the crops (measured)")
    # a PNG holds at most its raw rows (a filter byte each) plus framing: stored zlib blocks, IDAT chunks, headers
    raw = size * (size * 3 + 1)
    bound = raw + raw // 500 + 128
    how = f"at most: a {size}x{size} PNG stored uncompressed" + ("" if count.measured else f"; {count.how}")
    return DiskItem(f"face crops {name}", count.n, bound, how)


def pack_disk(dataset: str, res: int, count: Count) -> DiskItem:
    # exact for n images: a uint8 (n, res, res, 3) array; the header counted per image
    per_image = res * res * 3 + NPY_HEADER / max(count.n, 1)
    return DiskItem(f"pack {dataset} {res} px", count.n, per_image, f"{res}x{res}x3 bytes per image, images as above")


# --- the plan -------------------------------------------------------------------------------------------------------


def make_plan(
    *,
    configfiles: list[Path],
    directory: Path = Path("."),
    bench: Path = DEFAULT_BENCH,
    gpu: str | None = None,
    image_mb: float = 1.0,
) -> Plan:
    """The plan of the merged ``configfiles`` with what exists under ``directory`` (the workflow's working
    directory: results/, and relative folder-source paths) measured. Reads only; runs nothing."""
    if not image_mb > 0:
        raise GanimeError(f"--image-mb {image_mb}: must be > 0")
    config = load_config(configfiles)
    root = Path(directory)
    rows = load_bench(Path(bench))
    chosen = choose_gpu(rows, gpu)
    plan = Plan(configs=[shown(p) for p in configfiles], gpu=chosen, bench=shown(bench))
    runs = config["runs"]
    used = list(dict.fromkeys(ds for run in runs.values() for ds in (run["dataset"], run["reference"])))
    plan.datasets = {name: dataset_count(name, config, root) for name in used}
    plan.runs = [plan_run(name, run, plan.datasets[run["dataset"]], rows, chosen) for name, run in runs.items()]
    sources, main = all_sources(config), config["scrape"]["source"]
    drawn = {config["datasets"][ds]["source"] for ds in used}
    face_sources = {config["datasets"][ds]["source"] for ds in used if config["datasets"][ds]["from"] == "faces"}
    if face_sources and config["evaluation"]["gold"]:
        face_sources.add(main)  # gold_faces: the faces of the main source's gold posts
    for name in sources:
        if name == main or name in drawn:
            plan.disk.append(scrape_disk(name, sources[name], root, image_mb))
    for name in sources:
        if name in face_sources:
            plan.disk.append(faces_disk(name, sources[name], root, main, config["faces"]["size"]))
    packs = dict.fromkeys((ds, run["resolution"]) for run in runs.values() for ds in (run["dataset"], run["reference"]))
    plan.disk += [pack_disk(ds, res, plan.datasets[ds]) for ds, res in packs]
    return plan


# --- printing -------------------------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, columns padded to their widest cell."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def gpu_line(plan: Plan) -> str:
    if plan.gpu:
        return (
            f"GPU hours: the training steps at the s/kimg that `python -m benchmarks gpu` measured on {plan.gpu} "
            f"({plan.bench}); metric snapshots and evaluation not counted"
        )
    measured = measured_gpus(load_bench(Path(plan.bench)))
    if measured:
        return f"GPU hours: not measured on this GPU ({plan.bench} has {', '.join(measured)}: --gpu NAME picks one)"
    return f"GPU hours: not measured (no {plan.bench}: run `python -m benchmarks gpu` on the GPU)"


def render(plan: Plan) -> str:
    """The plan as Markdown tables: datasets, runs (with the GPU hours where measured), disk."""
    out = [f"ganime plan of {' + '.join(plan.configs)} (nothing run)", "", "Datasets (images per epoch):", ""]
    out.append(table(["dataset", "images", "from"], [[n, f"{c.n:,}", c.how] for n, c in plan.datasets.items()]))
    out += ["", "Runs:", gpu_line(plan), ""]
    headers = ["run", "dataset", "px", "length", "images/epoch", "epochs", "kimg", "GPU h"]
    rows = [
        [r.run, r.dataset, str(r.resolution), r.length, f"{r.images_per_epoch:,}", f"{r.epochs:,.1f}", f"{r.kimg:,.0f}",
         "not measured" if r.gpu_hours is None else f"{r.gpu_hours:,.1f}"]
        for r in plan.runs
    ]  # fmt: skip
    if plan.gpu:  # which benchmark row timed each run
        headers.append("timed as")
        rows = [row + [r.timing] for row, r in zip(rows, plan.runs, strict=True)]
    out.append(table(headers, rows))
    hours = [r.gpu_hours for r in plan.runs if r.gpu_hours is not None]
    total = f"{len(plan.runs)} runs, {sum(r.kimg for r in plan.runs):,.0f} kimg in all; GPU hours of training: "
    if not hours:
        total += "not measured"
    elif len(hours) == len(plan.runs):
        total += f"{sum(hours):,.1f}"
    else:
        total += f"{sum(hours):,.1f} for the {len(hours)} runs measured, {len(plan.runs) - len(hours)} not measured"
    out += ["", total, "", "Disk:", ""]
    out.append(
        table(
            ["what", "images", "per image", "total", "per image from"],
            [[d.what, f"{d.images:,}", human_bytes(d.bytes_per_image), human_bytes(d.total), d.how] for d in plan.disk],
        )
    )
    total_disk = human_bytes(sum(d.total for d in plan.disk))
    out += ["", f"Disk in all: {total_disk} (run folders, references and logs not counted)"]
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.plan",
        description="What a config will cost before it runs: images per epoch, kimg and GPU hours per run, and the "
        "disk for the images, face crops and packs. Reads the config and what already exists; runs nothing.",
    )
    p.add_argument(
        "--configfile", type=Path, nargs="+", default=[REPO / "config.yaml"],
        help="config files, merged in order as Snakemake merges them (default: config.yaml)",
    )  # fmt: skip
    p.add_argument("--directory", type=Path, default=Path("."), help="the workflow's working directory (results/)")
    p.add_argument("--bench", type=Path, default=DEFAULT_BENCH, help="`python -m benchmarks gpu` results (gpu.json)")
    p.add_argument("--gpu", default=None, help="the GPU to estimate for, by name (default: this machine's, else the "
                   "one the benchmark measured)")  # fmt: skip
    p.add_argument("--image-mb", type=float, default=1.0, help="MB per image to assume where nothing is stored yet")
    p.add_argument("--json", type=Path, default=None, help="also write the plan as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    def _handle(args: argparse.Namespace) -> None:
        plan = make_plan(
            configfiles=args.configfile, directory=args.directory, bench=args.bench, gpu=args.gpu,
            image_mb=args.image_mb,
        )  # fmt: skip
        print(render(plan))
        if args.json:
            write_json(args.json, plan)

    return run_cli(build_parser(), _handle, argv)


if __name__ == "__main__":
    raise SystemExit(main())
