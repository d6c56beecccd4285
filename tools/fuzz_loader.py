#!/usr/bin/env python3
"""Mutation fuzzer for the loaders: every mutated checkpoint must load cleanly or fail with a clear error.

Each case copies a tiny checkpoint (float, bf16, hybrid, task head, a quantized and a sharded one
made from them, and GGUF files: Q8_0 with the tokenizer, K-quants), mutates one thing — a field of
config.json, generation_config.json, tokenizer_config.json or special_tokens_map.json (wrong type,
negative, huge, NaN, infinite, a string spelling of a bool...), a safetensors header entry (dtype,
shape, offsets, header bytes), or a GGUF header (a metadata value, header bytes, truncation) — and
loads it with Generator.from_pretrained (model, tokenizer, generation config) in a worker process
with a memory cap and a time limit. Outcomes:

  ok        loaded (and produced finite logits for a short prompt)
  rejected  FileNotFoundError, CheckpointError, ConfigError or another ValueError
  BAD       any other exception type, MemoryError, a crash, or a hang

    python tools/fuzz_loader.py [--cases 5000] [--seed 0] [--timeout 20] [--keep DIR]

Exits 1 when any case is BAD; --keep copies those checkpoints to DIR as regression inputs.
tests/test_fuzz_loader.py runs a bounded number of cases with a fixed seed.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing as mp
import random
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SHARED_TOKENIZER = REPO.parent / "shared" / "exaone-4.0-1.2b"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
BASES = ("tiny-1.2b", "tiny-1.2b-bf16", "tiny-32b", "tiny-seqcls")
MEMORY_CAP = 3 << 30  # bytes of address space per worker: a size taken on trust fails fast here

WEIRD = [None, True, False, "false", "true", "", "x" * 50, -1, 0, 1, 2, 3, 7, 10**13, 2**63, -(2**63), 1.5, -0.5,
         1e308, -1e308, math.nan, math.inf, -math.inf, 1e-300, [], [1, 2], {}, {"a": 1}, [[[]]], "12", "1e3"]


def make_bases(root: Path) -> list[Path]:
    """The tiny fixtures with tokenizer files, plus an int4 copy and a sharded copy."""
    from exaone_cpu.quant import QuantSpec, quantize_checkpoint

    bases = []
    for name in BASES:
        d = root / name
        shutil.copytree(FIXTURES / name, d)
        if SHARED_TOKENIZER.is_dir():
            for f in TOKENIZER_FILES:
                if (SHARED_TOKENIZER / f).is_file() and not (d / f).exists():
                    shutil.copy(SHARED_TOKENIZER / f, d / f)
        bases.append(d)
    quantize_checkpoint(root / "tiny-1.2b", root / "tiny-int4", QuantSpec(4), log=None)
    quantize_checkpoint(root / "tiny-32b", root / "tiny-32b-sharded", QuantSpec(8), shard_bytes=40_000, log=None)
    bases += [root / "tiny-int4", root / "tiny-32b-sharded"]
    for d in bases[-2:]:
        for f in TOKENIZER_FILES:
            if (root / "tiny-1.2b" / f).is_file() and not (d / f).exists():
                shutil.copy(root / "tiny-1.2b" / f, d / f)
    return bases + make_gguf_bases(root)


def make_gguf_bases(root: Path) -> list[Path]:
    """Directories holding one model.gguf: tiny-1.2b in Q8_0 with the EXAONE tokenizer (when
    ../shared has it), and a 256-wide model with Q4_K / Q6_K blocks (written as llama.cpp's converter
    writes them, tests/model_factory.write_gguf)."""
    try:
        import gguf  # noqa: F401 - the test extra's writer
    except ImportError:
        return []
    sys.path.insert(0, str(REPO / "tests"))
    from model_factory import write_gguf, write_tiny_exaone

    out = []
    tok = SHARED_TOKENIZER if (SHARED_TOKENIZER / "vocab.json").is_file() else None
    d = root / "gguf-q8"
    d.mkdir()
    write_gguf(FIXTURES / "tiny-1.2b", d / "model.gguf", "Q8_0", tokenizer_dir=tok)
    out.append(d)
    if tok is not None:
        src = write_tiny_exaone(root / "wide-src", dtype="F32", link_tokenizer=False, hidden=256, vocab_size=102400)
        rng = np.random.default_rng(0)
        blocks = {}
        for name, (kind, size) in {"model.layers.0.mlp.down_proj.weight": ("Q6_K", 210),
                                   "model.layers.1.mlp.up_proj.weight": ("Q4_K", 144)}.items():
            rows, cols = (256, 512) if "down" in name else (512, 256)
            raw = rng.integers(0, 256, size=(rows, cols // 256, size), dtype=np.uint8)
            at = 208 if kind == "Q6_K" else 0
            for off in ((at,) if kind == "Q6_K" else (0, 2)):  # sane f16 scales: random ones may be NaN
                raw[:, :, off:off + 2] = np.full((rows, cols // 256), 1e-3, np.float16).view(np.uint8).reshape(rows, -1, 2)
            blocks[name] = (kind, raw.reshape(rows, -1))
        d = root / "gguf-k"
        d.mkdir()
        write_gguf(src, d / "model.gguf", "Q8_0", tokenizer_dir=tok, blocks=blocks)
        out.append(d)
    return out


# ---- mutations ----------------------------------------------------------------------------------------------


def _json_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(value, list) and value and len(value) <= 64:
        for i, v in enumerate(value):
            yield from _json_paths(v, prefix + (i,))


def _set(root, path, value):
    target = root
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value


def mutate_json(file: Path, rng: random.Random) -> str:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError:  # already broken by an earlier mutation
        file.write_text("{", encoding="utf-8")
        return f"{file.name}: truncated"
    paths = [p for p in _json_paths(data) if p]
    how = rng.random()
    if how < 0.08:
        file.write_text(rng.choice(["", "{", "[]", "null", "1", '"x"', "{" * 5000 + "}" * 5000]), encoding="utf-8")
        return f"{file.name}: whole file replaced"
    if how < 0.15 and paths:
        path = rng.choice(paths)
        target = data
        for p in path[:-1]:
            target = target[p]
        del target[path[-1]]
        file.write_text(json.dumps(data), encoding="utf-8")
        return f"{file.name}: deleted {'.'.join(map(str, path))}"
    if not paths:
        return f"{file.name}: unchanged"
    path = rng.choice(paths)
    value = rng.choice(WEIRD)
    _set(data, path, value)
    file.write_text(json.dumps(data, allow_nan=True), encoding="utf-8")
    return f"{file.name}: {'.'.join(map(str, path))} = {value!r}"[:200]


def mutate_safetensors(file: Path, rng: random.Random) -> str:
    raw = bytearray(file.read_bytes())
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        if not isinstance(header, dict) or not [k for k in header if k != "__metadata__"]:
            raise ValueError
        data = bytes(raw[8 + n :])
    except (ValueError, struct.error):  # already broken by an earlier mutation: flip a byte
        if raw:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        file.write_bytes(bytes(raw))
        return f"{file.name}: a byte flipped"
    how = rng.random()
    if how < 0.1:
        i = rng.randrange(0, 8)
        raw[i] = rng.randrange(256)
        file.write_bytes(bytes(raw))
        return f"{file.name}: header length byte {i}"
    if how < 0.2:
        for _ in range(rng.randint(1, 4)):
            raw[8 + rng.randrange(n)] = rng.randrange(256)
        file.write_bytes(bytes(raw))
        return f"{file.name}: header bytes flipped"
    if how < 0.25:
        file.write_bytes(bytes(raw[: rng.randrange(len(raw))]))
        return f"{file.name}: truncated"
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    field = rng.choice(["dtype", "shape", "data_offsets", "entry", "metadata"])
    if field == "dtype":
        entry["dtype"] = rng.choice(["F32", "BF16", "F16", "I8", "U8", "F64", "I64", "BOOL", "Q4", 7, None])
    elif field == "shape":
        entry["shape"] = rng.choice([[], [0], [-1], [10**12, 10**12], [2**31, 2], entry["shape"][::-1],
                                     entry["shape"] + [1], [1.5], "x", None])
    elif field == "data_offsets":
        b, e = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[e, b], [b, e + 8], [0, e - b], [b, 10**18], [-8, e], [b], None,
                                            [b + 4, e + 4], ["0", e]])
    elif field == "entry":
        header[name] = rng.choice([None, [], "x", {}, 5])
    else:
        header["__metadata__"] = rng.choice([None, [], "x", {"format_version": "999"}, {"a": {"b": 1}}])
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    file.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return f"{file.name}: {name}.{field}"[:200]


GGUF_U32_KEYS = ("exaone4.block_count", "exaone4.context_length", "exaone4.embedding_length",
                 "exaone4.feed_forward_length", "exaone4.attention.head_count", "exaone4.attention.head_count_kv",
                 "exaone4.attention.key_length", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id")
GGUF_F32_KEYS = ("exaone4.rope.freq_base", "exaone4.attention.layer_norm_rms_epsilon")


def mutate_gguf(file: Path, rng: random.Random) -> str:
    raw = bytearray(file.read_bytes())
    how = rng.random()
    if how < 0.45:
        keys = [k for k in GGUF_U32_KEYS + GGUF_F32_KEYS if k.encode() in raw]
        if keys:
            key = rng.choice(keys)
            at = raw.index(key.encode()) + len(key) + 4  # after the key: its value type, then the value
            if key in GGUF_U32_KEYS:
                value = rng.choice([0, 1, 3, 7, 2**31 - 1, 2**32 - 1, 102400, 65])
                raw[at:at + 4] = struct.pack("<I", value)
            else:
                value = rng.choice([0.0, -1.0, math.nan, math.inf, 1e-30, 1e30])
                raw[at:at + 4] = struct.pack("<f", value)
            file.write_bytes(bytes(raw))
            return f"{file.name}: {key} = {value!r}"
    if how < 0.55:
        file.write_bytes(bytes(raw[: rng.randrange(len(raw))]))
        return f"{file.name}: truncated"
    header = min(len(raw), 1 << 16)
    try:
        from exaone_cpu.gguf_file import GGUFFile

        f = GGUFFile(file, mmap=False)
        header = min(int(t.data.ctypes.data) for t in f.tensors.values()) - np.frombuffer(f._buf, np.uint8).ctypes.data
    except Exception:  # noqa: BLE001 - already broken: flip within the first 64 KiB
        pass
    for _ in range(rng.randint(1, 4)):
        raw[rng.randrange(header)] = rng.randrange(256)
    file.write_bytes(bytes(raw))
    return f"{file.name}: header bytes flipped"


def mutate(d: Path, rng: random.Random) -> str:
    if (d / "model.gguf").is_file():
        return mutate_gguf(d / "model.gguf", rng)
    files = [f for f in d.iterdir() if f.suffix in (".json", ".safetensors")]
    weights = [f for f in files if f.suffix == ".safetensors"]
    configs = [f for f in files if f.suffix == ".json"]
    if weights and rng.random() < 0.4:
        return mutate_safetensors(rng.choice(weights), rng)
    preferred = [f for f in configs if f.name == "config.json"]
    pick = preferred[0] if preferred and rng.random() < 0.5 else rng.choice(configs)
    return mutate_json(pick, rng)


# ---- the worker ---------------------------------------------------------------------------------------------


def _try_load(path: str, queue) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    try:
        from exaone_cpu import CheckpointError, ConfigError
        from exaone_cpu.generation import Generator

        expected = (FileNotFoundError, CheckpointError, ConfigError, ValueError)
        try:
            if (Path(path) / "model.gguf").is_file():
                path = str(Path(path) / "model.gguf")
            gen = Generator.from_pretrained(path, threads=1)
            model = gen.model
            if hasattr(model, "generate"):
                out = model.logits([1, 2, 3])
                if not np.all(np.isfinite(out)):
                    queue.put(("BAD", "non-finite logits from a checkpoint that loaded"))
                    return
            queue.put(("ok", ""))
        except MemoryError as e:
            queue.put(("BAD", f"MemoryError: {e}"))
        except expected as e:
            queue.put(("rejected", f"{type(e).__name__}: {e}"[:300]))
        except BaseException as e:  # noqa: BLE001 - the point of the fuzzer
            queue.put(("BAD", f"{type(e).__name__}: {e}"[:300]))
    except BaseException as e:  # noqa: BLE001
        queue.put(("BAD", f"{type(e).__name__} before loading: {e}"[:300]))


@functools.lru_cache(maxsize=None)
def _context():
    """Workers forked from a fork server that has imported exaone_cpu once: as cheap as forking the
    caller, without forking a process that runs other threads (a test runner's, a server's)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["numpy", "exaone_cpu.generation"])
    return ctx


