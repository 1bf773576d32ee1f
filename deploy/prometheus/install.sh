#!/usr/bin/env bash
# Installs a Prometheus server binary when none is on PATH (idempotent: a second run is a no-op).
# Used by tests/test_observability.py and CI; on Debian/Ubuntu it takes the distribution package.
# The package's own service is not started here: the test starts its own server on loopback.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
    echo "prometheus already installed: $(command -v prometheus)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "no prometheus on PATH and no apt-get: install Prometheus >= 2.40 by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# policy-rc.d exit 101 keeps the package's postinst from starting a system-wide server.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    CREATED_POLICY=1
fi
cleanup() {
    if [ "$CREATED_POLICY" = 1 ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    $SUDO apt-get update -q
fi
$SUDO apt-get install -y -q --no-install-recommends prometheus
# The package enables its own systemd unit, which would take port 9090 at the next boot
# before ray_cluster.yaml's server (or the tests') can: azr starts Prometheus itself.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
prometheus --version | head -1
