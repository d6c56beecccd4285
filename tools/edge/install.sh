#!/usr/bin/env bash
# Install exaone_cpu into its own virtual environment on a 64-bit Linux board or small PC
# (Raspberry Pi OS, Ubuntu on a Jetson, Debian/Ubuntu on an x86 mini PC). No root needed.
# Run with --help for the options; README_SECTION.md beside this file explains the whole setup.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd -- "$SCRIPT_DIR/../.." && pwd)

MIN_PYTHON_MINOR=9         # Python 3.9 or newer (pyproject.toml: requires-python >= 3.9)
HARD_MIN_MEM_MIB=512       # below this, compiling the C++ extension is likely to be killed
WARN_MEM_MIB=1536          # the 1.2B model in int4 with a 2k context needs about 1.1 GiB
HARD_MIN_DISK_MIB=1024     # the venv with numpy, tokenizers and the build needs ~500 MiB
WARN_DISK_MIB=4096         # plus room for a model: bf16 2.6 GB, int4 0.8 GB

venv="$HOME/.local/share/exaone_cpu/venv"
source_spec="$REPO_DIR"
python="python3"
server=1
structured=1
offline=0
check_only=0
find_links=()

usage() {
  cat <<EOF
Usage: $(basename -- "$0") [options]

Checks this machine (CPU architecture and SIMD features, Python, memory, disk), creates a
virtual environment and installs exaone_cpu into it, then prints which kernels this CPU uses and
how to quantize, chat, serve and install the systemd service. Needs no root.

Options:
  --venv DIR        virtual environment to create or update
                    (default: ~/.local/share/exaone_cpu/venv)
  --source SPEC     what to install: a source directory, a wheel or sdist file, a URL
                    (git+https://...) or a requirement such as 'exaone_cpu==0.1.0'
                    (default: the repository this script is in: $REPO_DIR)
  --python PY       Python interpreter for the venv, 3.$MIN_PYTHON_MINOR or newer (default: python3)
  --no-server       skip the [server] extra (starlette, uvicorn): no 'exaone-cpu serve'
  --no-structured   do not try llguidance (structured output: JSON schemas, grammars, enforced
                    tool calls); tried by default as a prebuilt wheel only, and skipped with a
                    warning where none exists (32-bit ARM, musl, glibc before 2.31)
  --offline         install without the package index: pip --no-index --no-build-isolation;
                    dependencies and build tools (scikit-build-core, pybind11, cmake) must come
                    from --find-links directories or an already populated pip configuration
  --find-links DIR  extra local directory of wheels for pip (may be repeated)
  --check-only      run the checks and stop (creates and installs nothing)
  -h, --help        show this help and exit

Exit status: 0 on success, 1 when a check or the installation fails, 2 on bad options.
EOF
}

say() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
bad_usage() { printf 'error: %s\n(see --help)\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) [ $# -ge 2 ] || bad_usage "--venv needs a directory"; venv="$2"; shift 2 ;;
    --venv=*) venv="${1#*=}"; shift ;;
    --source) [ $# -ge 2 ] || bad_usage "--source needs a value"; source_spec="$2"; shift 2 ;;
    --source=*) source_spec="${1#*=}"; shift ;;
    --python) [ $# -ge 2 ] || bad_usage "--python needs an interpreter"; python="$2"; shift 2 ;;
    --python=*) python="${1#*=}"; shift ;;
    --find-links) [ $# -ge 2 ] || bad_usage "--find-links needs a directory"; find_links+=("$2"); shift 2 ;;
    --find-links=*) find_links+=("${1#*=}"); shift ;;
    --no-server) server=0; shift ;;
    --no-structured) structured=0; shift ;;
    --offline) offline=1; shift ;;
    --check-only) check_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) bad_usage "unknown option: $1" ;;
  esac
done
[ -n "$venv" ] || bad_usage "--venv is empty"
[ -n "$source_spec" ] || bad_usage "--source is empty"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac

# ---- the machine ----------------------------------------------------------------------------

say "Checking this machine"
[ "$(uname -s)" = Linux ] \
  || die "this script is for Linux (found $(uname -s)); elsewhere install with: pip install '${REPO_DIR}[server]'"

# Test hooks: another cpuinfo file and architecture name (the tests check the ARM branch on x86).
cpuinfo="${EXAONE_EDGE_CPUINFO:-/proc/cpuinfo}"
arch="${EXAONE_EDGE_ARCH:-$(uname -m)}"

