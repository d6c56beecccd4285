#!/usr/bin/env bash
# Fill the placeholders of exaone-cpu.service (beside this script) and print the unit; with
# --install (as root) also create the service user, install the unit and start it.
# Run with --help for the options.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
template="$SCRIPT_DIR/exaone-cpu.service"
unit_path="/etc/systemd/system/exaone-cpu.service"
env_dir="/etc/exaone-cpu"
env_file="$env_dir/exaone-cpu.env"

# Defaults follow the user who ran sudo, so `sudo install-service.sh --install` finds their venv.
home="$HOME"
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  home=$(getent passwd "$SUDO_USER" | cut -d: -f6) || home="$HOME"
fi
venv="$home/.local/share/exaone_cpu/venv"
model=""
user="exaone"
host="127.0.0.1"
port=8000
threads=""
ctx=""
parallel=""
cache_mb=""
memory_max=""
api_key=""
install=0
start=1

usage() {
  cat <<EOF
Usage: $(basename -- "$0") --model DIR [options]

Fills the placeholders of $template and prints the unit.
With --install (root): creates the system user, writes $unit_path,
stores an API key (if given) in $env_file (mode 0640), and enables and starts the service.

Options:
  --model DIR         model directory to serve (required), e.g. an int4 checkpoint from exaone-quantize
  --venv DIR          virtual environment made by install.sh (default: $venv)
  --user NAME         system user that runs the server (default: $user)
  --host ADDR         address to bind (default: $host; 0.0.0.0 for the network, with an API key)
  --port N            port (default: $port)
  --threads N         compute threads (default: nproc = $(nproc))
  --ctx N             context length per request (default: 4096 below 6 GiB of RAM, else 8192)
  --parallel N        sequences decoded together (default: 1 below 6 GiB of RAM, else 2)
  --cache-mb N        prefix cache: KV of finished requests kept for later ones (default: 256 below
                      6 GiB of RAM, else 1024; 0: off)
  --memory-max SIZE   systemd MemoryMax, e.g. 3G (default: estimated from the weights, the
                      KV cache of ctx x parallel tokens, the prefix cache and 0.25 GiB of
                      runtime, plus 25 %)
  --api-key KEY       require this key (written to $env_file, not into the unit)
  --install           install the unit (needs root); without it, only print the filled unit
  --no-start          with --install: do not enable and start the service
  -h, --help          show this help and exit
EOF
}

info() { printf '%s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
bad_usage() { printf 'error: %s\n(see --help)\n' "$*" >&2; exit 2; }
need_value() { [ "$1" -ge 2 ] || bad_usage "$2 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --model) need_value $# "$1"; model="$2"; shift 2 ;;
    --venv) need_value $# "$1"; venv="$2"; shift 2 ;;
    --user) need_value $# "$1"; user="$2"; shift 2 ;;
    --host) need_value $# "$1"; host="$2"; shift 2 ;;
    --port) need_value $# "$1"; port="$2"; shift 2 ;;
    --threads) need_value $# "$1"; threads="$2"; shift 2 ;;
    --ctx) need_value $# "$1"; ctx="$2"; shift 2 ;;
    --cache-mb) need_value $# "$1"; cache_mb="$2"; shift 2 ;;
    --parallel) need_value $# "$1"; parallel="$2"; shift 2 ;;
    --memory-max) need_value $# "$1"; memory_max="$2"; shift 2 ;;
    --api-key) need_value $# "$1"; api_key="$2"; shift 2 ;;
    --install) install=1; shift ;;
    --no-start) start=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) bad_usage "unknown option: $1" ;;
  esac
done

[ -n "$model" ] || bad_usage "--model DIR is required"
[ -f "$template" ] || die "unit template $template not found"
[ -d "$model" ] || die "model directory $model does not exist"
[ -f "$model/config.json" ] || die "$model has no config.json: not a model directory"
model=$(cd -- "$model" && pwd)
[ -d "$venv" ] || die "virtual environment $venv does not exist (run install.sh first, or pass --venv)"
venv=$(cd -- "$venv" && pwd)
[ -x "$venv/bin/exaone-cpu" ] || die "$venv/bin/exaone-cpu not found: is exaone_cpu installed in $venv?"
if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c 'import starlette, uvicorn' 2>/dev/null; then
  die "the venv lacks the [server] extra: rerun install.sh without --no-server"
