#!/usr/bin/env bash
# Build a local image that stands in for python:3.12-slim (the public image the rendered
# Kubernetes download step uses) where no registry is reachable: Debian bookworm's minimal
# base plus python3 and CA certificates, made by debootstrap and imported into Docker.
# The step's script needs only the standard library of any Python >= 3.9, so bookworm's 3.11
# runs it as python:3.12-slim would. Idempotent: does nothing when the image exists.
set -euo pipefail
IMAGE="${1:-provision-test/python-standin:bookworm}"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi
sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
if ! command -v debootstrap >/dev/null 2>&1; then
    $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends debootstrap
fi
root="$(mktemp -d /tmp/python-standin.XXXXXX)"
trap '$sudo rm -rf "$root"' EXIT
$sudo debootstrap --variant=minbase --include=python3-minimal,libpython3.11-stdlib,ca-certificates \
    bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
$sudo tar -C "$root" -c . | docker import --change 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "built $IMAGE"
