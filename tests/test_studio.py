"""Style studio: the HTTP API over a tiny StyleGAN trained here (determinism, each parameter's effect, error codes,
limits), the z-space families, the directions stage (PCA + a classifier boundary) and both CLIs."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_RUN, train_tiny, write_disc_dataset
from fastapi.testclient import TestClient
from PIL import Image

from ganime_steps.common import torch_save
from ganime_steps.gan.networks import NetConfig, build_networks, export_generator, recalibrate_batch_norm
from ganime_steps.studio import directions as directions_stage
from ganime_steps.studio import render
from ganime_steps.studio.app import create_app
from ganime_steps.studio.app import main as studio_main
from ganime_steps.studio.render import MAX_FRAMES, MAX_GRID, Directions, Renderer

torch.set_num_threads(2)
RES = TINY_RUN["resolution"]


def write_stylegan(folder: Path) -> Path:
    """A tiny StyleGAN trained for a few steps; its noise strengths raised "as if learned" (they start at 0 and a
    few steps leave them near 0), so the noise parameters visibly act."""
    data = write_disc_dataset(folder / "train_16.npy", RES)
    train_tiny(data, folder / "run", family="stylegan", checkpoint_every=0.032, start_resolution=RES)
    path = folder / "run" / "generator.pt"
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in obj["state_dict"]:
        if key.endswith("noise_strength"):
            obj["state_dict"][key] = torch.full_like(obj["state_dict"][key], 0.5)
    torch_save(path, obj)
    return path


def write_classifier(path: Path, task: str = "chibi") -> Path:
    """A model.pt as the classifier stage writes it: random resnet18 weights at 16 px (scores vary by image)."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save(
        path,
        {
            "arch": "resnet18",
            "image_size": RES,
            "state_dict": net.state_dict(),
            "threshold": 0.5,
            "task": task,
            "classes": ["no", "yes"],
        },
    )
    return path


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> Path:
    return write_stylegan(tmp_path_factory.mktemp("studio"))


@pytest.fixture(scope="module")
def client(gen: Path) -> TestClient:
    return TestClient(create_app(Renderer(gen, directions=None)))


