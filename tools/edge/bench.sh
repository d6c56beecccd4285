#!/usr/bin/env bash
# Benchmark a model with `exaone-cpu bench` and write a shareable report (JSON + Markdown):
# device, CPU, kernels, threads, weight format and size, prefill/decode tokens/s, peak memory.
# Run with --help for the options.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

model=""
threads_list=""
prompt=512
gen=128
repeat=3
out_dir="exaone-bench"
venv=""

usage() {
  cat <<EOF
Usage: $(basename -- "$0") MODEL [options]

Runs 'exaone-cpu bench MODEL --json' (once per thread count) and writes
OUT/bench-<model>-<date>.json and .md: device, CPU model and features, kernels (ISA), threads,
weight format and file size, prefill and decode tokens/s (median of the runs), peak memory,
exaone_cpu version and date.

Options:
  --threads N[,N...]  thread counts to test, e.g. 4 or 1,2,4 (default: all CPUs)
  --prompt N          prompt tokens to prefill (default: $prompt)
  --gen N             tokens to decode (default: $gen)
  --repeat N          timed runs per test; the report gives medians (default: $repeat)
  --out DIR           directory for the report (default: ./$out_dir)
  --venv DIR          use the exaone-cpu of this virtual environment (default: exaone-cpu on
                      PATH, else ~/.local/share/exaone_cpu/venv)
  -h, --help          show this help and exit
EOF
}

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
bad_usage() { printf 'error: %s\n(see --help)\n' "$*" >&2; exit 2; }
need_value() { [ "$1" -ge 2 ] || bad_usage "$2 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --threads) need_value $# "$1"; threads_list="$2"; shift 2 ;;
    --prompt) need_value $# "$1"; prompt="$2"; shift 2 ;;
    --gen) need_value $# "$1"; gen="$2"; shift 2 ;;
    --repeat) need_value $# "$1"; repeat="$2"; shift 2 ;;
    --out) need_value $# "$1"; out_dir="$2"; shift 2 ;;
    --venv) need_value $# "$1"; venv="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) bad_usage "unknown option: $1" ;;
    *) [ -z "$model" ] || bad_usage "one MODEL only (got '$model' and '$1')"; model="$1"; shift ;;
  esac
done
[ -n "$model" ] || bad_usage "MODEL (a model directory) is required"
[ -d "$model" ] || die "model directory $model does not exist"
for name in prompt gen repeat; do
  [[ "${!name}" =~ ^[1-9][0-9]*$ ]] || bad_usage "--$name must be a positive integer, got '${!name}'"
done
[ -z "$threads_list" ] || [[ "$threads_list" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] \
  || bad_usage "--threads must be N or a comma-separated list such as 1,2,4, got '$threads_list'"

# The exaone-cpu to benchmark, and the Python beside it (the same venv) for the report.
if [ -n "$venv" ]; then
  exe="$venv/bin/exaone-cpu"
elif command -v exaone-cpu >/dev/null 2>&1; then
  exe=$(command -v exaone-cpu)
else
  exe="$HOME/.local/share/exaone_cpu/venv/bin/exaone-cpu"
fi
[ -x "$exe" ] || die "exaone-cpu not found ($exe): install it with tools/edge/install.sh, or pass --venv DIR"
py="$(dirname -- "$exe")/python"
[ -x "$py" ] || py=$(command -v python3) || die "no Python found for writing the report"

# The benchmark itself is `exaone-cpu bench`; an older install does not have it.
if ! "$exe" bench --help >/dev/null 2>&1; then
  version=$(cd / && "$py" -c 'import exaone_cpu; print(exaone_cpu.__version__)' 2>/dev/null || echo unknown)
  die "$exe (exaone_cpu $version) has no 'bench' command: update exaone_cpu (rerun tools/edge/install.sh)"
fi

raw_dir=$(mktemp -d)
trap 'rm -rf -- "$raw_dir"' EXIT
IFS=, read -r -a counts <<<"${threads_list:-default}"
raw_files=()
for t in "${counts[@]}"; do
  args=(bench "$model" --json --prompt "$prompt" --gen "$gen" --repeat "$repeat")
  [ "$t" = default ] || args+=(--threads "$t")
  printf '==> exaone-cpu %s\n' "${args[*]}" >&2
  raw="$raw_dir/threads-$t.json"
  "$exe" "${args[@]}" > "$raw" || die "exaone-cpu bench failed (threads: $t; see its message above)"
  raw_files+=("$raw")
done

mkdir -p -- "$out_dir"
"$py" "$SCRIPT_DIR/bench_report.py" --model "$model" --out "$out_dir" \
  --command "exaone-cpu bench MODEL --json --prompt $prompt --gen $gen --repeat $repeat${threads_list:+ --threads $threads_list}" \
  "${raw_files[@]}"
