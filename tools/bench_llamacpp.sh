#!/usr/bin/env bash
# llama.cpp anchor for `exaone-cpu bench`: the same checkpoint, converted to GGUF and timed with
# llama-bench on the same CPU.
#
#   tools/bench_llamacpp.sh [MODEL_DIR] [STEP ...]
#
# MODEL_DIR  a Hugging Face EXAONE 4 checkpoint with tokenizer files (vocab.json + merges.txt or
#            tokenizer.json); default $BENCH/models/exaone4-1.2b-random (tools/make_random_model.py)
# STEP       build | convert | bench | all (default all). Finished steps are skipped on a rerun
#            (delete the output to redo one).
#
# build    downloads the llama-cpp-python SOURCE package from PyPI (it vendors a whole llama.cpp
#          tree) and builds llama-bench + llama-quantize with cmake (-DGGML_NATIVE=ON, static).
# convert  MODEL_DIR -> F16 GGUF with llama.cpp's convert_hf_to_gguf.py, then llama-quantize to
#          each of $QUANTS.
# bench    llama-bench -p $PROMPT -n $GEN -t $THREADS -r $REPS on each GGUF, JSON per format
#          under $RES, then a markdown table (median [min-max] tok/s over the repetitions).
#          llama-bench's tg test decodes from an empty cache; `exaone-cpu bench` decodes after its
#          prompt, so unless DEPTH=0 the decode test is run again with -d $DEPTH (default $PROMPT):
#          the same context as exaone-cpu bench's decode.
#
# Environment (defaults): BENCH=/work/bench  LLAMA_CPP_PY_VERSION=0.3.36  THREADS=2  REPS=5
#   PROMPT=512  GEN=128  DEPTH=$PROMPT  QUANTS="F16 Q8_0 Q4_0"  JOBS=$(nproc)  NICE=10 (for the build)
#   PY=python3 (runs pip download and the summary)
#   LLAMA_CFLAGS: C/C++ flags for the llama.cpp build; default on x86-64 "-mno-amx-tile
#     -mno-amx-int8 -mno-amx-bf16": with -march=native on a Sapphire Rapids guest of ours its AMX
#     matmul died with SIGILL at its first tilezero (llama-bench pp512, build 0c1e570), so the
#     comparison uses its AVX-512 / VNNI kernels. Set LLAMA_CFLAGS= (empty) to keep AMX.
#   CONVERT_PY: a Python with torch, transformers and numpy (convert_hf_to_gguf.py imports torch);
#     default /work/refvenv/bin/python if it exists, else $BENCH/convert-venv, created on first use.
#   RES=$BENCH/results/llamacpp-<timestamp>
#
# Everything is written under $BENCH; nothing in the repository is touched.
set -euo pipefail

BENCH=${BENCH:-/work/bench}
MODEL=${1:-$BENCH/models/exaone4-1.2b-random}
shift || true
STEPS=${*:-all}
VERSION=${LLAMA_CPP_PY_VERSION:-0.3.36}
THREADS=${THREADS:-2}
REPS=${REPS:-5}
PROMPT=${PROMPT:-512}
GEN=${GEN:-128}
DEPTH=${DEPTH:-$PROMPT}
QUANTS=${QUANTS:-"F16 Q8_0 Q4_0"}
JOBS=${JOBS:-$(nproc)}
NICE=${NICE:-10}
PY=${PY:-python3}
if [ -z "${LLAMA_CFLAGS+set}" ]; then
  case "$(uname -m)" in x86_64|amd64) LLAMA_CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" ;; *) LLAMA_CFLAGS= ;; esac
fi
SRC=$BENCH/src/llama_cpp_python-$VERSION/vendor/llama.cpp
BUILD=$BENCH/llama.cpp-build
BIN=$BUILD/bin
NAME=$(basename "$(cd "$MODEL" 2>/dev/null && pwd || echo "$MODEL")")
GG=$BENCH/gguf
RES=${RES:-$BENCH/results/llamacpp-$(date +%Y%m%d-%H%M%S)}

die() { echo "bench_llamacpp.sh: error: $*" >&2; exit 2; }
log() { echo "== $*" >&2; }

for s in $STEPS; do
  case "$s" in build|convert|bench|all) ;; *) die "unknown step '$s' (build, convert, bench, all)";; esac