def _png(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGB"))


def test_generate_is_deterministic_png(client: TestClient, gen: Path) -> None:
    a = client.get("/api/generate", params={"seed": 7, "truncation": 0.7})
    b = client.get("/api/generate", params={"seed": 7, "truncation": 0.7})
    assert _png(a).shape == (RES, RES, 3) and a.content == b.content
    # a fresh process-equivalent (new renderer, no cache) renders the same bytes
    fresh = TestClient(create_app(Renderer(gen))).get("/api/generate?seed=7&truncation=0.7")
    assert fresh.content == a.content


@pytest.mark.parametrize(
    "params",
    [
        {"seed": 8},
        {"truncation": 0.3},
        {"mix_seed": 99, "mix_layers": "coarse"},
        {"mix_seed": 99, "mix_layers": "middle"},
        {"noise": 0},
        {"noise": 3},
        {"noise_seed": 5},
        {"noise": 0, "noise_layers": "0-1", "noise_seed": 5},
        {"directions": "pc0:3"},
        {"directions": "pc1:-3,pc2:2"},
    ],
)
def test_each_parameter_changes_the_image(client: TestClient, params: dict) -> None:
    base = _png(client.get("/api/generate?seed=7"))
    assert not np.array_equal(_png(client.get("/api/generate", params={"seed": 7, **params})), base), params


def test_noise_zero_removes_stochastic_detail(client: TestClient) -> None:
    a = client.get("/api/generate?seed=3&noise=0&noise_seed=1").content
    b = client.get("/api/generate?seed=3&noise=0&noise_seed=2").content
    c = client.get("/api/generate?seed=3&noise=0").content
    assert a == b == c
    assert (
        client.get("/api/generate?seed=3&noise_seed=1").content
        != client.get("/api/generate?seed=3&noise_seed=2").content
    )
    # mixing every layer from the other seed gives that seed's image
    assert (
        client.get("/api/generate?seed=3&mix_seed=4&mix_layers=all").content
        == client.get("/api/generate?seed=4").content
    )


# 422: malformed or out of range, decidable from the request alone (the limits in /api/info, a list's syntax)
MALFORMED = [
    "/api/generate?seed=abc",
    "/api/generate?seed=1.5",
    "/api/generate?seed=-1",
    "/api/generate?seed=4294967296",
    "/api/generate",
    "/api/generate?seed=1&truncation=nan",
    "/api/generate?seed=1&truncation=inf",
    "/api/generate?seed=1&truncation=-inf",
    "/api/generate?seed=1&truncation=-0.5",
    "/api/generate?seed=1&truncation=9",
    "/api/generate?seed=1&noise=NaN",
    "/api/generate?seed=1&noise=Infinity",
    "/api/generate?seed=1&noise=-1",
    "/api/generate?seed=1&noise_seed=-2",
    "/api/generate?seed=1&mix_seed=x",
    "/api/generate?seed=1&mix_seed=2&mix_layers=bogus",
    "/api/generate?seed=1&mix_seed=2&mix_layers=3-1",
    "/api/generate?seed=1&noise_layers=0-x",
    "/api/generate?seed=1&directions=pc0:nan",
    "/api/generate?seed=1&directions=pc0:inf",
    "/api/generate?seed=1&directions=pc0:1e9",
    "/api/generate?seed=1&directions=pc0:abc",
    "/api/generate?seed=1&directions=pc0",
    "/api/generate?seed=1&directions=" + ",".join(["pc0:1"] * 17),
    f"/api/grid?seeds=0-{MAX_GRID}",
    "/api/grid?seeds=" + ",".join(["1"] * (MAX_GRID + 1)),
    "/api/grid?seeds=5-1",
    "/api/grid?seeds=a-b",
    "/api/grid?seeds=",
    "/api/grid?seeds=0-3&cols=0",
    "/api/grid?seeds=0-99999999999",
    "/api/grid?seeds=4294967296",
    f"/api/interpolate?seed=1&seed2=2&frames={MAX_FRAMES + 1}",
    "/api/interpolate?seed=1&seed2=2&frames=1",
    "/api/interpolate?seed=1&seed2=2&format=bmp",
    "/api/interpolate?seed=1&seed2=2&format=gif&ms=1",
    "/api/interpolate?seed=1",
]
# 400: well-formed, but this generator cannot use it (16 px, 6 style layers, PCA directions pc0..pc7)
UNUSABLE = [
    "/api/generate?seed=1&mix_seed=2&mix_layers=fine",  # 16 px: no fine layers
    "/api/generate?seed=1&mix_seed=2&mix_layers=0-99",
    "/api/generate?seed=1&noise_layers=7",
    "/api/generate?seed=1&directions=nope:1",
    "/api/generate?seed=1&directions=pc0:1,chibi:2",
    "/api/grid?seeds=0-3&directions=nope:1",
    "/api/interpolate?seed=1&seed2=2&directions=nope:1",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_or_out_of_range_is_422(client: TestClient, url: str) -> None:
    """README: 422 for malformed or out-of-range parameters, NaN and inf included; FastAPI's detail shape (a list
    naming the query parameter) whether FastAPI or the studio's own parsing refused it."""
    resp = client.get(url)
    assert resp.status_code == 422, (url, resp.status_code, resp.text)
    assert resp.headers["content-type"] == "application/json"
    detail = resp.json()["detail"]
    assert isinstance(detail, list) and detail and all(d["loc"][0] == "query" and d["msg"] for d in detail), detail


@pytest.mark.parametrize("url", UNUSABLE)
def test_unusable_for_this_generator_is_400(client: TestClient, url: str) -> None:
    """README: 400 for a well-formed parameter this generator cannot use, with a sentence saying why."""
    resp = client.get(url)
    assert resp.status_code == 400, (url, resp.status_code, resp.text)
    assert resp.headers["content-type"] == "application/json"
    assert isinstance(resp.json()["detail"], str) and resp.json()["detail"]


def test_pixel_cap_is_400(gen: Path, monkeypatch) -> None:
    """The pixel cap depends on the generator's resolution: 400 (shown at a lowered cap; at 16 px the real one,
    64 images of 256 px, is out of reach of the 64-image and 32-frame limits)."""
    c = TestClient(create_app(Renderer(gen)))
    monkeypatch.setattr(render, "MAX_PIXELS", 4 * RES * RES)
    assert c.get("/api/grid?seeds=0-3").status_code == 200
    for url in ("/api/grid?seeds=0-4", "/api/interpolate?seed=1&seed2=2&frames=5"):
        resp = c.get(url)
        assert resp.status_code == 400 and "pixels" in resp.json()["detail"], (url, resp.text)


def test_health(client: TestClient) -> None:
    resp = client.get("/api/health")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_grid_and_interpolation(client: TestClient) -> None:
    grid = _png(client.get("/api/grid?seeds=0-5&cols=3"))
    assert 2 * RES <= grid.shape[0] < 3 * RES and 3 * RES <= grid.shape[1] < 4 * RES
    strip = _png(client.get("/api/interpolate?seed=1&seed2=2&frames=6"))
    assert strip.shape == (RES, 6 * RES, 3)
    first = _png(client.get("/api/generate?seed=1"))
    last = _png(client.get("/api/generate?seed=2"))
    assert np.abs(strip[:, :RES].astype(int) - first).max() <= 1  # batched vs single: rounding at most
    assert np.abs(strip[:, -RES:].astype(int) - last).max() <= 1
    gif = client.get("/api/interpolate?seed=1&seed2=2&frames=5&format=gif&ms=80")
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
    assert Image.open(io.BytesIO(gif.content)).n_frames == 5


def test_info_docs_and_page(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert info["family"] == "stylegan" and info["latent_space"] == "w" and info["num_layers"] == 6
    assert info["supports"] == {"truncation": True, "mixing": True, "noise": True, "directions": True}
    assert [d["name"] for d in info["directions"]][:2] == ["pc0", "pc1"]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/generate", "/api/grid", "/api/interpolate", "/api/info"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and 'id="truncation"' in page.text and "http" not in page.text.split("<body>")[0]
    js = client.get("/static/studio.js")
    assert js.status_code == 200 and "/api/generate" in js.text


def test_saturated_renderer_answers_429(gen: Path) -> None:
    r = Renderer(gen, max_waiting=1, wait_s=0.05)
    c = TestClient(create_app(r))
    with r._lock:  # a render in progress
        resp = c.get("/api/generate?seed=123")
    assert resp.status_code == 429 and "retry" in resp.json()["detail"]
    assert int(resp.headers["Retry-After"]) >= 1  # RFC 9110: delay-seconds, a non-negative integer
    assert c.get("/api/generate?seed=123").status_code == 200
    # concurrent requests serialise behind the lock and all succeed
    c2 = TestClient(create_app(Renderer(gen, max_waiting=8, wait_s=30)))
    out: list[int] = []

    def fetch(s: int) -> None:
        out.append(c2.get(f"/api/generate?seed={1000 + s}").status_code)

    threads = [threading.Thread(target=fetch, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [200] * 4


def test_z_space_family(tmp_path: Path) -> None:
    """DCGAN-style generators edit z: truncation and directions act; mixing and noise are refused with a 400."""
    cfg = NetConfig(resolution=RES, z_dim=16, channels=8)
    torch.manual_seed(0)
    G, _ = build_networks(cfg)
    recalibrate_batch_norm(G, seed=0, n=64, batch_size=64)  # untrained BN statistics would flatten the images
    export_generator(tmp_path / "generator.pt", G.eval(), cfg)
    c = TestClient(create_app(Renderer(tmp_path / "generator.pt")))
    info = c.get("/api/info").json()
    assert info["latent_space"] == "z" and not info["supports"]["mixing"] and not info["supports"]["noise"]
    base = _png(c.get("/api/generate?seed=1"))
    assert not np.array_equal(base, _png(c.get("/api/generate?seed=1&truncation=0.5")))
    assert not np.array_equal(base, _png(c.get("/api/generate?seed=1&directions=pc0:3")))
    for q in ("mix_seed=2", "noise=0", "noise_seed=3", "noise_layers=coarse", "mix_seed=2&mix_layers=0-1"):
        resp = c.get("/api/generate?seed=1&" + q)
        assert resp.status_code == 400 and "drop" in resp.json()["detail"], q
    # malformed stays 422 on any family: the syntax is judged before what the generator supports
    for q in ("mix_seed=2&mix_layers=bogus", "noise=nan", "noise_layers=x-y"):
        assert c.get("/api/generate?seed=1&" + q).status_code == 422, q
    assert c.get("/api/interpolate?seed=1&seed2=2&frames=4").status_code == 200


def test_directions_stage_pca_and_classifier(gen: Path, tmp_path: Path) -> None:
    model = write_classifier(tmp_path / "chibi" / "model.pt")
    out, fig = tmp_path / "directions.npz", tmp_path / "directions.png"
    s = directions_stage.run_directions(
        generator=gen,
        out=out,
        figure=fig,
        classifiers={"chibi": model},
        n=256,
        n_components=4,
        device="cpu",
    )
    assert s.names == ["pc0", "pc1", "pc2", "pc3", "chibi"] and s.space == "w"
    assert 0.0 <= s.classifiers["chibi"]["val_accuracy"] <= 1.0
    assert s.classifiers["chibi"]["score_high_mean"] > s.classifiers["chibi"]["score_low_mean"]
    d = Directions.load(out)
    assert d.vectors.shape == (5, 16) and np.allclose(np.linalg.norm(d.vectors, axis=1), 1, atol=1e-4)
    assert np.all(d.scales > 0) and d.kinds[-1] == "classifier"
    ratio = s.explained_variance_ratio
    assert ratio == sorted(ratio, reverse=True)
    assert Image.open(fig).size[0] > 100
    # moving along the boundary normal raises the classifier's score on average
    G = Renderer(gen, directions=out)
    c = TestClient(create_app(G))
    assert [x["name"] for x in c.get("/api/info").json()["directions"]][-1] == "chibi"
    imgs = {
        sign: np.stack([_png(c.get(f"/api/generate?seed={k}&directions=chibi:{sign}3")) for k in range(8)])
        for sign in ("-", "+")
    }
    assert not np.array_equal(imgs["-"], imgs["+"])
    lo = directions_stage.score_images(model, imgs["-"], torch.device("cpu"), 8)[0].mean()
    hi = directions_stage.score_images(model, imgs["+"], torch.device("cpu"), 8)[0].mean()
    assert hi > lo


def _directions_cli(gen: Path, out: Path, *args: str) -> int:
    """The directions CLI on ``gen``, writing ``out`` (.npz) and its figure beside it (.png)."""
    figure = out.with_suffix(".png")
    return directions_stage.main(["--generator", str(gen), "--out", str(out), "--figure", str(figure), *args])


def test_directions_cli_and_errors(gen: Path, tmp_path: Path, capsys) -> None:
    rc = _directions_cli(gen, tmp_path / "d.npz", "--n", "64", "--components", "2", "--device", "cpu")
    assert rc == 0 and Directions.load(tmp_path / "d.npz").names == ["pc0", "pc1"]
    for classifier, error in [("chibi", "TASK=PATH"), (f"chibi={tmp_path / 'missing.pt'}", "file not found")]:
        rc = _directions_cli(gen, tmp_path / "x.npz", "--classifier", classifier)
        assert rc == 2 and error in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
    # the studio refuses directions of another latent size
    small = Directions("w", ["a"], ["a"], ["pca"], np.ones((1, 3), np.float32), np.ones(1, np.float32))
    small.save(tmp_path / "bad.npz")
    assert studio_main(["--generator", str(gen), "--directions", str(tmp_path / "bad.npz")]) == 2
    assert "do not fit" in capsys.readouterr().err


def test_studio_cli_errors(tmp_path: Path, capsys) -> None:
    assert studio_main(["--generator", str(tmp_path / "missing.pt")]) == 2
    assert "generator file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        studio_main(["--help"])
    assert exc.value.code == 0
    assert "127.0.0.1" in capsys.readouterr().out


# --- the real server: `python -m ganime_steps.studio` as a process, over HTTP -------------------------------------

STARTUP_DEADLINE_S = 300  # torch import + PCA at start-up: seconds on an idle machine, far more under CPU contention


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


class Server:
    """``python -m ganime_steps.studio`` in its own process on a free port, its output in a log file."""

    def __init__(self, gen: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ganime_steps.studio", "--generator", str(gen), "--port", str(self.port)],
                cwd=REPO,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def wait_healthy(self) -> None:
        """Poll /api/health until it answers; fail early if the process exits, late only past the deadline."""
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            rc = self.proc.poll()
            assert rc is None, f"the studio exited with {rc} before answering:\n{self.log.read_text()}"
            try:
                status, _, body = _http_get(self.url + "/api/health")
                if status == 200:
                    assert body == b'{"status":"ok"}', body
                    return
            except (ConnectionError, urllib.error.URLError, TimeoutError):
                pass  # not listening yet
            assert time.monotonic() < deadline, f"no /api/health in {STARTUP_DEADLINE_S} s:\n{self.log.read_text()}"
            time.sleep(0.2)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it hangs; the exit status after the SIGTERM, or None if it had to be killed."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def test_two_server_processes_serve_the_same_bytes(gen: Path, tmp_path: Path) -> None:
    """Two separate `python -m ganime_steps.studio` processes (PCA directions computed at each one's start-up, no
    shared cache) answer the same URLs with the same bytes over real HTTP, and the error codes hold there too."""
    urls = [
        "/api/generate?seed=7&truncation=0.7&directions=pc0:1.5",
        "/api/generate?seed=11&mix_seed=3&noise_seed=5&noise=2",
        "/api/grid?seeds=0-3&cols=2",
        "/api/interpolate?seed=1&seed2=2&frames=3&format=gif",
    ]
    servers = [Server(gen, tmp_path / f"server{i}.log") for i in range(2)]  # started together: one wait for both
    try:
        for server in servers:
            server.wait_healthy()
        bodies = []
        for server in servers:
            got = []
            for url in urls:
                status, ctype, body = _http_get(server.url + url)
                assert status == 200, (url, status, body[:300])
                assert ctype == ("image/gif" if "format=gif" in url else "image/png"), (url, ctype)
                got.append(body)
            bodies.append(got)
        assert np.asarray(Image.open(io.BytesIO(bodies[0][0])).convert("RGB")).shape == (RES, RES, 3)
        for url, a, b in zip(urls, *bodies, strict=True):
            assert a == b, f"{url}: the two processes returned different bytes"
        status, ctype, body = _http_get(servers[0].url + "/api/generate?seed=1&truncation=nan")
        assert status == 422 and ctype == "application/json", (status, body)
        status, ctype, body = _http_get(servers[0].url + "/api/generate?seed=1&directions=nope:1")
        assert status == 400 and ctype == "application/json", (status, body)
        for server in servers:  # uvicorn shuts down gracefully on SIGTERM, then re-raises it (exit status -15)
            assert server.stop() in (0, -signal.SIGTERM), server.log.read_text()
    finally:
        for server in servers:
            server.stop()