# values of the "key : value" lines of $cpuinfo whose key is $1, once each, in order
cpuinfo_values() {
  awk -F': *' -v key="$1" '{ k = $1; sub(/[ \t]+$/, "", k) } k == key && !seen[$2]++ { print $2 }' "$cpuinfo" 2>/dev/null || true
}
cpuinfo_field() { cpuinfo_values "$1" | head -n 1; }

arm_core_name() {  # Arm Ltd (implementer 0x41) part number -> core name
  case "$1" in
    0xd03) echo Cortex-A53 ;; 0xd04) echo Cortex-A35 ;; 0xd05) echo Cortex-A55 ;; 0xd07) echo Cortex-A57 ;;
    0xd08) echo Cortex-A72 ;; 0xd09) echo Cortex-A73 ;; 0xd0a) echo Cortex-A75 ;; 0xd0b) echo Cortex-A76 ;;
    0xd0c) echo Neoverse-N1 ;; 0xd0d) echo Cortex-A77 ;; 0xd40) echo Neoverse-V1 ;; 0xd41) echo Cortex-A78 ;;
    0xd42) echo Cortex-A78AE ;; 0xd44) echo Cortex-X1 ;; 0xd46) echo Cortex-A510 ;; 0xd47) echo Cortex-A710 ;;
    0xd48) echo Cortex-X2 ;; 0xd49) echo Neoverse-N2 ;; 0xd4b) echo Cortex-A78C ;; 0xd4f) echo Neoverse-V2 ;;
    0xd80) echo Cortex-A520 ;; 0xd81) echo Cortex-A720 ;; 0xd82) echo Cortex-X4 ;;
    *) echo "part $1" ;;
  esac
}

# yes/no for each of the named CPU features in the space-separated list $1
feature_report() {
  local have=" $1 " out="" f
  shift
  for f in "$@"; do
    case "$have" in *" $f "*) out+="$f=yes " ;; *) out+="$f=no " ;; esac
  done
  printf '%s' "${out% }"
}

cpu_model=""
board=$(cpuinfo_field Model)  # Raspberry Pi kernels name the board here
if [ -z "$board" ] && [ -z "${EXAONE_EDGE_CPUINFO:-}" ] && [ -r /proc/device-tree/model ]; then
  board=$(tr -d '\0' < /proc/device-tree/model)
fi
case "$arch" in
  x86_64|amd64)
    cpu_model=$(cpuinfo_field "model name")
    flags=$(cpuinfo_field flags)
    info "architecture: x86_64"
    info "CPU: ${cpu_model:-unknown} ($(nproc) cores available)"
    info "features: $(feature_report "$flags" avx2 fma f16c)"
    case " $flags " in
      *" avx2 "*" fma "*|*" fma "*" avx2 "*) ;;
      *) warn "this CPU lacks AVX2/FMA: exaone_cpu will run its scalar kernels, several times slower" ;;
    esac
    ;;
  aarch64|arm64)
    if [ "$(cpuinfo_field "CPU implementer")" = 0x41 ]; then  # name each kind of core (big.LITTLE)
      cpu_model=$(cpuinfo_values "CPU part" | while read -r part; do arm_core_name "$part"; done | paste -s -d + -)
    elif [ -z "${EXAONE_EDGE_CPUINFO:-}" ]; then
      cpu_model=$(LC_ALL=C lscpu 2>/dev/null | awk -F': *' '/^Model name/ { print $2; exit }' || true)
    fi
    flags=$(cpuinfo_field Features)
    info "architecture: aarch64"
    info "CPU: ${cpu_model:-unknown}${board:+ on $board} ($(nproc) cores available)"
    info "features: $(feature_report "$flags" asimd asimddp i8mm) (asimddp = dot product)"
    ;;
  armv6l|armv7l|armv8l|i386|i486|i586|i686)
    die "32-bit system ($arch): exaone_cpu needs a 64-bit OS (x86_64 or aarch64), e.g. Raspberry Pi OS (64-bit)" ;;
  *)
    die "unsupported CPU architecture '$arch': exaone_cpu supports x86_64 and aarch64" ;;
esac

# ---- Python -----------------------------------------------------------------------------------

command -v "$python" >/dev/null 2>&1 \
  || die "Python interpreter '$python' not found: sudo apt-get install python3 python3-venv (or pass --python)"
