"""Generation with a tokenizer: text streams, results, the Generator and multi-turn chat.

Built on the token side (decoding.TokenStream: prefill, sampling, stop token ids, max_new_tokens,
timings; Model.generate uses it alone) and the text side (streaming.TextPipeline):

    GenerationStream  text pieces out of a TokenStream: incremental detokenization (a Korean syllable
                      or an emoji is never split), stop strings, and at the end a GenerationResult with
                      the parsed reasoning / answer / tool calls.
    ChatSession       a multi-turn conversation that keeps the KV cache of the last turn (PromptCache),
                      so a follow-up only computes the tokens after the shared prefix.

    gen = Generator(model, tokenizer)
    stream = gen.stream(prompt_ids, temperature=0.6, top_p=0.95, max_new_tokens=256)
    for piece in stream:
        print(piece, end="", flush=True)
    stream.result.output.content, stream.result.finish_reason, stream.result.cached_tokens
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from .constraints import OutputFormat, TokenConstraint, make_constraint, tool_choice_name
from .decoding import (
    FINISH_ABORT,
    FINISH_STOP,
    FINISH_TOOL_CALLS,
    PromptCache,
    TokenStream,
    eos_token_ids,
)
from .hub import resolve_model
from .loading import load
from .parsing import Conversation, ParsedOutput
from .speculative import speculative_config
from .sampling import (
    GenerationDefaults,
    SamplingParams,
    load_generation_config,
)
from .streaming import TextPipeline
from .tokenizer import Tokenizer

if TYPE_CHECKING:
    from .model import Model


THINK_START = "<think>"
THINK_END = "</think>"

_SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingParams))
_FORMAT_OPTIONS = frozenset(("json_schema", "regex", "grammar", "choices"))


@dataclass(frozen=True)
class GenerationParams:
    """How long to generate and when to stop; `sampling` says how each token is picked.

    max_new_tokens None: until a stop, or until the context (max_position_embeddings) is full.
    stop_token_ids None: the model's eos ids (config.json and generation_config.json); () never stops
    on a token. Stop tokens end generation but are not part of the text; stop strings end it and cut
    the text where they begin. min_new_tokens forbids the stop tokens until that many were generated.
    output_format (from the options json_schema=, regex=, grammar=, choices=) constrains the answer,
    tool_choice and parallel_tool_calls the tool calls (exaone_cpu.constraints; needs llguidance).
    """

    max_new_tokens: int | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_token_ids: tuple[int, ...] | None = None
    stop_strings: tuple[str, ...] = ()
    min_new_tokens: int = 0
    skip_special_tokens: bool = False
    output_format: OutputFormat | None = None
    tool_choice: str | dict = "auto"
    parallel_tool_calls: bool = True

    def __post_init__(self) -> None:
        tool_choice_name(self.tool_choice)  # a bad one is an error now
        for name in ("max_new_tokens", "min_new_tokens"):
            value = getattr(self, name)
            if value is None and name == "max_new_tokens":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if isinstance(self.stop_strings, str):
            object.__setattr__(self, "stop_strings", (self.stop_strings,))
        object.__setattr__(self, "stop_strings", tuple(s for s in self.stop_strings if s))
        if self.stop_token_ids is not None:
            ids = (self.stop_token_ids,) if isinstance(self.stop_token_ids, (int, np.integer)) else self.stop_token_ids
            object.__setattr__(self, "stop_token_ids", tuple(int(i) for i in ids))

    @classmethod
    def create(cls, defaults: GenerationDefaults | None = None, **options: Any) -> GenerationParams:
        """Params from keyword options naming fields of GenerationParams or SamplingParams (temperature=,
        top_p=, seed= ...); options that are None are left at their default.

        With `defaults` (a checkpoint's generation_config.json, see sampling.load_generation_config) its
        sampling settings (applied as transformers does: greedy unless do_sample or a temperature is
        given), max_new_tokens and stop strings are the starting point (its max_length, transformers'
        total-length limit, is not used). Its eos ids join config.json's as stop tokens in Generator.
        """
        unknown = set(options) - _SAMPLING_FIELDS - _FORMAT_OPTIONS - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown generation options: {', '.join(sorted(unknown))}")
        fmt = OutputFormat.create(**{k: options.pop(k) for k in list(options) if k in _FORMAT_OPTIONS})
        if fmt is not None:
            if options.get("output_format") is not None:
                raise TypeError("pass either output_format= or json_schema= / regex= / grammar= / choices=, not both")
            options["output_format"] = fmt
        sampling_options = {k: options.pop(k) for k in list(options) if k in _SAMPLING_FIELDS}
        options = {k: v for k, v in options.items() if v is not None}
        if "sampling" in options and any(v is not None for v in sampling_options.values()):
            raise TypeError("pass either sampling=SamplingParams(...) or sampling keywords, not both")
        if "sampling" not in options:
            if defaults is not None:
                options["sampling"] = defaults.sampling_params(**sampling_options)
            else:
                options["sampling"] = SamplingParams(**{k: v for k, v in sampling_options.items() if v is not None})
        if defaults is not None:
            if "max_new_tokens" not in options and defaults.max_new_tokens is not None:
                options["max_new_tokens"] = defaults.max_new_tokens
            if "stop_strings" not in options and defaults.stop_strings:
                options["stop_strings"] = tuple(defaults.stop_strings)
        return cls(**options)


# ---- text ---------------------------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    """One finished generation. `text` is exactly the concatenation of the streamed pieces: the decoded
    new tokens without the stop token, cut before a stop string. `token_ids` are every generated id,
    including a final stop token."""

    text: str
    token_ids: list[int]
    output: ParsedOutput
    finish_reason: str
    stop: int | str | None  # the stop token id or stop string that ended generation
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens taken from the prompt cache instead of computed
    prefill_seconds: float  # computing the prompt and picking the first token (time to first token)
    decode_seconds: float  # every later token
    draft_tokens: int | None = None  # speculative decoding: guessed tokens the model checked (None: off)
    accepted_draft_tokens: int = 0  # ... and kept

    @property
    def acceptance(self) -> float | None:
        """The share of guessed tokens kept (None: no speculation, or nothing guessed)."""
        return self.accepted_draft_tokens / self.draft_tokens if self.draft_tokens else None

    @property
    def prefill_tokens_per_second(self) -> float:
        computed = self.prompt_tokens - self.cached_tokens
        return computed / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        steps = self.completion_tokens - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else 0.0

    @property
    def usage(self) -> dict[str, Any]:
        """OpenAI-style token counts."""
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }
        if self.draft_tokens is not None:  # OpenAI's names for guessed tokens kept / dropped
            usage["completion_tokens_details"] = {
                "accepted_prediction_tokens": self.accepted_draft_tokens,
                "rejected_prediction_tokens": self.draft_tokens - self.accepted_draft_tokens,
            }
        return usage

    def summary(self) -> str:
        drafts = "" if self.draft_tokens is None else f"drafted={self.draft_tokens} accepted={self.accepted_draft_tokens} "
        return (
            f"prompt={self.prompt_tokens} cached={self.cached_tokens} completion={self.completion_tokens} "
            f"prefill={self.prefill_seconds:.3f}s ({self.prefill_tokens_per_second:.1f} tok/s) "
            f"decode={self.decode_seconds:.3f}s ({self.decode_tokens_per_second:.1f} tok/s) {drafts}"
            f"finish={self.finish_reason}"
        )


class GenerationStream:
    """Iterator over the text of one generation, piece by piece as tokens arrive; `result` once done.

    Text that might be the start of a stop string is held back until it is known not to be one, so no
    piece ever has to be taken back: "".join(pieces) == result.text. The text side is a
    streaming.TextPipeline, the same one the server uses.
    """

    def __init__(self, tokens: TokenStream, tokenizer: Tokenizer, *, stop_strings: Sequence[str] = (),
                 skip_special_tokens: bool = False, thinking: bool = False,
                 on_finish: Callable[[GenerationResult], None] | None = None):
        self.tokens = tokens
        self.tokenizer = tokenizer
        self.thinking = thinking
        self.pipeline = TextPipeline(tokenizer, stop_strings=stop_strings, skip_special_tokens=skip_special_tokens,
                                     thinking=thinking)
        self._queue: deque[str] = deque()
        self._on_finish = on_finish
        self.result: GenerationResult | None = None
        if tokens.finished:
            self._finish()

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self.pipeline.stops.stop_strings

    @property
    def text(self) -> str:
        """The text emitted so far."""
        return self.pipeline.text

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> str:
        while not self._queue:
            if self.result is not None:
                raise StopIteration
            self._step()
        return self._queue.popleft()

    def deltas(self) -> Iterator[tuple[str, Any]]:
        """The parsed stream instead of the raw pieces: ("reasoning", text), ("content", text) and
        ("tool_call", call) as they complete; they add up to result.output."""
        while self.result is None:
            self._step()
            self._queue.clear()
            yield from self.pipeline.take_deltas()
        yield from self.pipeline.take_deltas()

    def _step(self) -> None:
        token = next(self.tokens)
        if self.tokens.stop_token is None:  # stop tokens are not text
            self._emit(self.pipeline.add(token))
            if self.pipeline.stopped:
                self.tokens.stop(FINISH_STOP)
        if self.tokens.finished:
            self._finish()

    def _emit(self, piece: str) -> None:
        if piece:
            self._queue.append(piece)

    def close(self) -> GenerationResult:
        """Stops generating (finish_reason "abort" unless it had already finished) and returns the result."""
        if self.result is None:
            self.tokens.stop(FINISH_ABORT)
            self._finish()
        return self.result

    def _finish(self) -> None:
        pipeline, tokens = self.pipeline, self.tokens
        self._emit(pipeline.finish())
        output = pipeline.output
        reason = tokens.finish_reason or FINISH_ABORT
        if reason == FINISH_STOP and output.tool_calls:
            reason = FINISH_TOOL_CALLS
        self.result = GenerationResult(
            text=pipeline.text,
            token_ids=tokens.new_token_ids.tolist(),
            output=output,
            finish_reason=reason,
            stop=pipeline.stop_string if pipeline.stop_string is not None else tokens.stop_token,
            prompt_tokens=tokens.prompt_tokens,
            completion_tokens=tokens.completion_tokens,
            cached_tokens=tokens.cached_tokens,
            prefill_seconds=tokens.prefill_seconds,
            decode_seconds=tokens.decode_seconds,
            draft_tokens=None if tokens.speculator is None else tokens.draft_tokens,
            accepted_draft_tokens=tokens.accepted_draft_tokens,
        )
        if self._on_finish is not None:
            self._on_finish(self.result)

    def until_done(self) -> GenerationResult:
        for _ in self:
            pass
        return self.result


class Generator:
    """Generates text with one model and its tokenizer.

    defaults: a checkpoint's generation_config.json (sampling.load_generation_config) used as the starting
    point of every call's options; without it calls decode greedily unless told otherwise. The stop
    tokens default to the eos ids of config.json and generation_config.json.
    speculative: speculative decoding for every call (exaone_cpu.speculative): "prompt-lookup", a
    draft Model or its path, a Speculative, or "off"; None: the model's (load(speculative=...)).
    """

    def __init__(self, model: Model, tokenizer: Tokenizer, *, defaults: GenerationDefaults | None = None,
                 speculative: Any = None):
        self.model = model
        self.tokenizer = tokenizer
        self.defaults = defaults
        self.eos_token_ids = eos_token_ids(model.config, defaults, tokenizer)
        self.speculative = (getattr(model, "speculative", None) if speculative is None
                            else speculative_config(speculative, model, loader=self._load_draft))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, use_generation_config: bool = True, gguf: str | None = None,
                        local_files_only: bool | None = None, **load_options: Any) -> Generator:
        """Model, tokenizer and (unless use_generation_config=False) generation defaults from one
        directory, GGUF file or Hub repo id (gguf= and local_files_only= as for exaone_cpu.load)."""
        path = resolve_model(path, gguf=gguf, local_files_only=local_files_only)
        model = load(path, **load_options)
        defaults = load_generation_config(path) if use_generation_config else None
        return cls(model, Tokenizer.from_pretrained(path), defaults=defaults)

    def _load_draft(self, path: Any) -> Model:
        """A draft model given by its path: loaded with this model's KV cache type."""
        return load(path, kv_dtype=getattr(self.model, "kv_dtype", "f32"))

    def params(self, params: GenerationParams | None = None, **options: Any) -> GenerationParams:
        """`params` as given, or built from the keyword options over this generator's defaults."""
        if params is not None:
            if options:
                raise TypeError("pass either params= or keyword options, not both")
            return params
        return GenerationParams.create(self.defaults, **options)

    def encode_chat(self, messages: Any, *, tools: list[dict] | None = None, enable_thinking: bool = False,
                    **template_options: Any) -> list[int]:
        """Prompt ids of a conversation, ending with the assistant's turn opening."""
        return self.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=True,
            enable_thinking=enable_thinking, **template_options,
        )

    def prompt_opens_reasoning(self, prompt_ids: Sequence[int] | np.ndarray) -> bool:
        """Whether the prompt ends inside an open <think> block (enable_thinking=True)."""
        tail = self.tokenizer.decode(list(prompt_ids[-4:]))
        return tail.rstrip().endswith(THINK_START)

    def constraint(self, params: GenerationParams, *, thinking: bool = False, tools: Sequence[dict] | None = None,
                   stop_token_ids: Sequence[int] = ()) -> TokenConstraint | None:
        """The TokenConstraint a generation with these params follows, or None (constraints.make_constraint)."""
        return make_constraint(self.tokenizer, self.model.config.vocab_size, params.output_format,
                               thinking=thinking, tools=tools, tool_choice=params.tool_choice,
                               parallel_tool_calls=params.parallel_tool_calls, stop_token_ids=stop_token_ids)

    def stream(self, prompt_ids: Sequence[int] | np.ndarray, params: GenerationParams | None = None, *,
               prompt_cache: PromptCache | None = None, thinking: bool | None = None,
               tools: Sequence[dict] | None = None, on_finish: Callable[[GenerationResult], None] | None = None,
               on_prefill: Callable[[int, int], None] | None = None, speculative: Any = None,
               **options: Any) -> GenerationStream:
        """Streams the continuation of prompt_ids. thinking: whether the prompt opened a reasoning block,
        for parsing and constraints (None: looked up in the prompt's last tokens). tools: the tools the
        prompt offers (encode_chat's), whose calls are constrained (see constraint()). on_prefill(done,
        total): called as the prompt's tokens are computed, chunk by chunk (a long prompt takes seconds).
        speculative: this call's speculative decoding (None: the generator's; see Generator)."""
        params = self.params(params, **options)
        spec = self.speculative if speculative is None else speculative_config(speculative, self.model,
                                                                                 loader=self._load_draft)
        ids = self.model.check_token_ids(prompt_ids)
        stops = self.eos_token_ids if params.stop_token_ids is None else params.stop_token_ids
        if thinking is None:
            thinking = self.prompt_opens_reasoning(ids)
        constraint = self.constraint(params, thinking=thinking, tools=tools, stop_token_ids=stops)
        tokens = TokenStream(
            self.model, ids, max_new_tokens=params.max_new_tokens, sampling=params.sampling,
            stop_token_ids=stops, min_new_tokens=params.min_new_tokens, prompt_cache=prompt_cache,
            on_prefill=on_prefill, constraint=constraint, speculative=spec,
        )
        return GenerationStream(
            tokens, self.tokenizer, stop_strings=params.stop_strings,
            skip_special_tokens=params.skip_special_tokens, thinking=thinking, on_finish=on_finish,
        )

    def generate(self, prompt_ids: Sequence[int] | np.ndarray, params: GenerationParams | None = None,
                 **options: Any) -> GenerationResult:
        return self.stream(prompt_ids, params, **options).until_done()


