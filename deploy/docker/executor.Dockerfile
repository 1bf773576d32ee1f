# Executor sandbox image for clusters (the docker backend of executor_pool).
#
#   tar -c deploy/docker/executor.Dockerfile executor_pool/forkserver.py \
#       executor_pool/zygote.py executor_pool/program_runner.py \
#     | docker build -f deploy/docker/executor.Dockerfile -t azr-executor:latest -
# (a four-file context: the repository root holds a multi-GB .venv; BuildKit users can also
# build from `.`, executor.Dockerfile.dockerignore keeps the context to the fork-server's three
# files).
# forkserver.py imports zygote.py, which imports program_runner.py, from its own directory:
# ship all three, side by side.
#
# One long-lived container per ExecutorActor runs the fork-server; the actor starts it with
# --network none --read-only --tmpfs /tmp --pids-limit --memory --cpus --cap-drop ALL
# --security-opt no-new-privileges (executor_pool/docker_sandbox.py), so the image itself
# only has to provide python3, the fork-server and a non-root user.
# deploy/docker/build_test_image.sh builds the registry-free equivalent used by the tests;
# keep the user, paths and entry point of the two in step.
# BASE_IMAGE: any Debian-like image with python3 3.11 (the host side and the programs'
# canonical reprs assume 3.11); overridable for registry-free builds.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Non-root user with no login shell and no home: the sandboxed programs own nothing.
RUN groupadd --gid 10001 azr \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin azr

COPY executor_pool/forkserver.py executor_pool/zygote.py executor_pool/program_runner.py /opt/azr/
# Byte-compile at build time: the root filesystem is read-only at run time.
RUN chmod 0644 /opt/azr/forkserver.py /opt/azr/zygote.py /opt/azr/program_runner.py \
    && python3 -m compileall -q /opt/azr

LABEL azr.image=executor
ENV PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp
CMD ["python3", "/opt/azr/forkserver.py"]