done
case "$THREADS$REPS$PROMPT$GEN$DEPTH" in *[!0-9]*) die "THREADS, REPS, PROMPT, GEN and DEPTH must be integers";; esac
wants() { [[ " $STEPS " == *" all "* || " $STEPS " == *" $1 "* ]]; }

build() {
  if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-quantize" ]; then
    log "llama.cpp tools already built in $BIN"
    return
  fi
  command -v cmake >/dev/null || die "cmake is not installed"
  mkdir -p "$BENCH/src"
  if [ ! -f "$SRC/CMakeLists.txt" ]; then
    log "downloading llama-cpp-python==$VERSION (source package)"
    # --no-binary for this package only: ':all:' would also build its build dependencies (cmake!)
    # from source just to read the package metadata.
    "$PY" -m pip download --no-deps --no-binary llama-cpp-python -d "$BENCH/src" "llama-cpp-python==$VERSION"
    tar -C "$BENCH/src" -xzf "$BENCH/src/llama_cpp_python-$VERSION.tar.gz"
  fi
  ln -sfn "$SRC" "$BENCH/llama.cpp"
  log "building llama-bench, llama-quantize (nice -n $NICE, $JOBS jobs)"
  nice -n "$NICE" cmake -S "$SRC" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DCMAKE_C_FLAGS="$LLAMA_CFLAGS" -DCMAKE_CXX_FLAGS="$LLAMA_CFLAGS" >&2
  nice -n "$NICE" cmake --build "$BUILD" -j "$JOBS" --target llama-bench llama-quantize >&2
}

convert_python() {
  if [ -n "${CONVERT_PY:-}" ]; then echo "$CONVERT_PY"; return; fi
  if [ -x /work/refvenv/bin/python ] && /work/refvenv/bin/python -c "import torch, transformers, numpy" 2>/dev/null; then
    echo /work/refvenv/bin/python; return
  fi
  local venv=$BENCH/convert-venv
  if ! "$venv/bin/python" -c "import torch, transformers, numpy" 2>/dev/null; then
    log "creating $venv (torch, transformers, numpy) for convert_hf_to_gguf.py"
    "$PY" -m venv "$venv" >&2
    # torch only because convert_hf_to_gguf.py imports it; point pip at a CPU-only wheel where you
    # can (a plain PyPI 'torch' on Linux is the multi-GB CUDA build)
    "$venv/bin/pip" install -q torch >&2
    "$venv/bin/pip" install -q transformers numpy sentencepiece protobuf >&2
  fi
  echo "$venv/bin/python"
}

convert() {
  [ -x "$BIN/llama-quantize" ] || die "llama-quantize not built yet (run the build step)"
  [ -f "$MODEL/config.json" ] || die "$MODEL is not a model directory (no config.json); make one with tools/make_random_model.py"
  if [ ! -f "$MODEL/tokenizer.json" ] && [ ! -f "$MODEL/vocab.json" ]; then
    die "$MODEL has no tokenizer (tokenizer.json or vocab.json + merges.txt): convert_hf_to_gguf.py needs one"
  fi
  mkdir -p "$GG"
  local f16=$GG/$NAME-F16.gguf
  if [ ! -f "$f16" ]; then
    local cpy; cpy=$(convert_python)
    log "converting $MODEL -> $f16 (python: $cpy)"
    # convert_hf_to_gguf.py names the BPE pre-tokenizer by hashing the ids it produces for a fixed
    # text; an unknown hash (e.g. a tokenizer other than EXAONE's) raises NotImplementedError. Wrap
    # that one method, without editing llama.cpp, to fall back to 'exaone4' -- llama.cpp's GPT-2
    # style byte-level regex, the pre-tokenizer of EXAONE 4. Token ids do not affect the timing.
    local wrapper=$BENCH/convert_with_fallback.py
    cat > "$wrapper" <<'EOF'
import os, runpy, sys
llama_dir = os.path.abspath(sys.argv[1])
sys.path[:0] = [llama_dir, os.path.join(llama_dir, "gguf-py")]
import conversion.base as base
_orig = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return _orig(self, tokenizer)
    except NotImplementedError:
        base.logger.warning("unknown BPE pre-tokenizer hash -> using 'exaone4' (GPT-2 regex)")
        return "exaone4"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
script = os.path.join(llama_dir, "convert_hf_to_gguf.py")
sys.argv = [script] + sys.argv[2:]
runpy.run_path(script, run_name="__main__")
EOF
    nice -n "$NICE" "$cpy" "$wrapper" "$SRC" "$MODEL" --outtype f16 --outfile "$f16.part" > "$f16.convert.log" 2>&1 \
      || { tail -30 "$f16.convert.log" >&2; die "convert_hf_to_gguf.py failed (log: $f16.convert.log)"; }
    grep -E 'WARNING|unknown BPE' "$f16.convert.log" >&2 || true
    mv "$f16.part" "$f16"
  fi
  for q in $QUANTS; do
    local out=$GG/$NAME-$q.gguf
    [ "$q" = F16 ] || [ -f "$out" ] && continue
    log "quantizing -> $out"
    nice -n "$NICE" "$BIN/llama-quantize" "$f16" "$out.part" "$q" "$THREADS" > "$GG/$NAME-$q.quantize.log" 2>&1 \
      || { tail -20 "$GG/$NAME-$q.quantize.log" >&2; die "llama-quantize $q failed"; }
    mv "$out.part" "$out"
  done
  ls -l "$GG"/"$NAME"-*.gguf >&2
}

