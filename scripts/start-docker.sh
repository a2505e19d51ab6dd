#!/usr/bin/env bash
# Make a Docker engine answer on this machine; do nothing if one already does.
#
# Used by CI and by the test setup (tests/fakes/docker_env.py). Installs Debian's
# docker.io, iptables and debootstrap when missing, then starts dockerd with the storage
# driver it picks itself: overlay2 where the kernel and file system allow it, else vfs.
# vfs copies the whole image per container: for the 2.55 GB vLLM CPU image, `docker create`
# took 83 s and `docker rm` 266 s here, against 6 s and 0.1 s with overlay2.
# Environment: DOCKERD_LOG (default /tmp/dockerd.log), DOCKERD_TIMEOUT (default 60 s),
# DOCKERD_STORAGE_DRIVER (e.g. vfs, where overlay2 starts but cannot mount).
set -euo pipefail

log=${DOCKERD_LOG:-/tmp/dockerd.log}
timeout=${DOCKERD_TIMEOUT:-60}

if docker info >/dev/null 2>&1; then
    exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo="sudo"
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# dockerd sets up its bridge with iptables; some kernels lack nf_tables, and then
# only the legacy backend works.
if ! $sudo iptables -L -n >/dev/null 2>&1 && command -v iptables-legacy >/dev/null 2>&1; then
    echo "iptables (nft) fails here; switching to iptables-legacy" >&2
    $sudo update-alternatives --set iptables /usr/sbin/iptables-legacy
    $sudo update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy || true
fi

# A dockerd that died uncleanly leaves its pid file behind and refuses to start again.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    $sudo rm -f /var/run/docker.pid
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "starting dockerd (log: $log)" >&2
    # setsid: the engine outlives the test session or CI step that started it.
    driver=${DOCKERD_STORAGE_DRIVER:+--storage-driver=$DOCKERD_STORAGE_DRIVER}
    $sudo setsid sh -c "dockerd $driver >>'$log' 2>&1 </dev/null &"
fi

for _ in $(seq "$timeout"); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 1
done

echo "dockerd did not answer within ${timeout}s; last lines of $log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
