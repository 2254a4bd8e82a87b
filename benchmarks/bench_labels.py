"""Labelling efficiency: held-out F1 of each demo classifier task trained on 50 / 100 / 200 / all labels, from scratch
against fine-tuned from the offline ImageNet weights (mean ± std over 3 seeds).

Data: the demo's synthetic booru (``configs/demo.yaml``: seed 0, style booru), drawn into a temporary folder. Posts
1..700 (the demo's booru) form the label pool: simulated hand labels for 35 % of them (245 per task, 3 % flipped,
as ``synthetic_labels`` makes them for the demo). The held-out test set is posts 701..1000, labelled by the
synthetic truth: neither training, early stopping nor the threshold ever sees them. Per seed, n labels are drawn
from the pool (``all``: the whole pool); ``run_train`` splits them into train/val (val_fraction 0.2, no test split),
picks the epoch and the threshold on val, and the model is scored on the 300 test posts at that threshold.

Recipes (the demo's classifier settings, see ``configs/demo.yaml``):

- ``scratch``: ``tf_efficientnet_lite0`` at 96 px, 10 epochs, random init (``pretrained: none``), every weight at
  lr 1e-3;
- ``pretrained``: the same from the offline ImageNet weights (``pretrained: offline``), head at lr 1e-3, backbone at
  1e-4 (``backbone_lr_scale: 0.1``), inputs normalised to [-1, 1] as the weights expect;
- ``scratch_resnet34``: the previous demo setting (``resnet34`` at 64 px, 12 epochs, ``pretrained: none``), only when
  named in ``GANIME_BENCH_LABELS_RECIPES``.

``--quick``: one seed, 100 and all labels, chibi only. Environment: ``GANIME_BENCH_LABELS_TASKS`` (comma list),
``GANIME_BENCH_LABELS_SIZES`` (e.g. ``50,200``), ``GANIME_BENCH_LABELS_SEEDS`` (e.g. ``0,1``) and
``GANIME_BENCH_LABELS_RECIPES`` narrow a run; ``GANIME_BENCH_LABELS_LOG`` names a file that gets one JSON line per
trained model as it finishes (``table()`` of those lines is the printed table).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import append_jsonl, env_list

SEED = 0  # the demo booru's seed
POOL = 700  # the demo's n_posts: the posts a demo user could label
N_TEST = 300
LABEL_FRACTION, LABEL_ERROR = 0.35, 0.03  # the demo's synthetic hand labels
TASK_TRUTH = {"chibi": "chibi", "multi": "multiple", "aesthetic": "busy"}
SIZES = (50, 100, 200, "all")
SEEDS = (0, 1, 2)
DEMO = dict(  # ClassifierSettings fields: the demo's classifier settings (configs/demo.yaml)
    image_size=96, epochs=10, batch_size=32, lr=1e-3, val_fraction=0.2, patience=5
)
RECIPES = {
    "scratch": dict(arch="tf_efficientnet_lite0", pretrained="none"),
    "pretrained": dict(arch="tf_efficientnet_lite0", pretrained="offline", backbone_lr_scale=0.1),
    "scratch_resnet34": dict(arch="resnet34", pretrained="none", image_size=64, epochs=12),
}
DEFAULT_RECIPES = ("scratch", "pretrained")


def _size(v: str):
    return v if v == "all" else int(v)


def draw_booru(root: Path, n_posts: int) -> tuple[Path, dict[str, np.ndarray]]:
    """Posts 1..n_posts of the demo booru as PNGs + posts.parquet; the truth per task."""
    import pandas as pd

    from ganime_steps.sources.synthetic.render import encode_png, render_post

    rows, truth = [], {t: [] for t in TASK_TRUTH}
    for post_id in range(1, n_posts + 1):
        image, t = render_post(SEED, post_id)
        data = encode_png(image)
        md5 = hashlib.md5(data).hexdigest()
        rel = f"images/{md5[:2]}/{md5}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        rows.append({"source": "synthetic", "post_id": post_id, "md5": md5, "file": rel})
        for task, column in TASK_TRUTH.items():
            truth[task].append(int(getattr(t, column)))
    posts = root / "posts.parquet"
    pd.DataFrame(rows).to_parquet(posts, index=False)
    return posts, {t: np.array(v, dtype=np.int64) for t, v in truth.items()}


def hand_labels(root: Path, truth: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(post ids, labels) per task, as the demo's ``synthetic_labels`` simulates a person labelling its booru."""
    import pandas as pd

    from ganime_steps.sources.synthetic.labels import LABEL_FILES, write_hand_labels

    df = pd.DataFrame({"post_id": np.arange(1, POOL + 1)})
    for task, column in TASK_TRUTH.items():
        df[column] = truth[task][:POOL].astype(bool)
    write_hand_labels(df, root, fraction=LABEL_FRACTION, error_rate=LABEL_ERROR, seed=SEED)
    out = {}
    for task in TASK_TRUTH:
        lab = pd.read_csv(root / LABEL_FILES[task])
        out[task] = (lab["post_id"].to_numpy(np.int64), lab["label"].to_numpy(np.int64))
    return out


