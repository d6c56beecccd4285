"""Loading: a checkpoint directory to a Model (or a task-head model), and the process's thread count."""

from __future__ import annotations

import os
from pathlib import Path

from . import _core
from .checkpoint import load_checkpoint_tensors
from .config import Exaone4Config
from .external_quant import ExternalWeights, external_quantization
from .gguf_file import is_gguf, open_gguf
from .gguf_model import GGUFWeights, config_from_gguf
from .heads import TASK_MODELS
from .hub import resolve_model
from .progress import Progress
from .kv_cache import KV_DTYPES
from .model import DEFAULT_PREFILL_CHUNK, Model
from .quant import load_tensors, spec_from_options
from .speculative import speculative_config


def set_threads(threads: int | None) -> None:
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    _core.set_num_threads(threads)


def load(path: str | Path, *, threads: int | None = None, prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
         quant: str | None = None, group_size: int | None = None, asym: bool = False,
         head: str | None = None, kv_dtype: str = "f32", mmap: bool = True, gguf: str | None = None,
         local_files_only: bool | None = None, progress: bool | None = None, speculative=None) -> Model:
    """Loads a Hugging Face EXAONE 4 checkpoint directory (config.json + safetensors), a quantized
    one written by exaone-quantize or by AutoAWQ / GPTQ / llm-compressor (exaone_cpu.external_quant;
    detected from config.json's quantization_config), or a GGUF file (exaone_cpu.gguf_model).

    Returns a Model (Exaone4ForCausalLM) or, when config.json's `architectures` names a task head,
    an exaone_cpu.heads model (sequence/token classification, question answering).

    threads: threads for every op (default: the CPUs this process may use). The thread pool is
    shared by the whole process, so the last value set applies to every loaded model.
    prefill_chunk: tokens per forward step during prefill (bounds activation memory).
    quant: "int8" or "int4" quantizes a float checkpoint's projections as it loads (see
    exaone_cpu.quant and docs/quantization.md), with group_size (32, 64, 128; 0 = per-row, int8
    only; default 32 for int8 (as Q8_0), 64 for int4), asym (int4 scale + min) and head ("int8" default,
    "int4" or "bf16": the embedding / lm_head).
    kv_dtype: "f32" (default: exact), "f16" (K/V rounded to f16: half the memory and the bytes
    attention reads, faster decoding at long context, as llama.cpp's default cache) or "int8" (each
    head's K/V row of a position as int8 with an f32 scale: 0.27x f32's bytes).
    path may also be a Hugging Face Hub repo id (exaone_cpu.hub: from the local cache first;
    local_files_only=True or HF_HUB_OFFLINE=1 never touch the network); gguf= picks a file of a
    GGUF repo (or directory) by name or quant type, e.g. "Q4_K_M".
    progress: a bar with an ETA on stderr while weights are quantized or repacked at load (None:
    when stderr is a terminal; False: never).
    mmap: True (default) maps the weight files: nothing is copied and the pages are shared with
    other processes, but the files must not change while the model is in use (one truncated or
    rewritten in place kills the process with SIGBUS); update a model by writing a new directory and
    renaming it over the old one. False reads the weights into memory.
    speculative: speculative decoding by default for this model's generate(), Generator and
    ChatSession (exaone_cpu.speculative): "prompt-lookup", or a draft model with the same tokenizer
    (a loaded Model, or its path: loaded with the same threads and mmap); None: off.
    """
    path = resolve_model(path, gguf=gguf, local_files_only=local_files_only)
    gguf = is_gguf(path)
    if not gguf and not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a model directory nor a GGUF file")
    if isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int) or prefill_chunk < 1:
        raise ValueError(f"prefill_chunk must be a positive integer, got {prefill_chunk!r}")
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"kv_dtype must be one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")
    spec = spec_from_options(quant, group_size, asym, head)
    if not isinstance(mmap, bool):
        raise ValueError(f"mmap must be True or False, got {mmap!r}")
    if gguf:
        f = open_gguf(path, mmap=mmap)
        config = config_from_gguf(f)
        set_threads(threads)
        weights = GGUFWeights(f, spec)
        tensors, quantizer = weights.tensors, weights
    else:
        config = Exaone4Config.from_pretrained(path)
        external = external_quantization(path)  # AWQ / GPTQ / compressed-tensors
        set_threads(threads)
        if external is not None:
            if spec is not None:
                raise ValueError(f"{path} is already quantized ({external.name}); load it without quant=")
            tensors = load_checkpoint_tensors(path, mmap=mmap)
            quantizer = ExternalWeights(tensors, external)
        else:
            tensors, quantizer = load_tensors(path, spec, mmap)
    total = quantizer.conversions(config) if quantizer is not None else 0
    with Progress(total, "quantizing" if spec is not None else "repacking", unit="weight",
                  enabled=progress if total else False) as bar:
        if quantizer is not None:
            quantizer.progress = lambda name: bar.update(1, name)
        model = model_class(config)(config, tensors, prefill_chunk=prefill_chunk, quant=quantizer)
        if quantizer is not None:
            quantizer.progress = None
    if gguf and weights.blocks:  # the repacked weights are in memory: the file's pages are not needed
        f.release_pages()
    model.kv_dtype = kv_dtype
    model.source = path
    if speculative is not None and type(model) is Model:
        model.speculative = speculative_config(
            speculative, model, loader=lambda draft: load(draft, threads=threads, kv_dtype=kv_dtype, mmap=mmap))
    elif speculative is not None:
        raise ValueError(f"speculative: {path} is a {config.architectures[0]}, not a model that generates text")
    return model


def read_config(path: str | Path) -> Exaone4Config:
    """The config of a model directory (config.json) or a GGUF file (its metadata), without
    loading the weights: for checks before a long load."""
    path = resolve_model(path)
    if is_gguf(path):
        return config_from_gguf(open_gguf(path))
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a model directory nor a GGUF file")
    return Exaone4Config.from_pretrained(path)


def model_class(config: Exaone4Config) -> type[Model]:
    """The class for the config's architecture: the causal LM or one of the task heads."""
    arch = config.architectures[0]
    if arch == "Exaone4ForCausalLM":
        return Model
    return TASK_MODELS[arch]