fi

# systemd splits ExecStart= at spaces and expands '%' specifiers; sed below uses '|'.
for p in "$venv" "$model"; do
  case "$p" in
    *[[:space:]%\"\'\\\|]*) die "path '$p' contains a space or one of % \" ' \\ |: move it to a plain path" ;;
  esac
done
[[ "$user" =~ ^[a-z_][a-z0-9_-]*$ ]] || bad_usage "--user '$user' is not a valid user name"
[[ "$host" =~ ^[A-Za-z0-9.:_-]+$ ]] || bad_usage "--host '$host' is not an address"
[ -z "$api_key" ] || [[ "$api_key" =~ ^[A-Za-z0-9._~+/=-]+$ ]] \
  || bad_usage "--api-key may contain only letters, digits and . _ ~ + / = -"
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

mem_total_mib=$(awk '$1 == "MemTotal:" { printf "%d\n", $2 / 1024 }' /proc/meminfo)
[ -n "$threads" ] || threads=$(nproc)
ctx_given="$ctx"
if [ "$mem_total_mib" -lt 6144 ]; then
  [ -n "$ctx" ] || ctx=4096
  [ -n "$parallel" ] || parallel=1
  [ -n "$cache_mb" ] || cache_mb=256
else
  [ -n "$ctx" ] || ctx=8192
  [ -n "$parallel" ] || parallel=2
  [ -n "$cache_mb" ] || cache_mb=1024
fi
[[ "$cache_mb" =~ ^[0-9]+$ ]] || bad_usage "--cache-mb must be a non-negative integer, got '$cache_mb'"
for name in port threads ctx parallel; do
  is_count "${!name}" || bad_usage "--$name must be a positive integer, got '${!name}'"
done
[ "$port" -le 65535 ] || bad_usage "--port must be at most 65535"

# Python for reading config.json: the venv's, else the system's.
py=$(command -v python3 || true)
if [ -x "$venv/bin/python" ]; then py="$venv/bin/python"; fi
max_pos=""
if [ -n "$py" ]; then
  max_pos=$("$py" -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["max_position_embeddings"]))' \
              "$model/config.json" 2>/dev/null || true)
fi
if [[ "$max_pos" =~ ^[0-9]+$ ]] && [ "$ctx" -gt "$max_pos" ]; then
  [ -z "$ctx_given" ] || bad_usage "--ctx $ctx exceeds the model's max_position_embeddings ($max_pos)"
  ctx="$max_pos"
fi
[ "$port" -ge 1024 ] || warn "port $port is below 1024: the unit drops every capability, so binding will fail;
         use 1024 or above (e.g. behind a reverse proxy)"

# Memory estimate: weight files + KV cache (f32 K and V of every layer) for ctx x parallel tokens
# + the prefix cache's budget + 0.25 GiB runtime (Python, numpy, tokenizer, server, activations; ~0.1 GiB measured), in MiB.
estimate_mib=""
if [ -n "$py" ]; then
  estimate_mib=$("$py" - "$model" "$ctx" "$parallel" "$cache_mb" <<'EOF' 2>/dev/null || true
import json, pathlib, sys
model, ctx, parallel, cache_mb = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = json.loads((model / "config.json").read_text())
layers = c["num_hidden_layers"]
head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
kv_heads = c.get("num_key_value_heads") or c["num_attention_heads"]
types = c.get("layer_types") or ["full_attention"] * layers
window = c.get("sliding_window") or ctx
full = 256  # a global layer's cache doubles from 256 slots: ctx 3000 holds 4096
while full < ctx:
    full *= 2
slots = sum(full if t == "full_attention" else min(full, window + 255) for t in types)
kv = 2 * 4 * kv_heads * head_dim * slots * parallel
weights = sum(p.stat().st_size for p in model.iterdir() if p.suffix == ".safetensors")
print(int((weights + kv) / 2**20 + cache_mb + 256))
EOF
)
fi
[[ "$estimate_mib" =~ ^[0-9]+$ ]] || estimate_mib=""
if [ -z "$memory_max" ]; then
  if [ -n "$estimate_mib" ]; then
    memory_max="$(( (estimate_mib * 5 / 4 + 255) / 256 * 256 ))M"
  else
    memory_max="$(( mem_total_mib * 3 / 4 ))M"
    warn "could not estimate the memory need from $model/config.json; MemoryMax=$memory_max (3/4 of RAM)"
  fi