py_version=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])') \
  || die "'$python' does not run"
py_ok=$("$python" -c "import sys; print(int(sys.version_info >= (3, $MIN_PYTHON_MINOR)))")
[ "$py_ok" = 1 ] || die "Python $py_version is too old: exaone_cpu needs 3.$MIN_PYTHON_MINOR or newer.
       On Ubuntu 20.04 (JetPack 5): sudo apt-get install python3.9 python3.9-venv python3.9-dev,
       then rerun with --python python3.9"
py_bits=$("$python" -c 'import struct; print(8 * struct.calcsize("P"))')
[ "$py_bits" = 64 ] || die "'$python' is a ${py_bits}-bit Python on a 64-bit kernel: install a 64-bit OS image"
"$python" -c 'import venv, ensurepip' >/dev/null 2>&1 \
  || die "Python $py_version cannot create virtual environments (no venv/ensurepip module):
       sudo apt-get install python3-venv   (or python3.X-venv matching '$python')"
info "Python: $py_version ($(command -v "$python")), venv available"

# ---- memory and disk --------------------------------------------------------------------------

meminfo_mib() {  # value of /proc/meminfo field $1 in MiB (empty if absent)
  awk -v key="$1:" '$1 == key { printf "%d\n", $2 / 1024; exit }' /proc/meminfo 2>/dev/null || true
}
mem_total=$(meminfo_mib MemTotal)
mem_avail=$(meminfo_mib MemAvailable)
if [ -z "$mem_avail" ]; then  # kernels before 3.14
  mem_avail=$(( $(meminfo_mib MemFree) + $(meminfo_mib Cached) ))
fi
info "memory: ${mem_avail} MiB available of ${mem_total:-?} MiB"
[ "$mem_avail" -ge "$HARD_MIN_MEM_MIB" ] || die "only ${mem_avail} MiB of memory available:
       building and running exaone_cpu needs at least ${HARD_MIN_MEM_MIB} MiB free (stop other programs)"
if [ "$mem_avail" -lt "$WARN_MEM_MIB" ]; then
  warn "${mem_avail} MiB available: enough to install, but the 1.2B model in int4 with a 2k context needs about 1.1 GiB"
fi

existing_dir() {  # the nearest existing ancestor of $1
  local d="$1"
  while [ ! -d "$d" ]; do d=$(dirname -- "$d"); done
  printf '%s\n' "$d"
}
disk_free_mib() {
  df -Pk -- "$(existing_dir "$1")" | awk 'NR == 2 { printf "%d\n", $4 / 1024 }'
}
venv_free=$(disk_free_mib "$venv")
info "disk: ${venv_free} MiB free at $(existing_dir "$venv") (for $venv)"
[ "$venv_free" -ge "$HARD_MIN_DISK_MIB" ] \
  || die "only ${venv_free} MiB free on the disk of $venv: the install needs ${HARD_MIN_DISK_MIB} MiB"
if [ "$venv_free" -lt "$WARN_DISK_MIB" ]; then
  warn "${venv_free} MiB free: little room left for models (EXAONE-4.0-1.2B: 2.6 GB in bf16, 0.8 GB in int4)"
fi
tmp_dir="${TMPDIR:-/tmp}"
tmp_free=$(disk_free_mib "$tmp_dir")
if [ "$tmp_free" -lt 512 ]; then
  warn "only ${tmp_free} MiB free in $tmp_dir (pip unpacks and builds there): set TMPDIR to a larger directory if the install fails"
fi

# The requirement to install, with the [server] extra unless --no-server.
extra=""
if [ "$server" = 1 ]; then extra="[server]"; fi
if [ -d "$source_spec" ]; then  # a source tree
  src_path=$(cd -- "$source_spec" && pwd)
  [ -f "$src_path/pyproject.toml" ] \
    || die "--source $source_spec is a directory without pyproject.toml: not an exaone_cpu source tree"
  requirement="$src_path$extra"
elif [ -e "$source_spec" ]; then  # a wheel or sdist
  src_path=$(cd -- "$(dirname -- "$source_spec")" && pwd)/$(basename -- "$source_spec")
  requirement="$src_path$extra"
