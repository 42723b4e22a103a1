#!/usr/bin/env bash
# Installs everything tsnproxy's build, tests, demo and benchmarks need on a fresh Debian
# bookworm machine, as root. Idempotent: re-running only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # build: BPF objects (clang, CO-RE headers) and the libraries tsnproxy dlopens
  clang llvm libbpf-dev libbpf1 libmnl0 linux-libc-dev
  # test topologies and traffic (tests only: the product needs none of these on a node)
  iproute2 nftables python3 socat iperf3 kmod util-linux
  # kube-proxy stand-ins (tests/lib/kube_proxy.ts): iptables mode, and IPVS in the test VMs
  iptables ipvsadm
  # real container runtimes and the reference CNI plugins
  containerd runc containernetworking-plugins umoci busybox-static podman
  # Debian kernels in qemu (extracted, never installed) for real TSN qdiscs; arm64 guests
  qemu-system-x86 qemu-system-arm xz-utils zstd
  # tests/agent: promtool checks the alert rules and a running agent's metrics
  prometheus
  # benchmarks only: the research design's per-pod plugin, re-created, runs jq and bpftool
  jq bpftool
  # doctor's time checks find real ptp4l/phc2sys processes (tests only; its services stay off)
  linuxptp
)

# tests/deploy renders the kustomize overlays with kubectl: Debian's kubernetes-client (1.20)
# unless a kubectl is already there (another package may own /usr/bin/kubectl).
command -v kubectl >/dev/null 2>&1 || APT_PACKAGES+=(kubernetes-client)

# The arm64 test guest's kernel and userland are Debian arm64 packages (downloaded, never
# installed): apt must know the architecture.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "setup: dpkg --add-architecture arm64"
  dpkg --add-architecture arm64
  apt_update_needed=1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || [ -n "${apt_update_needed:-}" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The VM tests download their kernels with `apt-get download <package>=<version>` (pinned in
# scripts/vm/kernels.json): that needs apt's package lists, which a fresh image may lack.
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
  echo "setup: apt-get update (no package lists yet)"
  apt-get update -qq
fi

# The container runtimes are driven by the tests with their own roots and sockets; the
# packages' own services must not hold the default ones.
for svc in containerd podman ptp4l timemaster prometheus prometheus-node-exporter; do
  command -v systemctl >/dev/null 2>&1 && systemctl disable --now "$svc" >/dev/null 2>&1 || true
done

# deno (from the npm registry, in tools/deno) and the npm modules (commander, yaml, zod;
# grpc for the CRI test client).
if [ ! -x tools/deno/node_modules/.bin/deno ] || [ tools/deno/package.json -nt tools/deno/node_modules/.package-lock.json ]; then
  echo "setup: npm install (deno)"
  # `npm install`, not `npm ci`: npm 11 writes this lock without the other platforms' optional
  # @deno/* packages and then refuses it in `npm ci`. The version is pinned exactly.
  (cd tools/deno && npm install --no-save --no-audit --no-fund --loglevel=error)
fi
if [ ! -d node_modules/zod ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
tools/deno/node_modules/.bin/deno --version | head -n 1

# bpffs for the datapath's pins (a real node has it mounted by systemd).
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
echo "setup: ok"
