"""The studio's FastAPI app: the HTTP API over one :class:`~ganime_steps.studio.render.Renderer` and the static page.

Every image endpoint is a GET whose query string is the whole recipe, so a URL is a permalink and the same URL
always returns the same bytes. Bad input answers 4xx with a JSON ``detail``: 422 for a malformed or out-of-range
parameter, decidable without the generator (FastAPI's validation, and :class:`BadParameter` from parsing the list
parameters, with FastAPI's detail shape), 400 for a well-formed one this generator cannot use (unknown direction,
layers it lacks, mixing or noise on a family without style layers, too many pixels at its resolution), 429 with
``Retry-After`` when the renderer is saturated (one render at a time, a short queue).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ganime_steps.common import GanimeError, setup_logging
from ganime_steps.studio.render import (
    GIF_MS_RANGE,
    MAX_FRAMES,
    MAX_SEED,
    NOISE_RANGE,
    TRUNCATION_RANGE,
    BadParameter,
    Busy,
    Params,
    Renderer,
    layer_spec,
    parse_directions,
    parse_seed_list,
)

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
IMMUTABLE = {"Cache-Control": "public, max-age=86400"}  # a URL always renders the same bytes

Seed = Annotated[int, Query(ge=0, le=MAX_SEED, description="latent seed: the same seed always gives the same latent")]


def _in_range(bounds: tuple[float, float], description: str):
    """A finite float query parameter within ``bounds`` (inclusive)."""
    return Query(ge=bounds[0], le=bounds[1], allow_inf_nan=False, description=description)


def common_params(
    truncation: Annotated[
        float,
        _in_range(
            TRUNCATION_RANGE,
            "psi: 1 = off, smaller = closer to the mean latent (mean W for StyleGAN, z = 0 for DCGAN-style; no "
            "effect on ProGAN)",
        ),
    ] = 1.0,
    noise: Annotated[
        float,
        _in_range(NOISE_RANGE, "StyleGAN noise strength on noise_layers (0 = no stochastic detail, 1 = as trained)"),
    ] = 1.0,
    noise_seed: Annotated[
        int | None,
        Query(ge=0, le=MAX_SEED, description="StyleGAN: fresh noise maps from this seed (default: the fixed maps)"),
    ] = None,
    noise_layers: Annotated[
        str, Query(max_length=200, description="StyleGAN layers the noise strength applies to (others get 0)")
    ] = "all",
    mix_seed: Annotated[
        int | None, Query(ge=0, le=MAX_SEED, description="StyleGAN: take mix_layers' styles from this seed")
    ] = None,
    mix_layers: Annotated[
        str, Query(max_length=200, description="coarse (4-8 px), middle (16-32 px), fine (64 px+), all, or e.g. 0-3")
    ] = "coarse",
    directions: Annotated[
        str | None,
        Query(
            max_length=2000,
            description="latent directions as name:strength pairs, e.g. pc0:1.5,chibi:-2 (strength in standard "
            "deviations; names from /api/info)",
        ),
    ] = None,
) -> Params:
    layer_spec(noise_layers, "noise_layers")  # the syntax is checked here (422); the layers' range per generator (400)
    layer_spec(mix_layers, "mix_layers")
    return Params(
        truncation=truncation,
        noise=noise,
        noise_seed=noise_seed,
        noise_layers=noise_layers,
        mix_seed=mix_seed,
        mix_layers=mix_layers,
        directions=parse_directions(directions),
    )


Common = Annotated[Params, Depends(common_params)]


def create_app(renderer: Renderer) -> FastAPI:
    app = FastAPI(
        title="ganime style studio",
        description="Images from one trained generator: seeds, truncation, style mixing, noise, latent directions, "
        "interpolation and grids. Every image URL is deterministic.",
        version="1",
    )
    app.state.renderer = renderer

    @app.exception_handler(GanimeError)
    async def _bad_request(request: Request, exc: GanimeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(BadParameter)
    async def _unprocessable(request: Request, exc: BadParameter) -> JSONResponse:
        detail = [{"type": "value_error", "loc": ["query", exc.param], "msg": str(exc)}]  # FastAPI's 422 shape
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": "1"})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health", summary="liveness")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/info", summary="the generator, what its family supports, its directions and the limits")
    def info() -> dict[str, Any]:
        return renderer.info()

    @app.get(
        "/api/generate",
        summary="one image (PNG)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def generate(seed: Seed, p: Common) -> Response:
        return Response(renderer.image(seed, p), media_type="image/png", headers=IMMUTABLE)

    @app.get(
        "/api/grid",
        summary="a grid of seeds (PNG)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def grid(
        p: Common,
        seeds: Annotated[str, Query(max_length=2000, description="ranges and commas, e.g. 0-15 or 1,5,9")] = "0-15",
        cols: Annotated[int | None, Query(ge=1, le=64, description="columns (default about sqrt(n))")] = None,
    ) -> Response:
        return Response(renderer.grid(parse_seed_list(seeds), p, cols), media_type="image/png", headers=IMMUTABLE)

    @app.get(
        "/api/interpolate",
        summary="a walk from seed to seed2: a PNG strip or an animated GIF",
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/gif": {}}}},
    )
    def interpolate(
        seed: Seed,
        seed2: Seed,
        p: Common,
        frames: Annotated[int, Query(ge=2, le=MAX_FRAMES, description="images along the walk")] = 8,
        format: Annotated[str, Query(pattern="^(png|gif)$", description="png (strip) or gif (animation)")] = "png",
        ms: Annotated[int, Query(ge=GIF_MS_RANGE[0], le=GIF_MS_RANGE[1], description="GIF frame duration")] = 100,
    ) -> Response:
        data = renderer.interpolate(seed, seed2, frames, p, format, ms)
        return Response(data, media_type=f"image/{format}", headers=IMMUTABLE)

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ganime_steps.studio",
        description="Serve the style studio (web page at /, HTTP API under /api, OpenAPI docs at /docs) for one "
        "trained generator.",
    )
    p.add_argument("--generator", type=Path, required=True, help="results/runs/<run>/generator.pt")
    p.add_argument(
        "--directions",
        type=Path,
        default=None,
        help="directions.npz (default: the one beside the generator, else PCA computed at start-up)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            print("ganime error: --threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        renderer = Renderer(args.generator, args.directions, device=args.device)
    except GanimeError as exc:
        print(f"ganime error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    log.info("studio for %s on http://%s:%d/ (API docs at /docs)", args.generator, args.host, args.port)
    uvicorn.run(create_app(renderer), host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0
