#!/usr/bin/env python3
"""Turn `exaone-cpu bench --json` results into a shareable report: JSON + Markdown.

    bench_report.py --model DIR --out DIR [--command TEXT] RESULT.json [RESULT.json ...]

Each RESULT.json is the output of one `exaone-cpu bench MODEL --json` run (one per thread count).
Writes OUT/bench-<model>-<YYYYmmdd-HHMMSS>.json and .md and prints their paths. bench.sh beside
this file runs the benchmark and then this script; it needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = "exaone_cpu-edge-bench/1"

# CPU features that matter for the kernels, per architecture (as /proc/cpuinfo spells them).
FEATURES = {
    "x86_64": ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni"),
    "aarch64": ("asimd", "asimddp", "i8mm", "sve", "bf16"),
}

# Arm Ltd (CPU implementer 0x41) part numbers of common edge-board cores.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2", "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4f": "Neoverse-V2",
    "0xd80": "Cortex-A520", "0xd81": "Cortex-A720", "0xd82": "Cortex-X4",
}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\0", "").strip()
    except OSError:
        return None


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per block (processors, then the board block on ARM)."""
    blocks, cur = [], {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            cur.setdefault(key.strip(), value.strip())
    if cur:
        blocks.append(cur)
    return blocks


def cpu_description(arch: str, cpuinfo: str) -> tuple[str, list[str], str | None]:
    """(CPU model, relevant features present, board) from the text of /proc/cpuinfo."""
    blocks = parse_cpuinfo(cpuinfo)
    first = lambda key: next((b[key] for b in blocks if key in b), None)  # noqa: E731
    board = first("Model")
    if arch in ("aarch64", "arm64"):
        flags = (first("Features") or "").split()
        parts = []
        for b in blocks:
            if b.get("CPU implementer") == "0x41" and "CPU part" in b:
                name = ARM_PARTS.get(b["CPU part"], f"part {b['CPU part']}")
                if name not in parts:
                    parts.append(name)
        model = "+".join(parts) or first("model name") or "unknown"
        wanted = FEATURES["aarch64"]
    else:
        flags = (first("flags") or "").split()
        model = first("model name") or "unknown"
        wanted = FEATURES.get(arch, ())
    return model, [f for f in wanted if f in flags], board


def system_info() -> dict:
    arch = platform.machine()
    model, features, board = cpu_description(arch, _read("/proc/cpuinfo") or "")
    board = board or _read("/proc/device-tree/model") or _read("/sys/class/dmi/id/product_name")
    mem_total = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_total = int(line.split()[1]) // 1024
    os_name = None
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', _read("/etc/os-release") or "", re.M)
    if m:
        os_name = m.group(1)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "board": board,
        "arch": arch,
        "cpu_model": model,
        "cpu_features": features,
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "mem_total_mib": mem_total,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def load_result(path: Path) -> dict:
    """The JSON object `exaone-cpu bench --json` printed (its last non-empty line)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty: exaone-cpu bench printed no result")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not the JSON of exaone-cpu bench --json ({e})") from None
    for key in ("prefill_tok_s", "decode_tok_s", "threads", "isa"):
        if key not in result:
            raise ValueError(f"{path}: the bench result has no '{key}'")
    return result


def build_report(results: list[dict], model: str, system: dict, command: str | None = None,
                 date: datetime | None = None) -> dict:
    date = date or datetime.now(timezone.utc)
    first = results[0]
    quant = None
    try:
        quant = json.loads((Path(model) / "config.json").read_text()).get("quantization_config")
    except (OSError, ValueError):
        pass
    summary = [
        {
            "threads": r["threads"],
            "prompt_tokens": r.get("prompt_tokens"),
            "gen_tokens": r.get("gen_tokens"),
            "repeat": r.get("repeat"),
            "prefill_tok_s": r["prefill_tok_s"]["median"],
            "decode_tok_s": r["decode_tok_s"]["median"],
            "peak_rss_mib": r.get("peak_rss_mib"),
            "load_s": r.get("load_s"),
        }
        for r in results
    ]
    return {
        "schema": SCHEMA,
        "date": date.isoformat(timespec="seconds"),
        "exaone_cpu_version": first.get("exaone_cpu_version"),
        "isa": first.get("isa"),
        "system": system,
        "model": {
            "name": Path(model).resolve().name,
            "weight_format": first.get("weight_format"),
            "weight_file_bytes": first.get("weight_file_bytes"),
            "weight_files": first.get("weight_files"),
            "quantization_config": quant,
        },
        "command": command,
        "summary": summary,
        "runs": results,
    }


def _num(v, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _size(nbytes) -> str:
    if nbytes is None:
        return "n/a"
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def render_markdown(report: dict) -> str:
    s, m = report["system"], report["model"]
    where = s.get("board") or s.get("cpu_model")
    size = m.get("weight_file_bytes")
    files = m.get("weight_files") or []
    cores = s.get("cpu_cores")
    if s.get("cpu_cores_usable") not in (None, cores):
        cores = f"{cores} ({s['cpu_cores_usable']} usable)"
    rows = [
        ("date", report["date"]),
        ("device", s.get("board") or "n/a"),
        ("CPU", f"{s.get('cpu_model')}, {cores} cores, {s.get('arch')}"),
        ("CPU features", " ".join(s.get("cpu_features") or []) or "none of the relevant ones"),
        ("CPU governor", s.get("cpu_governor") or "n/a"),
        ("memory", f"{_num(s.get('mem_total_mib'), 'd')} MiB"),
        ("OS", f"{s.get('os') or 'n/a'}, kernel {s.get('kernel')}, Python {s.get('python')}"),
        ("exaone_cpu", f"{report.get('exaone_cpu_version')}, kernels: {report.get('isa')}"),
        ("model", m["name"]),
        ("weights", f"{m.get('weight_format')}, {_size(size)} in {len(files)} file(s)"),
    ]
    first = report["summary"][0]
    rows.append(("test", f"prefill {first['prompt_tokens']} tokens, then decode {first['gen_tokens']} tokens; "
                         f"median of {first['repeat']} run{'s' if first['repeat'] != 1 else ''}"))
    out = [f"# exaone_cpu benchmark: {m['name']} on {where}", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    out += ["", "| threads | prefill tok/s | decode tok/s | peak memory (MiB) | load (s) |",
            "|---:|---:|---:|---:|---:|"]
    for r in report["summary"]:
        out.append(f"| {r['threads']} | {_num(r['prefill_tok_s'], '.2f')} | {_num(r['decode_tok_s'], '.2f')} | "
                   f"{_num(r['peak_rss_mib'], '.0f')} | {_num(r['load_s'], '.2f')} |")
    out += ["", "Peak memory is the peak resident set size of the benchmark process (the memory-mapped "
                "weights it touched included)."]
    if report.get("command"):
        out += ["", f"Command: `{report['command']}`"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path, help="outputs of exaone-cpu bench --json")
    p.add_argument("--model", required=True, help="the benchmarked model directory")
    p.add_argument("--out", required=True, type=Path, help="directory for the report")
    p.add_argument("--command", default=None, help="the benchmark command line, for the report")
    args = p.parse_args(argv)
    try:
        results = [load_result(path) for path in args.results]
    except (OSError, ValueError) as e:
        print(f"bench_report: error: {e}", file=sys.stderr)
        return 1
    report = build_report(results, args.model, system_info(), args.command)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", report["model"]["name"]) or "model"
    stamp = datetime.fromisoformat(report["date"]).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"bench-{stem}-{stamp}.json"
    md_path = json_path.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(render_markdown(report))
    print(render_markdown(report))
    print(f"report: {json_path}\n        {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
