#!/usr/bin/env sh
# Installs promtool (Debian's `prometheus` package) so `make test` can check and unit-test the
# alert rules. Idempotent: does nothing when promtool is already on PATH. Used locally and in CI.
set -eu

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-prometheus.sh: promtool is missing and apt-get is not available;" >&2
    echo "install Prometheus (promtool) with your package manager and re-run." >&2
    exit 1
fi

# sudo only when we are not already root (containers and CI runners often are root, without sudo).
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-prometheus.sh: not root and sudo is not available" >&2
        exit 1
    fi
fi

$SUDO apt-get update -qq
# The package's postinst would try to start a prometheus service; policy-rc.d-less containers
# simply have no init to start it, which apt tolerates.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

command -v promtool >/dev/null 2>&1 || {
    echo "install-prometheus.sh: prometheus installed but promtool not on PATH" >&2
    exit 1
}
promtool --version 2>&1 | head -n 1