fi
[[ "$memory_max" =~ ^[0-9]+[KMGT]?$ ]] || bad_usage "--memory-max must look like 3G or 2560M, got '$memory_max'"
if [ -n "$estimate_mib" ]; then
  info "estimated memory: ${estimate_mib} MiB (weights + KV cache of $parallel x $ctx tokens + prefix cache" \
       "of $cache_mb MiB + runtime);" \
       "MemoryMax=$memory_max; RAM ${mem_total_mib} MiB"
  [ "$estimate_mib" -lt "$mem_total_mib" ] \
    || warn "the estimate exceeds this machine's RAM: lower --ctx, --parallel or --cache-mb, or use an int4 model"
fi
if [ "$host" != 127.0.0.1 ] && [ "$host" != localhost ] && [ "$host" != ::1 ] && [ -z "$api_key" ] \
   && ! grep -qs '^EXAONE_CPU_API_KEY=.' "$env_file"; then
  warn "binding to $host without an API key: anyone on the network can use the model (pass --api-key)"
fi

unit=$(sed -e "s|@USER@|$user|g" -e "s|@VENV@|$venv|g" -e "s|@MODEL@|$model|g" -e "s|@HOST@|$host|g" \
           -e "s|@PORT@|$port|g" -e "s|@THREADS@|$threads|g" -e "s|@CTX@|$ctx|g" \
           -e "s|@PARALLEL@|$parallel|g" -e "s|@CACHE_MB@|$cache_mb|g" -e "s|@MEMORY_MAX@|$memory_max|g" \
           "$template" \
       | grep -v '^#')  # the template's how-to comments do not belong in the installed unit
left=$(grep -o '@[A-Z_]*@' <<<"$unit" | sort -u | tr '\n' ' ' || true)
[ -z "$left" ] || die "placeholders left unfilled: $left"

if [ "$install" = 0 ]; then
  printf '# %s: generated by %s from %s\n%s\n' "$(basename -- "$unit_path")" "$(basename -- "$0")" "$template" "$unit"
  info ""
  info "This is the filled unit. To install it: sudo $0 --install (with the same options)"
  exit 0
fi

# ---- --install ---------------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || die "--install needs root: rerun with sudo"
command -v systemctl >/dev/null 2>&1 || die "systemctl not found: this system does not run systemd"
if ! id -u "$user" >/dev/null 2>&1; then
  info "creating the system user $user"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
fi
if command -v runuser >/dev/null 2>&1; then
  runuser -u "$user" -- test -x "$venv/bin/exaone-cpu" \
    || die "user $user cannot run $venv/bin/exaone-cpu (a private home directory?):
       install the venv elsewhere, e.g. install.sh --venv /opt/exaone_cpu/venv"
  runuser -u "$user" -- test -r "$model/config.json" \
    || die "user $user cannot read $model: move the model outside private directories, e.g. /opt/exaone_cpu/models"
fi
if [ -n "$api_key" ]; then
  install -d -m 0755 "$env_dir"
  umask 077
  printf 'EXAONE_CPU_API_KEY=%s\n' "$api_key" > "$env_file"
  chgrp "$user" "$env_file"
  chmod 0640 "$env_file"
  info "API key stored in $env_file"
fi
printf '# generated by %s from %s\n%s\n' "$0" "$template" "$unit" > "$unit_path"
chmod 0644 "$unit_path"
systemctl daemon-reload
info "installed $unit_path"
if [ "$start" = 1 ]; then
  systemctl enable --now exaone-cpu.service
  info "started: systemctl status exaone-cpu; logs: journalctl -u exaone-cpu -f"
else
  info "start it with: sudo systemctl enable --now exaone-cpu"
fi
curl_host="$host"
case "$host" in 0.0.0.0|::) curl_host=127.0.0.1 ;; *:*) curl_host="[$host]" ;; esac
info "test: curl http://$curl_host:$port/v1/models${api_key:+ -H 'Authorization: Bearer KEY'}"
