#!/usr/bin/env bash
# Side-by-side speed of exaone_cpu and llama.cpp measured in pairs, for BENCHMARKS.md.
#
#   tools/bench_paired.sh [PAIRS]
#
# For each format (int4 / Q4_0, int8 / Q8_0, bf16 / F16), PAIRS times (default 5):
#   exaone-cpu bench MODEL --threads $THREADS --repeat 1      (prefill 512, then decode 128 after it)
#   llama-bench -p 512 -n 0 -r 1                              (prefill 512)
#   llama-bench -p 0 -n 128 -d 512 -r 1                       (decode 128 after a 512-token context)
# one right after the other, so every ratio compares runs seconds apart: on a shared machine whose
# memory bandwidth drifts by 10-30 % within minutes, a ratio per pair is far steadier than the
# ratio of two medians taken minutes apart. Prints a markdown table: medians [min-max] of each
# engine's tok/s and of the per-pair ratios.
#
# Needs what tools/bench_llamacpp.sh builds and converts ($BENCH/llama.cpp-build/bin/llama-bench,
# $BENCH/gguf/$NAME-{Q4_0,Q8_0,F16}.gguf), the checkpoints (tools/make_random_model.py, then
# exaone-quantize --bits 4 / --bits 8 into $MODEL-int4 / $MODEL-int8) and exaone-cpu on PATH
# (or EXAONE_CPU=...).
#
# Environment (defaults): BENCH=/work/bench  MODEL=$BENCH/models/exaone4-1.2b-random  THREADS=2
#   EXAONE_CPU=exaone-cpu  RES=$BENCH/results/paired-<timestamp>
#   FORMATS="int4:Q4_0 int8:Q8_0 bf16:F16" (bf16 runs MODEL itself, the others MODEL-int4 / -int8;
#   gguf:Q4_K_M runs the GGUF file itself in both engines)
#   EXAONE_ARGS: more options for exaone-cpu bench, e.g. "--kv-dtype f16" (llama.cpp's cache is f16)
#   LLAMA_BENCH=$BENCH/llama.cpp-build/bin/llama-bench: another build, e.g. an AVX2-only one
#     (-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF), against ours run with
#     EXAONE_CPU_ISA=avx2 (the plain AVX2 kernels, integer ones included)
set -euo pipefail

BENCH=${BENCH:-/work/bench}
MODEL=${MODEL:-$BENCH/models/exaone4-1.2b-random}
PAIRS=${1:-5}
THREADS=${THREADS:-2}
EXAONE_CPU=${EXAONE_CPU:-exaone-cpu}
FORMATS=${FORMATS:-"int4:Q4_0 int8:Q8_0 bf16:F16"}
LLAMA_BENCH=${LLAMA_BENCH:-$BENCH/llama.cpp-build/bin/llama-bench}
NAME=$(basename "$MODEL")
RES=${RES:-$BENCH/results/paired-$(date +%Y%m%d-%H%M%S)}

die() { echo "bench_paired.sh: error: $*" >&2; exit 2; }
case "$PAIRS$THREADS" in *[!0-9]*) die "PAIRS and THREADS must be integers";; esac
[ -x "$LLAMA_BENCH" ] || die "$LLAMA_BENCH not found (run tools/bench_llamacpp.sh build first)"
command -v "$EXAONE_CPU" > /dev/null || die "$EXAONE_CPU not found (pip install the project, or set EXAONE_CPU)"
mkdir -p "$RES"
echo "== results in $RES" >&2

for spec in $FORMATS; do
  fmt=${spec%%:*} q=${spec#*:}
  model=$MODEL
  [ "$fmt" = bf16 ] || model=$MODEL-$fmt
  gguf=$BENCH/gguf/$NAME-$q.gguf
  [ -f "$gguf" ] || die "$gguf not found (run tools/bench_llamacpp.sh convert)"
  if [ "$fmt" = gguf ]; then
    model=$gguf fmt=gguf_$q
  fi
  [ -e "$model" ] || die "$model not found"
  for r in $(seq 1 "$PAIRS"); do
    # shellcheck disable=SC2086
    "$EXAONE_CPU" bench "$model" --threads "$THREADS" --repeat 1 --seed "$r" ${EXAONE_ARGS:-} --json > "$RES/exaone-$fmt-$r.json"
    "$LLAMA_BENCH" -m "$gguf" -t "$THREADS" -p 512 -n 0 -r 1 -o json > "$RES/llama-$fmt-pp-$r.json" 2> /dev/null
    "$LLAMA_BENCH" -m "$gguf" -t "$THREADS" -p 0 -n 128 -d 512 -r 1 -o json > "$RES/llama-$fmt-tg-$r.json" 2> /dev/null
    echo "== $(date +%T) $fmt pair $r/$PAIRS (load average $(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo ?))" >&2
  done
done

python3 - "$RES" "$FORMATS" <<'PY'
import glob, json, statistics, sys

res, formats = sys.argv[1], sys.argv[2].split()


def span(v):
    return f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]"


print("| weights | exaone_cpu prefill 512 | llama.cpp pp512 | prefill ratio "
      "| exaone_cpu decode 128 @ 512 | llama.cpp tg128 @ d512 | decode ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for spec in formats:
    fmt, q = spec.split(":")
    fmt = f"gguf_{q}" if fmt == "gguf" else fmt
    ep, ed, lp, ld = [], [], [], []
    for f in sorted(glob.glob(f"{res}/exaone-{fmt}-*.json")):
        r = f.rsplit("-", 1)[1].split(".")[0]
        e = json.load(open(f))
        ep.append(e["prefill_tok_s"]["median"])
        ed.append(e["decode_tok_s"]["median"])
        lp.append(json.load(open(f"{res}/llama-{fmt}-pp-{r}.json"))[0]["avg_ts"])
        ld.append(json.load(open(f"{res}/llama-{fmt}-tg-{r}.json"))[0]["avg_ts"])
    if ep:
        rp = [a / b for a, b in zip(ep, lp)]
        rd = [a / b for a, b in zip(ed, ld)]
        print(f"| {fmt} / {q} | {span(ep)} | {span(lp)} | **{span(rp)}** | {span(ed)} | {span(ld)} | **{span(rd)}** |")
PY