elif [[ "$source_spec" == *://* ]]; then  # git+https://..., https://.../x.tar.gz
  requirement="exaone_cpu$extra @ $source_spec"
elif [[ "$source_spec" == *"["* ]]; then  # the caller chose the extras
  requirement="$source_spec"
elif [[ "$source_spec" =~ ^([A-Za-z0-9._-]+)([<>=!~].*)?$ ]]; then  # name and optional version specifier
  requirement="${BASH_REMATCH[1]}$extra${BASH_REMATCH[2]}"
else
  die "--source '$source_spec' is neither an existing path, a URL nor a requirement"
fi

# Does the source need compiling? Everything but a wheel file does.
case "$source_spec" in
  *.whl) needs_build=0 ;;
  *) needs_build=1 ;;
esac
if [ "$needs_build" = 1 ]; then
  cxx=""
  for c in "${CXX:-}" c++ g++ clang++; do
    if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1; then cxx="$c"; break; fi
  done
  [ -n "$cxx" ] || die "no C++ compiler found (the C++ kernels are built during the install):
       sudo apt-get install build-essential python3-dev"
  py_include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [ -f "$py_include/Python.h" ] || die "Python headers are missing ($py_include/Python.h):
       sudo apt-get install python3-dev   (or python3.X-dev matching '$python')"
  info "C++ compiler: $(command -v "$cxx"); Python headers: $py_include"
  case "$source_spec" in
    git+*) command -v git >/dev/null 2>&1 || die "--source $source_spec needs git: sudo apt-get install git" ;;
  esac
  if [ "$offline" = 1 ] && ! command -v cmake >/dev/null 2>&1; then
    warn "no cmake on PATH: --offline needs cmake >= 3.18 (sudo apt-get install cmake) or a cmake wheel in --find-links"
  fi
fi

if [ "$check_only" = 1 ]; then
  say "All checks passed (--check-only: nothing installed)"
  info "would install: $requirement"
  exit 0
fi

# ---- the virtual environment ------------------------------------------------------------------

vpy="$venv/bin/python"
if [ -x "$vpy" ]; then
  say "Updating the existing virtual environment $venv"
elif [ -f "$venv/pyvenv.cfg" ]; then
  die "$venv is a broken virtual environment (no working bin/python: was its Python removed?): remove it and rerun"
elif [ -e "$venv" ] && [ -n "$(ls -A -- "$venv" 2>/dev/null)" ]; then
  die "$venv exists and is not a virtual environment: choose another --venv or remove it"
else
  say "Creating the virtual environment $venv"
  mkdir -p -- "$(dirname -- "$venv")"
  "$python" -m venv -- "$venv" || die "could not create the virtual environment $venv"
fi

pip_opts=(--disable-pip-version-check)
for d in "${find_links[@]+"${find_links[@]}"}"; do
  pip_opts+=(--find-links "$d")
done
if [ "$offline" = 1 ]; then
  pip_opts+=(--no-index)
else
  # pip before 21.3 copies a source tree elsewhere to build it, and lacks current wheel tags
  if ! "$vpy" -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (22, 0))' 2>/dev/null; then
    say "Upgrading pip in the venv"
    "$vpy" -m pip install "${pip_opts[@]}" --upgrade pip || die "could not upgrade pip (no network? try --offline)"
  fi
fi

if [ "$offline" = 1 ] && [ "$needs_build" = 1 ]; then
  # --no-build-isolation builds with what the venv has, so the build tools go in first.
  build_reqs=("scikit-build-core>=0.10" "pybind11>=2.12")
  command -v cmake >/dev/null 2>&1 || build_reqs+=("cmake>=3.18")
  command -v ninja >/dev/null 2>&1 || command -v make >/dev/null 2>&1 || build_reqs+=("ninja")
  say "Installing the build tools from local sources: ${build_reqs[*]}"
  "$vpy" -m pip install "${pip_opts[@]}" "${build_reqs[@]}" \
    || die "--offline: could not install the build tools without the index; put their wheels in a --find-links directory"
  pip_opts+=(--no-build-isolation)
fi

# Parallel compile jobs: one per core, but no more than memory allows (~700 MiB per compiler).
if [ -z "${CMAKE_BUILD_PARALLEL_LEVEL:-}" ]; then
  jobs=$(nproc)
  mem_jobs=$(( mem_avail / 700 ))
  [ "$mem_jobs" -ge 1 ] || mem_jobs=1
  [ "$jobs" -le "$mem_jobs" ] || jobs=$mem_jobs
  export CMAKE_BUILD_PARALLEL_LEVEL="$jobs"
fi

