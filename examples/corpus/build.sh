#!/usr/bin/env bash
# Build the BPF corpus: every src/*.bpf.c -> $OUT/<name>.bpf.o
#   examples/corpus/build.sh [OUTDIR]      (default: examples/corpus/obj, committed)
# The objects are stripped of DWARF (llvm-strip -g keeps .BTF and .BTF.ext, all
# libbpf needs): 8-20 KB each instead of 640 KB. They are committed because
# vmlinux.h comes from the build machine's kernel BTF: a rebuild elsewhere gives
# different (equally valid) objects, and the matrix should not need clang+bpftool.
# Environment:
#   CLANG            compiler (default clang-22, then clang)
#   VMLINUX_BTF      BTF source for vmlinux.h (default /sys/kernel/btf/vmlinux;
#                    a vmlinux ELF with .BTF works too)
#   LIBBPF_INCLUDE   a directory containing bpf/bpf_helpers.h (default: the
#                    libbpf-sys crate in ~/.cargo, then /usr/include)
# Idempotent: vmlinux.h and the objects are only rebuilt when their inputs change.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/obj}"
mkdir -p "$OUT" "$HERE/out"
OUT="$(cd "$OUT" && pwd)"
# Headers (vmlinux.h, staged libbpf headers) live in the git-ignored out/.
WORK="$HERE/out"

CLANG="${CLANG:-$(command -v clang-22 || command -v clang || true)}"
[ -n "$CLANG" ] || { echo "build.sh: no clang found (want clang-22)" >&2; exit 1; }
STRIP="${STRIP:-$(command -v llvm-strip-22 || command -v llvm-strip || true)}"
[ -n "$STRIP" ] || { echo "build.sh: no llvm-strip found (want llvm-strip-22)" >&2; exit 1; }

# --- libbpf headers --------------------------------------------------------
find_libbpf_include() {
	if [ -n "${LIBBPF_INCLUDE:-}" ]; then echo "$LIBBPF_INCLUDE"; return; fi
	local d
	# libbpf-sys keeps the headers in libbpf/src/ (not under bpf/): stage them.
	for d in "$HOME"/.cargo/registry/src/*/libbpf-sys-1.7.0*/libbpf/src; do
		if [ -f "$d/bpf_helpers.h" ]; then
			mkdir -p "$WORK/include/bpf"
			local h
			for h in bpf_helpers.h bpf_helper_defs.h bpf_tracing.h bpf_core_read.h bpf_endian.h; do
				cmp -s "$d/$h" "$WORK/include/bpf/$h" || cp "$d/$h" "$WORK/include/bpf/$h"
			done
			echo "$WORK/include"; return
		fi
	done
	if [ -f /usr/include/bpf/bpf_helpers.h ]; then echo /usr/include; return; fi
	echo "build.sh: no libbpf headers (install libbpf-dev or set LIBBPF_INCLUDE)" >&2
	return 1
}
INC="$(find_libbpf_include)"

# --- vmlinux.h ---------------------------------------------------------------
# 2.8 MB for a 6.18 kernel: generated, not checked in. CO-RE relocates field
# offsets at load time, so one vmlinux.h serves every kernel in the matrix.
BTF="${VMLINUX_BTF:-/sys/kernel/btf/vmlinux}"
mkdir -p "$WORK/include"
if [ ! -s "$WORK/include/vmlinux.h" ] || [ "$BTF" -nt "$WORK/include/vmlinux.h" ]; then
	command -v bpftool >/dev/null || { echo "build.sh: bpftool is needed to generate vmlinux.h" >&2; exit 1; }
	bpftool btf dump file "$BTF" format c > "$WORK/include/vmlinux.h.tmp"
	mv "$WORK/include/vmlinux.h.tmp" "$WORK/include/vmlinux.h"
fi

# --- objects -----------------------------------------------------------------
CFLAGS=(-g -O2 -target bpf -mcpu=v2 -D__TARGET_ARCH_x86 -Wall -Wno-unused-variable
	-I"$WORK/include" -I"$INC" -idirafter /usr/include/x86_64-linux-gnu)
built=0
for src in "$HERE"/src/*.bpf.c; do
	name="$(basename "$src" .c)"
	obj="$OUT/$name.o"
	if [ -s "$obj" ] && [ "$obj" -nt "$src" ] && [ "$obj" -nt "$WORK/include/vmlinux.h" ] \
		&& [ "$obj" -nt "$HERE/build.sh" ]; then
		continue
	fi
	"$CLANG" "${CFLAGS[@]}" -c "$src" -o "$obj.tmp"
	"$STRIP" -g "$obj.tmp"
	mv "$obj.tmp" "$obj"
	built=$((built + 1))
done
echo "build.sh: $(ls "$OUT"/*.bpf.o | wc -l) objects in $OUT ($built rebuilt)"