bench() {
  [ -x "$BIN/llama-bench" ] || die "llama-bench not built yet (run the build step)"
  mkdir -p "$RES"
  {
    date -u; uname -a; lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Flags' | cut -c1-400; free -g
    "$BIN/llama-bench" --version 2>&1 | head -3 || true
  } > "$RES/sysinfo.txt" 2>&1
  for q in $QUANTS; do
    local f=$GG/$NAME-$q.gguf
    [ -f "$f" ] || die "missing $f (run the convert step)"
    log "llama-bench $q: -p $PROMPT -n $GEN -t $THREADS -r $REPS"
    "$BIN/llama-bench" -m "$f" -t "$THREADS" -p "$PROMPT" -n "$GEN" -r "$REPS" -o json \
      > "$RES/llama-bench-$q.json" 2> "$RES/llama-bench-$q.err" \
      || { tail -20 "$RES/llama-bench-$q.err" >&2; die "llama-bench $q failed"; }
    if [ "$DEPTH" -gt 0 ]; then
      log "llama-bench $q: -p 0 -n $GEN -d $DEPTH -t $THREADS -r $REPS"
      "$BIN/llama-bench" -m "$f" -t "$THREADS" -p 0 -n "$GEN" -d "$DEPTH" -r "$REPS" -o json \
        > "$RES/llama-bench-$q-d$DEPTH.json" 2> "$RES/llama-bench-$q-d$DEPTH.err" \
        || { tail -20 "$RES/llama-bench-$q-d$DEPTH.err" >&2; die "llama-bench $q -d $DEPTH failed"; }
    fi
  done
  "$PY" - "$RES" "$DEPTH" $QUANTS <<'EOF'
import json, os, statistics, sys
res, depth, quants = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def fmt(xs):
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]" if xs else "-"
print(f"llama.cpp llama-bench, results in {res}; tok/s median [min-max] over the repetitions\n")
dcol = f" decode after {depth} tok/s |" if depth else ""
print(f"| format | model size (MiB) | params (B) | threads | prefill tok/s | decode tok/s |{dcol}")
print("|---|---:|---:|---:|---:|---:|" + ("---:|" if depth else ""))
for q in quants:
    rows = json.load(open(os.path.join(res, f"llama-bench-{q}.json")))
    pp = [s for r in rows if r["n_gen"] == 0 for s in r["samples_ts"]]
    tg = [s for r in rows if r["n_prompt"] == 0 for s in r["samples_ts"]]
    tests = [f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}" for r in rows]
    r0 = rows[0]
    line = (f"| {q} | {r0['model_size'] / 2**20:.0f} | {r0['model_n_params'] / 1e9:.3f} | {r0['n_threads']} "
            f"| {fmt(pp)} | {fmt(tg)} |")
    if depth:
        d = json.load(open(os.path.join(res, f"llama-bench-{q}-d{depth}.json")))
        line += f" {fmt([s for r in d for s in r['samples_ts']])} |"
    print(line)
print(f"\nllama.cpp build {rows[0].get('build_commit')} ({rows[0].get('build_number')}), "
      f"cpu: {rows[0].get('cpu_info')}, tests: {', '.join(tests)}")
EOF
}

wants build && build
wants convert && convert
wants bench && bench
exit 0
