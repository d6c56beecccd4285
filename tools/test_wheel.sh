#!/usr/bin/env bash
# Tests a built wheel the way a user without a toolchain gets it: a fresh venv made by PYTHON, a PATH
# with no C/C++ compiler and no CMake (so nothing can quietly build from source), `pip install
# "WHEEL[test]"`, then the test suite run from outside the checkout against the installed package.
#
#   tools/test_wheel.sh PYTHON WHEEL [PYTEST ARGS ...]    # default: the whole suite (tests/)
#
# With the whole suite, tools/edge/install.sh's end-to-end test installs WHEEL into one more venv.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
[ $# -ge 2 ] || { echo "usage: tools/test_wheel.sh PYTHON WHEEL [PYTEST ARGS ...]" >&2; exit 2; }
python="$1"; wheel="$(realpath "$2")"; shift 2
[ -f "$wheel" ] || { echo "test_wheel.sh: no such wheel: $wheel" >&2; exit 2; }
python="$(command -v "$python")" || { echo "test_wheel.sh: no such Python: $1" >&2; exit 2; }
pytest_args=("$@")
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=("$repo/tests")

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# A PATH like this one minus every compiler and build tool: each directory's programs are linked into
# one directory, except these.
mkdir "$scratch/path"
IFS=: read -ra dirs <<< "$PATH"
for dir in "${dirs[@]}"; do
  [ -d "$dir" ] || continue
  for program in "$dir"/*; do
    name="${program##*/}"
    [ -x "$program" ] && [ ! -d "$program" ] || continue
    case "$name" in
      cc|c++|cpp|gcc|g++|gcc-*|g++-*|clang|clang++|clang-*|*-gcc|*-g++|*-gcc-*|*-g++-*|*-cc|*-c++) continue ;;
      cmake|cmake3|ccmake|ctest|cpack|ninja|make|gmake|zig|ld|ld.*|*-ld|*-ld.*) continue ;;
    esac
    [ -e "$scratch/path/$name" ] || ln -s "$program" "$scratch/path/$name"
  done
done
venv="$scratch/venv"
"$python" -m venv "$venv"
export PATH="$venv/bin:$scratch/path" VIRTUAL_ENV="$venv"
unset CC CXX
for tool in cc c++ gcc g++ clang clang++ cmake ninja; do
  if command -v "$tool" >/dev/null; then echo "test_wheel.sh: $tool is still on PATH" >&2; exit 1; fi
done

python -m pip install -q "${wheel}[test]"
cd "$scratch"  # not the checkout: the package imported is the installed one
where="$(python -c 'import exaone_cpu; print(exaone_cpu.__file__)')"
case "$where" in
  "$venv"/*) ;;
  *) echo "test_wheel.sh: exaone_cpu was imported from $where, not from the wheel" >&2; exit 1 ;;
esac
echo "testing $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KB) with $(python -V), no compiler on PATH"
EXAONE_CPU_TEST_WHEEL="$wheel" python -m pytest -q -p no:cacheprovider --rootdir "$repo" \
  -c "$repo/pyproject.toml" "${pytest_args[@]}"
