#!/usr/bin/env bash
# Build the local executor test image without any registry:
#   debootstrap a minimal Debian with python3 -> add a non-root user and the fork-server
#   -> `docker import` as azr-executor:test.
#
# It is the registry-free equivalent of deploy/docker/executor.Dockerfile (same user, same
# paths, same entry point). Rebuilt only when its inputs (this script, forkserver.py,
# zygote.py, program_runner.py) change: the image carries their hash in the label `azr.inputs-hash`.
# The debootstrap rootfs tarball is cached in .scratch/docker/ keyed by the debootstrap
# parameters, so a rebuild after a fork-server edit takes seconds, not a Debian download.
#
#   deploy/docker/build_test_image.sh            # build if needed, print the image tag
#   AZR_EXECUTOR_IMAGE=name:tag deploy/docker/build_test_image.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPT="$ROOT/deploy/docker/build_test_image.sh"
FORKSERVER="$ROOT/executor_pool/forkserver.py"
# forkserver.py imports zygote.py, which imports program_runner.py, from its own directory:
# all three are shipped, side by side.
ZYGOTE="$ROOT/executor_pool/zygote.py"
RUNNER="$ROOT/executor_pool/program_runner.py"
IMAGE="${AZR_EXECUTOR_IMAGE:-azr-executor:test}"
CACHE_DIR="${AZR_DOCKER_CACHE:-$ROOT/.scratch/docker}"

# Debootstrap parameters: part of the rootfs cache key.
SUITE=bookworm
VARIANT=minbase
# python3 (not python3-minimal): programs and the fork-server need json, decimal, fractions...
INCLUDE=python3
MIRROR="${AZR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# Must match deploy/docker/executor.Dockerfile and executor_pool/docker_sandbox.py.
AZR_UID=10001
AZR_USER=azr

log() { echo "build_test_image: $*" >&2; }

for input in "$FORKSERVER" "$RUNNER"; do
    if [[ ! -f "$input" ]]; then
        log "missing $input"
        exit 1
    fi
done
if ! docker info >/dev/null 2>&1; then
    log "no Docker engine answers (deploy/docker/dockerd.sh start)"
    exit 1
fi

mkdir -p "$CACHE_DIR"
# Parallel test sessions share the cache: one builder at a time, the others reuse its image.
exec 9>"$CACHE_DIR/build.lock"
flock 9

inputs_hash="$(cat "$SCRIPT" "$FORKSERVER" "$ZYGOTE" "$RUNNER" | sha256sum | cut -c1-16)"
current="$(docker image inspect "$IMAGE" \
    --format '{{ index .Config.Labels "azr.inputs-hash" }}' 2>/dev/null || true)"
if [[ "$current" == "$inputs_hash" ]]; then
    log "$IMAGE is up to date (inputs $inputs_hash)"
    echo "$IMAGE"
    exit 0
fi

rootfs_key="$(echo "$SUITE $VARIANT $INCLUDE $MIRROR" | sha256sum | cut -c1-12)"
rootfs_tar="$CACHE_DIR/rootfs-$SUITE-$rootfs_key.tar"
if [[ ! -f "$rootfs_tar" ]]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "debootstrap is not installed (apt-get install -y debootstrap)"
        exit 1
    fi
    log "debootstrap $SUITE ($VARIANT, +$INCLUDE) from $MIRROR; about 40 s here"
    bootstrap_dir="$(mktemp -d "$CACHE_DIR/bootstrap.XXXXXX")"
    trap 'rm -rf "$bootstrap_dir"' EXIT
    started=$SECONDS
    debootstrap --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$bootstrap_dir" "$MIRROR" \
        >"$CACHE_DIR/debootstrap.log" 2>&1 || {
        log "debootstrap failed; see $CACHE_DIR/debootstrap.log"
        tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
        exit 1
    }
    log "debootstrap took $((SECONDS - started)) s"
    # The sandbox never needs package management, docs or caches: a smaller, quicker import.
    rm -rf "$bootstrap_dir"/var/cache/apt/* "$bootstrap_dir"/var/lib/apt/lists/* \
        "$bootstrap_dir"/usr/share/doc/* "$bootstrap_dir"/usr/share/man/* \
        "$bootstrap_dir"/usr/share/locale/* "$bootstrap_dir"/var/log/*
    tar --numeric-owner -C "$bootstrap_dir" -cf "$rootfs_tar.partial" .
    mv "$rootfs_tar.partial" "$rootfs_tar"
    rm -rf "$bootstrap_dir"
    trap - EXIT
fi

# The bare rootfs as an image too: the base that executor.Dockerfile builds on here (its
# python:3.11-slim base cannot be pulled), so the shipped Dockerfile is testable.
base_tag="azr-executor-base:$SUITE-$rootfs_key"
if ! docker image inspect "$base_tag" >/dev/null 2>&1; then
    docker import "$rootfs_tar" "$base_tag" >/dev/null
fi

stage="$(mktemp -d "$CACHE_DIR/stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
tar --numeric-owner -C "$stage" -xf "$rootfs_tar"
# Non-root user with no login shell and no writable home: the process inside owns nothing.
echo "$AZR_USER:x:$AZR_UID:$AZR_UID:azr executor:/nonexistent:/usr/sbin/nologin" >>"$stage/etc/passwd"
echo "$AZR_USER:x:$AZR_UID:" >>"$stage/etc/group"
install -d -m 0755 -o 0 -g 0 "$stage/opt/azr"
install -m 0644 -o 0 -g 0 "$FORKSERVER" "$stage/opt/azr/forkserver.py"
install -m 0644 -o 0 -g 0 "$ZYGOTE" "$stage/opt/azr/zygote.py"
install -m 0644 -o 0 -g 0 "$RUNNER" "$stage/opt/azr/program_runner.py"
# Byte-compile now: the root filesystem is read-only at run time.
chroot "$stage" python3 -m compileall -q /opt/azr >/dev/null

log "importing $IMAGE (inputs $inputs_hash)"
tar --numeric-owner -C "$stage" -c . | docker import \
    --change "LABEL azr.inputs-hash=$inputs_hash" \
    --change "LABEL azr.image=executor-test" \
    --change "LABEL azr.base=$base_tag" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV PYTHONDONTWRITEBYTECODE=1" \
    --change "USER $AZR_UID:$AZR_UID" \
    --change "WORKDIR /tmp" \
    --change 'CMD ["python3", "/opt/azr/forkserver.py"]' \
    - "$IMAGE" >/dev/null
rm -rf "$stage"
trap - EXIT

# Replaced builds are now untagged; drop those no container uses any more (a sandbox of a
# concurrent test session may still run on one: it is pruned by a later build).
docker image prune --force --filter "label=azr.image=executor-test" >/dev/null 2>&1 || true
log "built $IMAGE"
echo "$IMAGE"