class ChatSession:
    """A conversation with the model that reuses the KV cache of the previous turn.

        chat = ChatSession(generator, system="You are terse.")
        for piece in chat.send("Hi!"):
            print(piece, end="")
        chat.thinking = True               # reasoning mode from the next turn on
        result = chat.send("And now?").until_done()

    Each reply is added to the conversation when its stream finishes (a stream left unfinished is
    closed, keeping the partial reply, when the next message is sent). Options given to the session
    apply to every turn; options given to send() to that turn (json_schema=, tool_choice= ... too).
    """

    def __init__(self, generator: Generator, *, system: str | None = None, tools: list[dict] | None = None,
                 thinking: bool = False, speculative: Any = None, **options: Any):
        self.generator = generator
        # speculative decoding for every turn (None: the generator's; see Generator)
        self.speculative = generator.speculative if speculative is None else speculative_config(
            speculative, generator.model, loader=generator._load_draft)
        self.system = system
        self.tools = tools
        self.thinking = thinking
        self.options = options
        self.prompt_cache = PromptCache(generator.model)
        self.conversation = Conversation(system=system)
        self._stream: GenerationStream | None = None
        self.last_result: GenerationResult | None = None

    def clear(self) -> None:
        """Forgets the conversation (the system prompt stays). The cache is kept: the next prompt still
        shares its beginning with it."""
        self._close_pending()
        self.conversation = Conversation(system=self.system)

    def _close_pending(self) -> None:
        if self._stream is not None and self._stream.result is None:
            self._stream.close()
        self._stream = None

    def send(self, content: str, **options: Any) -> GenerationStream:
        self._close_pending()
        self.conversation.add_user(content)
        return self._generate(options)

    def add_tool_result(self, result: Any, tool_call_id: str | None = None, name: str | None = None,
                        **options: Any) -> GenerationStream | None:
        """Adds a tool's result; generates the follow-up unless generate=False is passed."""
        generate = options.pop("generate", True)
        self._close_pending()
        self.conversation.add_tool_result(result, tool_call_id, name)
        return self._generate(options) if generate else None

    def _generate(self, options: dict[str, Any]) -> GenerationStream:
        thinking = self.thinking
        ids = self.generator.encode_chat(self.conversation.messages, tools=self.tools, enable_thinking=thinking)

        def record(result: GenerationResult) -> None:
            self.conversation.add_assistant(result.output)
            self.last_result = result

        self._stream = self.generator.stream(
            ids, prompt_cache=self.prompt_cache, thinking=thinking, tools=self.tools, on_finish=record,
            **{"speculative": self.speculative or "off", **self.options, **options},
        )
        return self._stream