def run_case(path: Path, timeout: float) -> tuple[str, str]:
    ctx = _context()
    queue = ctx.Queue()
    proc = ctx.Process(target=_try_load, args=(str(path), queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return "BAD", f"hang (> {timeout} s)"
    try:
        return queue.get(timeout=1)
    except Exception:  # noqa: BLE001
        return "BAD", f"crash (exit code {proc.exitcode})"


def fuzz(cases: int, seed: int, timeout: float = 20.0, keep: Path | None = None, log=print) -> dict[str, list]:
    rng = random.Random(seed)
    results: dict[str, list] = {"ok": [], "rejected": [], "BAD": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bases = make_bases(root / "bases")
        for i in range(cases):
            base = rng.choice(bases)
            case = root / f"case-{i}"
            shutil.copytree(base, case)
            what = f"{base.name}: " + "; ".join(mutate(case, rng) for _ in range(rng.choice((1, 1, 1, 2))))
            outcome, detail = run_case(case, timeout)
            results[outcome].append((what, detail))
            if outcome == "BAD":
                log(f"BAD case {i}: {what} -> {detail}")
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copytree(case, keep / f"case-{seed}-{i}", dirs_exist_ok=True)
            shutil.rmtree(case)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--keep", type=Path, default=None, help="copy BAD cases here")
    args = ap.parse_args()
    results = fuzz(args.cases, args.seed, args.timeout, args.keep)
    print(f"{args.cases} cases: {len(results['ok'])} ok, {len(results['rejected'])} rejected, "
          f"{len(results['BAD'])} BAD")
    return 1 if results["BAD"] else 0


if __name__ == "__main__":
    sys.exit(main())
