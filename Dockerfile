# The style studio as a container serving one trained generator (CPU).
#   docker build --build-arg RUN=stylegan_B_s0 -t ganime-studio:stylegan_B_s0 .
#   docker run --rm -p 127.0.0.1:8000:8000 ganime-studio:stylegan_B_s0       # then open http://127.0.0.1:8000/
# RUN names a folder results/runs/<RUN>/ holding generator.pt (and optionally directions.npz). To serve another
# generator without rebuilding, mount it over /model: docker run -v "$PWD/results/runs/stylegan_A_s0:/model:ro" ...
FROM python:3.11-slim

ARG RUN
# CPU wheels of torch/torchvision (the versions pinned in constraints.txt; the CUDA build is ~4 GB bigger)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY ganime_steps ./ganime_steps
RUN test -n "$RUN" || { echo "build with --build-arg RUN=<run> (a folder under results/runs/)"; exit 1; } \
    && pip install --extra-index-url "$TORCH_INDEX" -c constraints.txt . \
    && useradd --system --uid 10001 studio

COPY results/runs/${RUN}/ /model/
RUN test -f /model/generator.pt || { echo "results/runs/$RUN/generator.pt is missing: train the run first"; exit 1; }

USER studio
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health')"
# 0.0.0.0 inside the container; publish the port on 127.0.0.1 (as above) unless you mean to expose it.
ENTRYPOINT ["python", "-m", "ganime_steps.studio", "--generator", "/model/generator.pt", "--host", "0.0.0.0", "--port", "8000"]