def _subset(ids: np.ndarray, labels: np.ndarray, n, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n == "all" or n >= len(ids):
        return ids, labels
    rng = np.random.default_rng([seed, 1000 + int(n)])
    for _ in range(100):  # at least 2 of each class, or run_train refuses
        pick = np.sort(rng.choice(len(ids), size=int(n), replace=False))
        if min(labels[pick].sum(), n - labels[pick].sum()) >= 2:
            return ids[pick], labels[pick]
    raise RuntimeError(f"cannot draw {n} labels with 2 of each class")


def test_f1(model_path: Path, images, labels: np.ndarray) -> dict:
    import torch

    from ganime_steps.classifier import binary_metrics, load_classifier, norm_stats
    from ganime_steps.classifier.model import predict_scores

    net, ckpt = load_classifier(model_path)
    mean, std = norm_stats(net)
    scores = predict_scores(net, images, torch.device("cpu"), mean, std, 64)
    return binary_metrics(scores, labels, float(ckpt["threshold"]))


def evaluate(root: Path, posts: Path, truth, *, tasks, sizes, seeds, recipes, test_images, log_to=None) -> list[dict]:
    """Train every (task, size, seed, recipe); ``recipes``: names of RECIPES, or a dict name -> ClassifierSettings
    fields (over DEMO's)."""
    import pandas as pd

    from ganime_steps.classifier import ClassifierSettings, run_train

    results = []
    pool = hand_labels(root, truth)
    # seed outermost: a run cut short still has whole seeds of every task and size
    for seed, task, n in itertools.product(seeds, tasks, sizes):
        ids, labels = pool[task]
        y_test = truth[task][POOL : POOL + N_TEST]
        sub_ids, sub_labels = _subset(ids, labels, n, seed)
        lab = root / f"labels_{task}_{n}_{seed}.parquet"
        md5 = pd.read_parquet(posts).set_index("post_id").loc[sub_ids, "md5"].to_numpy()
        pd.DataFrame({"source": "synthetic", "post_id": sub_ids, "md5": md5, "label": sub_labels}).to_parquet(
            lab, index=False
        )
        for recipe in recipes:
            kw = {**DEMO, **(recipes[recipe] if isinstance(recipes, dict) else RECIPES[recipe])}
            settings = ClassifierSettings(**kw, seed=seed, test_fraction=0.0)
            out = root / "runs" / f"{task}_{n}_{seed}_{recipe}"
            t0, c0 = time.perf_counter(), time.process_time()
            summary = run_train(settings, posts=posts, labels=lab, out=out, task=task, device="cpu")
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            m = test_f1(out / "model.pt", test_images(settings.image_size), y_test)
            results.append(
                {
                    "task": task,
                    "labels": len(sub_ids),
                    "size": n,
                    "seed": seed,
                    "recipe": recipe,
                    "f1": m["f1"],
                    "precision": m["precision"],
                    "recall": m["recall"],
                    "val_f1": summary.val_f1,
                    "epochs_run": summary.epochs_run,
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                }
            )
            if log_to is not None:
                append_jsonl(log_to, results[-1])
            logging.getLogger("benchmarks.labels").warning(
                "%s n=%s seed=%d %s: test F1 %.3f (val %.3f, %.0f s)",
                *(task, n, seed, recipe, m["f1"], summary.val_f1, seconds),
            )
    return results


def table(results: list[dict], recipes) -> list[dict]:
    """One row per task and label count: mean ± std test F1 (over seeds) per recipe."""
    rows = []
    keys = dict.fromkeys((r["task"], r["size"]) for r in results)
    for task, size in keys:
        group = [r for r in results if r["task"] == task and r["size"] == size]
        row = {"task": task, "labels": str(size if size != "all" else f"all ({group[0]['labels']})")}
        for recipe in recipes:
            f1 = np.array([r["f1"] for r in group if r["recipe"] == recipe])
            secs = np.array([r["seconds"] for r in group if r["recipe"] == recipe])
            if len(f1) > 1:
                row[f"{recipe} F1"] = f"{f1.mean():.3f} ± {f1.std(ddof=1):.3f} ({len(f1)} seeds)"
            elif len(f1):
                row[f"{recipe} F1"] = f"{f1[0]:.3f} (1 seed)"
            if len(f1):
                row[f"{recipe} s"] = round(float(secs.mean()), 1)
        rows.append(row)
    return rows


def run(quick: bool = False) -> list[dict]:
    import torch

    from ganime_steps import imaging

    for name in ("ganime", "ganime_steps"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(max(1, min(4, len(os.sched_getaffinity(0)))))
    tasks = env_list("GANIME_BENCH_LABELS_TASKS", ("chibi",) if quick else tuple(TASK_TRUTH))
    sizes = env_list("GANIME_BENCH_LABELS_SIZES", (100, "all") if quick else SIZES, _size)
    seeds = env_list("GANIME_BENCH_LABELS_SEEDS", (0,) if quick else SEEDS, int)
    recipes = env_list("GANIME_BENCH_LABELS_RECIPES", DEFAULT_RECIPES)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        posts, truth = draw_booru(root, POOL + N_TEST)
        import pandas as pd

        files = pd.read_parquet(posts)["file"].tolist()[POOL : POOL + N_TEST]
        cache: dict[int, object] = {}

        def test_images(size: int):
            if size not in cache:
                arrs = [imaging.square_resize(imaging.load_rgb(root / f), size) for f in files]
                cache[size] = torch.from_numpy(np.stack([np.asarray(a) for a in arrs])).permute(0, 3, 1, 2).contiguous()
            return cache[size]

        results = evaluate(
            root,
            posts,
            truth,
            tasks=tasks,
            sizes=sizes,
            seeds=seeds,
            recipes=recipes,
            test_images=test_images,
            log_to=os.environ.get("GANIME_BENCH_LABELS_LOG"),
        )
    return table(results, recipes)
