#!/usr/bin/env bash
# Run a command (the test suite) with a Docker engine and the executor test image ready:
#
#   deploy/docker/with_docker.sh .venv/bin/pytest -q
#
# Installs docker.io + debootstrap when missing, starts dockerd when no engine answers, builds
# azr-executor:test (cached), runs the command with AZR_REQUIRE_DOCKER=1 (a missing engine then
# fails the docker tests instead of skipping them) and stops the engine afterwards only if this
# invocation started it. The command's exit status is preserved.
# DOCKER_TESTS=0 runs the command as is, with no engine (the docker tests then skip), unless
# AZR_REQUIRE_DOCKER=1 (.ci/run) asks for them: then it refuses, since the only checks of the
# container's isolation would silently vanish.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ "${DOCKER_TESTS:-1}" == "0" ]]; then
    if [[ "${AZR_REQUIRE_DOCKER:-0}" == "1" ]]; then
        echo "with_docker.sh: AZR_REQUIRE_DOCKER=1 requires the docker tests; DOCKER_TESTS=0 would skip them" >&2
        exit 2
    fi
    exec "$@"
fi

"$HERE/dockerd.sh" install
started_here=0
if ! docker info >/dev/null 2>&1; then
    "$HERE/dockerd.sh" start
    started_here=1
fi
stop_if_ours() {
    if ((started_here)); then
        "$HERE/dockerd.sh" stop || true
    fi
}
trap stop_if_ours EXIT

"$HERE/build_test_image.sh" >/dev/null
export AZR_REQUIRE_DOCKER=1
"$@"
