"""A transformers-style facade: the model card's examples run with only the import line changed.

    from exaone_cpu import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype="bfloat16", device_map="auto")
    tokenizer = AutoTokenizer.from_pretrained(path)
    input_ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                              return_tensors="np")      # or "pt" with PyTorch installed
    output = model.generate(input_ids.to(model.device), max_new_tokens=128, do_sample=False)
    print(tokenizer.decode(output[0]))

Loading options that only make sense for PyTorch (torch_dtype, device_map, attn_implementation ...)
are accepted and ignored: the weights are used in their stored format, on the CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .constraints import OutputFormat, TokenConstraint, build_grammar, marker_token_ids
from .decoding import TokenStream
from .hub import resolve_model
from .loading import load
from .model import DEFAULT_PREFILL_CHUNK, Model
from .sampling import GenerationDefaults, SamplingParams, load_generation_config
from .speculative import PROMPT_LOOKUP, Speculative, speculative_config
from .streaming import IncrementalDetokenizer, StopMatcher
from .tokenizer import BatchEncoding, Tokenizer

# from_pretrained keywords of transformers that have no meaning here.
_IGNORED_LOAD_OPTIONS = frozenset({
    "torch_dtype", "dtype", "device_map", "device", "attn_implementation", "low_cpu_mem_usage",
    "trust_remote_code", "token", "use_auth_token",
    "force_download", "proxies", "use_safetensors", "offload_folder", "offload_state_dict", "max_memory",
    "subfolder", "variant", "use_fast", "legacy", "padding_side", "_from_auto", "code_revision",
})
# from_pretrained() keywords that pick the files (used by _resolve, not ignored).
_SOURCE_OPTIONS = frozenset({"revision", "cache_dir", "local_files_only", "gguf_file"})

# generate() keywords accepted and ignored (batch-1 greedy/sampling has no use for them).
_IGNORED_GENERATE_OPTIONS = frozenset({"attention_mask", "pad_token_id", "bos_token_id", "use_cache", "tokenizer"})


class TensorArray(np.ndarray):
    """A numpy array with torch's `.to(device)` / `.cpu()` / `.numpy()`, so `input_ids.to(model.device)`
    works on what the tokenizer returns for return_tensors="np"."""

    def to(self, *args: Any, **kwargs: Any) -> TensorArray:
        return self

    def cpu(self) -> TensorArray:
        return self

    def numpy(self) -> np.ndarray:
        return self.view(np.ndarray)


def _resolve(name_or_path: str | Path, options: dict[str, Any]) -> Path:
    """A local path for a directory, GGUF file or Hub id, honouring transformers' local_files_only,
    revision, cache_dir and gguf_file (exaone_cpu.hub: the cache first, no network when offline)."""
    return resolve_model(name_or_path, gguf=options.get("gguf_file"), local_files_only=options.get("local_files_only"),
                         revision=options.get("revision"), cache=options.get("cache_dir"))


class _FacadeTokenizer(Tokenizer):
    """Our Tokenizer, whose numpy outputs also answer `.to(device)`."""

    def __call__(self, *args: Any, **kwargs: Any) -> BatchEncoding:
        encoding = super().__call__(*args, **kwargs)
        for key, value in encoding.items():
            if type(value) is np.ndarray:
                encoding[key] = value.view(TensorArray)
        return encoding


class AutoTokenizer:
    @staticmethod
    def from_pretrained(name_or_path: str | Path, *args: Any, **kwargs: Any) -> Tokenizer:
        """exaone_cpu's Tokenizer for a model directory, GGUF file or Hub id (local_files_only,
        revision, cache_dir and gguf_file as in transformers)."""
        return _FacadeTokenizer.from_pretrained(_resolve(name_or_path, kwargs))


class AutoModelForCausalLM:
    @staticmethod
    def from_pretrained(name_or_path: str | Path, *args: Any, threads: int | None = None,
                        prefill_chunk: int = DEFAULT_PREFILL_CHUNK, **kwargs: Any) -> CausalLM:
        """Loads an EXAONE 4 checkpoint directory. PyTorch-only options (torch_dtype, device_map, ...)
        are ignored; threads and prefill_chunk are passed to exaone_cpu.load."""
        unknown = set(kwargs) - _IGNORED_LOAD_OPTIONS - _SOURCE_OPTIONS
        if unknown:
            raise TypeError(f"from_pretrained() got unsupported arguments: {', '.join(sorted(unknown))}")
        path = _resolve(name_or_path, kwargs)
        model = load(path, threads=threads, prefill_chunk=prefill_chunk)
        return CausalLM(model, load_generation_config(path), name_or_path=str(name_or_path))


def _rows(input_ids: Any) -> tuple[list[np.ndarray], str]:
    """The prompt rows and the kind of container they came in: "numpy", "torch" or "list"."""
    kind = "list"
    if isinstance(input_ids, np.ndarray):
        kind, array = "numpy", input_ids
    elif type(input_ids).__module__.startswith("torch"):
        kind, array = "torch", input_ids.detach().cpu().numpy()
    else:
        array = np.asarray(input_ids)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"input_ids must be [batch, length] token ids, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"input_ids must be integers, got dtype {array.dtype}")
    return [row.astype(np.int64) for row in array], kind


def _same_kind(rows: np.ndarray, like: Any, kind: str) -> Any:
    if kind == "numpy":
        return rows.view(type(like)) if isinstance(like, np.ndarray) and type(like) is not np.ndarray else rows
    if kind == "torch":
        import torch

        return torch.from_numpy(rows).to(like.device)
    return rows.tolist()


class CausalLM:
    """What AutoModelForCausalLM.from_pretrained returns: an exaone_cpu Model behind transformers'
    generate() / __call__ interface. `model` is the exaone_cpu Model itself."""

    device = "cpu"

    def __init__(self, model: Model, generation_config: GenerationDefaults, *, name_or_path: str = ""):
        self.model = model
        self.config = model.config
        self.generation_config = generation_config
        self.name_or_path = name_or_path

    # torch.nn.Module habits that have nothing to do here
    def eval(self) -> CausalLM:
        return self

    def to(self, *args: Any, **kwargs: Any) -> CausalLM:
        return self

    def __call__(self, input_ids: Any, **kwargs: Any) -> SimpleNamespace:
        """Logits [batch, length, vocab] of a fresh forward pass, as `.logits` (same container as input_ids)."""
        rows, kind = _rows(input_ids)
        logits = np.stack([self.model.logits(row) for row in rows])
        return SimpleNamespace(logits=_same_kind(logits, input_ids, kind) if kind != "list" else logits)

    def _sampling(self, do_sample: bool | None, options: dict[str, Any]) -> SamplingParams:
        """SamplingParams the way transformers reads generate() arguments over generation_config."""
        g = self.generation_config
        do_sample = g.do_sample if do_sample is None else bool(do_sample)
        repetition = options.pop("repetition_penalty", None)
        values: dict[str, Any] = {"repetition_penalty": g.repetition_penalty if repetition is None else repetition}
        seed = options.pop("seed", None)
        sampling_keys = ("temperature", "top_k", "top_p", "min_p")
        chosen = {k: options.pop(k) for k in sampling_keys if k in options}
        if do_sample:
            defaults = {"temperature": g.temperature, "top_k": g.top_k, "top_p": g.top_p, "min_p": g.min_p}
            for key in sampling_keys:
                value = chosen.get(key)
                values[key] = defaults[key] if value is None else value
            values["top_k"] = values["top_k"] or 0
            values["min_p"] = values["min_p"] or 0.0
            if values["temperature"] == 0:
                raise ValueError("do_sample=True needs a temperature > 0 (use do_sample=False for greedy decoding)")
        else:
            values["temperature"] = 0.0  # greedy: transformers ignores temperature/top_k/top_p here
        return SamplingParams(seed=seed, **values)

    def generate(self, input_ids: Any = None, *, max_new_tokens: int | None = None, max_length: int | None = None,
                 min_new_tokens: int | None = None, do_sample: bool | None = None,
                 eos_token_id: int | list[int] | None = None, stop_strings: str | list[str] | None = None,
                 streamer: Any = None, num_beams: int = 1, num_return_sequences: int = 1, **kwargs: Any) -> Any:
        """transformers-style generate: returns prompt + new ids [batch, prompt + new] in the container
        input_ids came in (numpy array, torch tensor or nested list).

        Supported: max_new_tokens / max_length, min_new_tokens, do_sample, temperature, top_k, top_p,
        min_p, repetition_penalty, eos_token_id, stop_strings (with tokenizer=), streamer (an object with
        put/end such as transformers' TextStreamer; batch 1), and seed= (an exaone_cpu extension: there is
        no torch.manual_seed to set). Structured output (exaone_cpu extensions, with tokenizer=):
        json_schema= (a dict, JSON text or pydantic model class), regex=, grammar= (llguidance's Lark
        syntax) or choices= constrain the new text, which ends where it is complete (exaone_cpu.constraints).
        Speculative decoding as transformers spells it: prompt_lookup_num_tokens= (with
        max_matching_ngram_size=, default 2) or assistant_model= (another exaone_cpu CausalLM with the
        same tokenizer); the output is the same, only faster (exaone_cpu.speculative).
        Defaults come from the checkpoint's generation_config.json. Rows of
        a batch are generated one after another; the shorter ones are padded with pad_token_id after
        their eos, as transformers does.
        """
        if input_ids is None:
            input_ids = kwargs.pop("inputs", None)
            if input_ids is None:
                raise ValueError("generate() needs input_ids")
        if num_beams != 1 or num_return_sequences != 1:
            raise NotImplementedError("beam search and num_return_sequences > 1 are not supported")
        tokenizer = kwargs.get("tokenizer")
        pad_token_id = kwargs.get("pad_token_id")
        attention_mask = kwargs.get("attention_mask")
        if attention_mask is not None and not np.all(np.asarray(_rows(attention_mask)[0]) == 1):
            raise ValueError("padded inputs (attention_mask with zeros) are not supported")
        sampling = self._sampling(do_sample, {k: kwargs.pop(k) for k in list(kwargs) if k in
                                              ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")})
        fmt = OutputFormat.create(**{k: kwargs.pop(k) for k in list(kwargs)
                                     if k in ("json_schema", "regex", "grammar", "choices")})
        speculative = self._speculative(kwargs.pop("prompt_lookup_num_tokens", None),
                                        kwargs.pop("max_matching_ngram_size", None), kwargs.pop("assistant_model", None))
        if fmt is not None and tokenizer is None:
            raise ValueError("json_schema / regex / grammar / choices need tokenizer= (as stop_strings do)")
        unknown = set(kwargs) - _IGNORED_GENERATE_OPTIONS
        if unknown:
            raise ValueError(f"generate() got unsupported arguments: {', '.join(sorted(unknown))}")
        rows, kind = _rows(input_ids)
        if streamer is not None and len(rows) > 1:
            raise ValueError("a streamer can only be used with a batch of one")

        g = self.generation_config
        if eos_token_id is None:
            eos_token_id = g.eos_token_ids or list(self.config.eos_token_ids)
        eos = [eos_token_id] if isinstance(eos_token_id, (int, np.integer)) else list(eos_token_id or [])
        if stop_strings is not None:
            if tokenizer is None:
                raise ValueError("stop_strings needs tokenizer= (as in transformers)")
            stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)

        outputs = []
        for row in rows:
            if max_new_tokens is not None:
                budget = max_new_tokens
            else:
                budget = max((max_length if max_length is not None else g.max_length) - len(row), 0)
            constraint = None
            if fmt is not None:
                grammar = build_grammar(fmt, token_ids=marker_token_ids(tokenizer))
                constraint = TokenConstraint(tokenizer, grammar, self.config.vocab_size, eos)
            outputs.append(self._generate_row(row, budget, sampling, eos, min_new_tokens or 0,
                                              stop_strings, tokenizer, streamer, constraint, speculative))
            sampling = dataclasses.replace(sampling, seed=None if sampling.seed is None else sampling.seed + 1)

        width = max(len(o) for o in outputs)
        pad = pad_token_id if pad_token_id is not None else g.pad_token_id
        if pad is None:
            pad = self.config.pad_token_id if self.config.pad_token_id is not None else (eos[0] if eos else 0)
        batch = np.full((len(outputs), width), pad, np.int64)
        for i, o in enumerate(outputs):
            batch[i, : len(o)] = o
        return _same_kind(batch, input_ids, kind)

    def _speculative(self, lookup_tokens: Any, ngram: Any, assistant: Any) -> Speculative | None:
        """transformers' speculative options as a Speculative (None: the model's default)."""
        if lookup_tokens is not None and assistant is not None:
            raise ValueError("pass prompt_lookup_num_tokens or assistant_model, not both")
        if ngram is not None and lookup_tokens is None:
            raise ValueError("max_matching_ngram_size needs prompt_lookup_num_tokens")
        if lookup_tokens is not None:
            return Speculative(PROMPT_LOOKUP, num_tokens=lookup_tokens, ngram_max=2 if ngram is None else ngram,
                               ngram_min=1)
        if assistant is not None:
            draft = getattr(assistant, "model", None)
            if not isinstance(draft, Model):
                raise ValueError("assistant_model must be an exaone_cpu CausalLM (AutoModelForCausalLM.from_pretrained)")
            return speculative_config(draft, self.model)
        return self.model.speculative

    def _generate_row(self, row: np.ndarray, max_new_tokens: int, sampling: SamplingParams, eos: list[int],
                      min_new_tokens: int, stop_strings: list[str] | None, tokenizer: Any, streamer: Any,
                      constraint: TokenConstraint | None, speculative: Speculative | None) -> np.ndarray:
        room = self.config.max_position_embeddings - len(row)
        stream = TokenStream(self.model, row, max_new_tokens=min(max_new_tokens, room), sampling=sampling,
                             stop_token_ids=eos, min_new_tokens=min_new_tokens, constraint=constraint,
                             speculative=speculative)
        if streamer is not None:
            streamer.put(row[None, :])
        detok = IncrementalDetokenizer(tokenizer) if stop_strings else None
        stops = StopMatcher(stop_strings or ())
        for token in stream:
            if streamer is not None:
                streamer.put(np.array([token], np.int64))
            if detok is not None:
                # Like transformers' StopStringCriteria: stop (keeping the ids) once a stop string is complete.
                stops.feed(detok.add(token))
                if stops.matched is not None:
                    stream.stop()
        if streamer is not None:
            streamer.end()
        return stream.token_ids.copy()

    def __repr__(self) -> str:
        return f"CausalLM({self.name_or_path!r}, exaone_cpu)"
