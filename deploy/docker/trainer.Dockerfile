# Trainer image for GPU clusters: Ray 2.60 + vLLM (CUDA build) + azr, for the head and the
# rollout/learner nodes (executor nodes run deploy/docker/executor.Dockerfile containers
# under their own Docker engine instead).
#
#   DOCKER_BUILDKIT=1 docker build -f deploy/docker/trainer.Dockerfile -t azr-trainer:latest .
#
# Build from the repository root; trainer.Dockerfile.dockerignore (BuildKit) keeps the local
# .venv, .scratch and runs out of the context. Use it as the node image of a Ray cluster
# (KubeRay `image:`, or `docker: {image: azr-trainer:latest}` in a launcher config) so every
# node runs identical Ray, torch, vLLM and azr versions; jobs then ship only their code
# (deploy/runtime_env.yaml).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11 (azr's required version) from the deadsnakes PPA; rsync/openssh for the Ray
# cluster launcher; git for editable installs and run provenance.
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential git rsync \
        openssh-client openssh-server curl ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

WORKDIR /opt/azr
# Dependencies first (a layer that survives code edits): the metadata plus empty packages is
# enough for pip to resolve and install everything azr[gpu] needs, including vLLM's CUDA
# build and the torch it pins.
COPY pyproject.toml README.md ./
RUN mkdir -p azr actors learner executor_pool buffer_service \
    && for p in azr actors learner executor_pool buffer_service; do touch "$p/__init__.py"; done \
    && pip install ".[gpu]" \
    && pip uninstall -y azr

# The code itself (no dependency resolution: the layer above pinned everything).
COPY azr ./azr
COPY actors ./actors
COPY learner ./learner
COPY executor_pool ./executor_pool
COPY buffer_service ./buffer_service
COPY configs ./configs
COPY deploy ./deploy
RUN pip install --no-deps . && azr version && python -c "import ray, vllm, torch; print(ray.__version__, vllm.__version__, torch.__version__)"

# Unprivileged runtime user; Ray's temp dir and the HF cache live in its home.
RUN useradd --create-home --uid 1000 --shell /bin/bash azr
USER azr
WORKDIR /home/azr
ENV HF_HOME=/home/azr/.cache/huggingface
# Dashboard, GCS, metrics export (scraped by Prometheus via Ray's service discovery).
EXPOSE 8265 6379 8080
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["bash"]
