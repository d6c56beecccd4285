#!/usr/bin/env bash
# Tests an aarch64 wheel on an x86-64 machine, under qemu-aarch64: Debian's own arm64 CPython 3.11
# (bookworm's packages, unpacked into a cached directory; nothing is installed on the system) runs
# the kernel tests against the wheel's extension, with the wheel and the aarch64 wheels of its
# dependencies beside it — once on a CPU with the dot product and i8mm (-cpu max), once as a
# Raspberry Pi 4's Cortex-A72, which has neither.
#
#   tools/test_wheel_qemu.sh WHEEL [PYTEST ARGS ...]    # a cp311 aarch64 wheel; default: tests/test_kernels.py
#
# (~30 s for each CPU here; Debian's packages and the unpacked Python, 55 MB, are kept under
# ~/.cache/exaone_cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
[ $# -ge 1 ] || { echo "usage: tools/test_wheel_qemu.sh WHEEL [PYTEST ARGS ...]" >&2; exit 2; }
wheel="$(realpath "$1")"; shift
case "$(basename "$wheel")" in
  exaone_cpu-*-cp311-cp311-*aarch64.whl) ;;
  *) echo "test_wheel_qemu.sh: needs a CPython 3.11 aarch64 wheel (Debian bookworm's arm64 Python), not $wheel" >&2; exit 2 ;;
esac
command -v qemu-aarch64 >/dev/null || { echo "test_wheel_qemu.sh: qemu-aarch64 not found (apt-get install qemu-user)" >&2; exit 2; }
pytest_args=("$@")
# (without binfmt_misc, qemu-user cannot start another aarch64 process: the three tests that run a
# fresh Python to read its start-up environment stay out)
[ ${#pytest_args[@]} -gt 0 ] || pytest_args=("$repo/tests/test_kernels.py" -k "not (test_cpu_with_avx2_uses_it_by_default \
  or test_isa_environment_override or test_malloc_environment)")

# Debian's arm64 python3.11 and the libraries it loads, unpacked once
sysroot="${EXAONE_QEMU_SYSROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/exaone_cpu/bookworm-arm64-python3.11}"
if [ ! -x "$sysroot/usr/bin/python3.11" ]; then
  rm -rf "$sysroot.partial"
  mkdir -p "$sysroot.partial/debs"
  mirror=http://deb.debian.org/debian
  curl -fsS "$mirror/dists/bookworm/main/binary-arm64/Packages.xz" | xz -dc > "$sysroot.partial/Packages"
  python3 - "$sysroot.partial/Packages" python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 \
      libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 liblzma5 libbz2-1.0 libssl3 libuuid1 libcrypt1 \
      > "$sysroot.partial/files" <<'EOF'
import sys
wanted, found = set(sys.argv[2:]), {}
for stanza in open(sys.argv[1], encoding="utf-8").read().split("\n\n"):
    fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
    if fields.get("Package") in wanted:
        found[fields["Package"]] = fields["Filename"]
missing = wanted - set(found)
if missing:
    sys.exit(f"not in bookworm's arm64 index: {' '.join(sorted(missing))}")
print("\n".join(found.values()))
EOF
  while read -r file; do
    curl -fsS -o "$sysroot.partial/debs/${file##*/}" "$mirror/$file"
    dpkg-deb -x "$sysroot.partial/debs/${file##*/}" "$sysroot.partial"
  done < "$sysroot.partial/files"
  rm -rf "$sysroot.partial/debs" "$sysroot.partial/Packages" "$sysroot.partial/files"
  mv "$sysroot.partial" "$sysroot"
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
platforms=(--platform manylinux2014_aarch64)  # what bookworm's glibc 2.36 runs (pip 23 does not infer the older ones)
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
python3 -m pip install -q --target "$scratch/site" --only-binary=:all: --implementation cp --python-version 3.11 \
  --abi cp311 "${platforms[@]}" "$wheel" pytest 2>&1 | grep -v '^WARNING: Location' || true
[ -d "$scratch/site/exaone_cpu" ] || { echo "test_wheel_qemu.sh: could not install $wheel for aarch64" >&2; exit 1; }
cd "$scratch"  # not the checkout: the package imported is the wheel's
for cpu in max cortex-a72; do
  echo "testing $(basename "$wheel") under qemu-aarch64 -cpu $cpu (Debian's arm64 Python 3.11)"
  PYTHONPATH="$scratch/site" qemu-aarch64 -cpu "$cpu" -L "$sysroot" "$sysroot/usr/bin/python3.11" -c '
import exaone_cpu, sys
assert exaone_cpu.__file__.startswith(sys.argv[1]), exaone_cpu.__file__
print("kernels:", exaone_cpu.isa(), "of", " ".join(exaone_cpu._core.available_isas()))' "$scratch/site"
  PYTHONPATH="$scratch/site" qemu-aarch64 -cpu "$cpu" -L "$sysroot" "$sysroot/usr/bin/python3.11" -m pytest -q \
    -p no:cacheprovider --rootdir "$repo" -c "$repo/pyproject.toml" "${pytest_args[@]}"
done