say "Installing $requirement"
[ "$needs_build" = 1 ] && info "(compiles the C++ kernels with $CMAKE_BUILD_PARALLEL_LEVEL parallel jobs: a few minutes on a small board)"
"$vpy" -m pip install "${pip_opts[@]}" "$requirement" || die "pip could not install $requirement (see its messages above)"

# ---- what this CPU will use -------------------------------------------------------------------

say "Checking the installation"
isa_line=$(cd / && "$vpy" -c 'import exaone_cpu
print(exaone_cpu.__version__, exaone_cpu.isa(), " ".join(exaone_cpu._core.available_isas()))') \
  || die "exaone_cpu was installed but does not import: see the error above"
read -r version isa available <<<"$isa_line"
info "exaone_cpu $version"
echo "kernels: $isa (available on this CPU: ${available// /, })"
if [ "$isa" = scalar ]; then
  warn "no SIMD kernels for this CPU in this build: the portable scalar kernels run (correct, but slow)"
fi
"$venv/bin/exaone-cpu" --help >/dev/null || die "$venv/bin/exaone-cpu does not run"
if [ "$server" = 1 ]; then
  "$vpy" -c 'import starlette, uvicorn' 2>/dev/null || die "the [server] extra is missing (starlette, uvicorn)"
fi

# Structured output: llguidance is Rust; its wheels cover x86-64 and aarch64 Linux with glibc 2.31+,
# and a board without one would need a Rust toolchain, so only a prebuilt wheel is tried.
if [ "$structured" = 1 ]; then
  if "$vpy" -m pip install "${pip_opts[@]}" --only-binary=:all: "llguidance>=1.0" >/dev/null 2>&1; then
    # (older llguidance releases, the newest for Python 3.9, have no __version__)
    echo "structured output: llguidance $("$vpy" -c 'import importlib.metadata as m, llguidance; print(m.version("llguidance"))')"
  else
    warn "no llguidance wheel for this platform: structured output (json_schema, grammars, enforced tool calls) is unavailable; everything else works"
  fi
fi

# ---- next steps -------------------------------------------------------------------------------

threads=$(nproc)
models="$HOME/models"
hf_cmd=""
if [ -x "$venv/bin/hf" ]; then
  hf_cmd="$venv/bin/hf download"
elif [ -x "$venv/bin/huggingface-cli" ]; then
  hf_cmd="$venv/bin/huggingface-cli download"
fi
bin="$venv/bin"

cat <<EOF

Done. Installed into $venv
The commands live in $bin (add it to PATH, or: source $bin/activate).

Next steps
  1. Get the model (Hugging Face directory: config.json, model.safetensors, tokenizer files):
       ${hf_cmd:-huggingface-cli download} LGAI-EXAONE/EXAONE-4.0-1.2B --local-dir $models/EXAONE-4.0-1.2B
  2. Quantize it once (int4: ~0.8 GB instead of 2.6 GB, faster; --bits 8 for int8, ~1.3 GB):
       $bin/exaone-quantize $models/EXAONE-4.0-1.2B $models/EXAONE-4.0-1.2B-int4 --bits 4
  3. Chat in the terminal:
       $bin/exaone-cpu chat $models/EXAONE-4.0-1.2B-int4 --threads $threads
EOF
if [ "$server" = 1 ]; then
  cat <<EOF
  4. Serve an OpenAI-compatible API (http://127.0.0.1:8000/v1):
       $bin/exaone-cpu serve $models/EXAONE-4.0-1.2B-int4 --host 127.0.0.1 --port 8000 --threads $threads
     Set EXAONE_CPU_API_KEY (or --api-key) before binding to another address than 127.0.0.1.
  5. Run it as a systemd service (starts at boot, restarts on failure); prints the unit, then
     installs it with --install (root). For a dedicated service user, keep the venv and model
     outside your home directory (e.g. --venv /opt/exaone_cpu/venv, models in /opt/exaone_cpu/models):
       $SCRIPT_DIR/install-service.sh --venv $venv --model $models/EXAONE-4.0-1.2B-int4
       sudo $SCRIPT_DIR/install-service.sh --venv $venv --model $models/EXAONE-4.0-1.2B-int4 --install
EOF
fi
cat <<EOF
  Benchmark and share the result (writes JSON + Markdown):
       $SCRIPT_DIR/bench.sh $models/EXAONE-4.0-1.2B-int4 --venv $venv --threads $threads
EOF
