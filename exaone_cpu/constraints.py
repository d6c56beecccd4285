"""Structured output: the text a sequence may produce, enforced token by token with llguidance.

    fmt = OutputFormat.create(json_schema={"type": "object", ...})     # or regex= / grammar= / choices=
    grammar = build_grammar(fmt, thinking=False, tools=None, tool_choice="auto", token_ids=...)
    constraint = TokenConstraint(tokenizer, grammar, vocab_size, stop_token_ids)
    mask = constraint.mask()          # uint32 bitmask of the allowed ids, bit t of word t // 32
    constraint.consume(token)         # then the next mask is computed on a worker thread

What is constrained, in the order the model writes it (EXAONE 4.0's chat template):
  * with thinking, the reasoning after the prompt's "<think>\\n" is free text (it cannot spell
    "</think>" out of pieces), ended by the </think> token; the answer's constraint starts after it;
  * the answer: the OutputFormat (a JSON schema, any JSON object, a regex, a Lark grammar of
    llguidance's syntax, or one of a list of strings), or free text;
  * tools: a call is `<tool_call>{"name": NAME, "arguments": ARGS}</tool_call>` (the special tokens
    around a JSON object, as the template renders calls), NAME one of the tools and ARGS valid for its
    `parameters` schema; several calls are separated by "\\n" (the template's) or nothing. tool_choice "auto": text (which cannot
    spell "<tool_call>" out of pieces) then optionally calls, or the OutputFormat's answer or calls;
    "required": one or more calls; {"type": "function", "function": {"name": N}}: one call of N;
    "none": no call. parallel_tool_calls=False allows one call at most.
JSON is written as json.dumps writes it (", " and ": ", no other whitespace) unless the schema's own
"x-guidance" options say otherwise. The stop tokens are allowed exactly where the grammar may end,
and when it can go no further the sequence is finished (TokenConstraint.done).

llguidance is an optional dependency (`pip install "exaone_cpu[structured]"`); without it asking
for a constraint is an error that says how to install it.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

INSTALL_HINT = 'structured output needs llguidance: pip install "exaone_cpu[structured]"'

# EXAONE 4.0's added tokens around reasoning and tool calls (tokenizer_config.json)
THINK_END = "</think>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"

# JSON as json.dumps and the chat template's tojson write it; no free whitespace, which a model (a
# small or random one especially) could otherwise fill without end
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANSWER_SPACE = r"[ \t\r\n]{0,4}"  # between </think> and the answer (the template writes "\n\n")


class ConstraintError(ValueError):
    """An invalid schema, regex, grammar or tool definition; the message names the option."""


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise ConstraintError(INSTALL_HINT) from None
    return llguidance


def llguidance_available() -> bool:
    try:
        import llguidance  # noqa: F401
    except ImportError:
        return False
    return True


# ---- what to constrain ------------------------------------------------------------------------------------------


FORMATS = ("json_schema", "json_object", "regex", "grammar", "choices")


@dataclass(frozen=True)
class OutputFormat:
    """The answer's form: kind is one of FORMATS; value the schema (a dict), the regex, the Lark
    grammar or the list of choices (None for json_object: any JSON object)."""

    kind: str
    value: Any = None

    @classmethod
    def create(cls, *, json_schema: Any = None, regex: str | None = None, grammar: str | None = None,
               choices: Sequence[str] | None = None) -> OutputFormat | None:
        """At most one of the options; None when none is given. json_schema: a dict, a JSON string or
        a pydantic model class (its model_json_schema())."""
        given = {name: value for name, value in (("json_schema", json_schema), ("regex", regex), ("grammar", grammar),
                                                   ("choices", choices)) if value is not None}
        if len(given) > 1:
            raise ConstraintError(f"give at most one of json_schema, regex, grammar, choices; got {', '.join(given)}")
        if not given:
            return None
        kind, value = next(iter(given.items()))
        if kind == "json_schema":
            return cls(kind, schema_dict(value, "json_schema"))
        if kind in ("regex", "grammar"):
            if not isinstance(value, str) or not value:
                raise ConstraintError(f"{kind} must be a non-empty string")
            return cls(kind, value)
        if isinstance(value, str) or not isinstance(value, Sequence) or not value \
                or not all(isinstance(c, str) and c for c in value):
            raise ConstraintError("choices must be a non-empty list of non-empty strings")
        return cls(kind, tuple(value))


def schema_dict(schema: Any, where: str) -> dict:
    """A JSON schema given as a dict, a JSON string or a pydantic model class, as a dict."""
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        schema = schema.model_json_schema()
    elif isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except (ValueError, RecursionError) as e:
            raise ConstraintError(f"{where} is not valid JSON: {e}") from None
    if isinstance(schema, bool):  # true / false are JSON schemas too
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, dict):
        raise ConstraintError(f"{where} must be a JSON schema object (a dict, a JSON string or a pydantic model "
                              f"class), got {type(schema).__name__}")
    return schema


TOOL_CHOICES = ("auto", "required", "none")


def _tool_name(tool: Any, i: int) -> tuple[str, dict]:
    where = f"tools[{i}]"
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ConstraintError(f"{where} must be a function with a name ({{'type': 'function', 'function': "
                              f"{{'name': ..., 'parameters': ...}}}})")
    params = fn.get("parameters")
    schema = {"type": "object"} if params is None else schema_dict(params, f"{where}.function.parameters")
    return fn["name"], schema


def tool_choice_name(tool_choice: Any) -> str | None:
    """The forced function's name of an OpenAI function choice, None for the string modes."""
    if isinstance(tool_choice, str):
        if tool_choice not in TOOL_CHOICES:
            raise ConstraintError(f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or a function choice, "
                                  f"got {tool_choice!r}")
        return None
    fn = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ConstraintError("tool_choice must be 'auto', 'required', 'none' or "
                              "{'type': 'function', 'function': {'name': ...}}")
    return fn["name"]


# ---- the grammar ------------------------------------------------------------------------------------------------


def _regex_char(ch: str) -> str:
    return f"\\x{ord(ch):02X}" if ord(ch) < 0x80 and not ch.isalnum() else ch


def text_without(word: str) -> str:
    """A regex (Rust syntax, no lookaround) for every string that does not contain `word`, whose first
    character must not occur again in it. A '<' opens a partial match: it is followed by a proper prefix
    of the rest and then a character that breaks the match, by another '<', or by the end."""
    first, rest = word[0], word[1:]
    if first in rest or not rest:
        raise ValueError(f"text_without needs a word whose first character does not recur: {word!r}")
    f = _regex_char(first)
    prefixes = "|".join(["", *("".join(_regex_char(c) for c in rest[:i]) for i in range(1, len(rest)))])
    breaks = "|".join("".join(_regex_char(c) for c in rest[:i]) + f"[^{_regex_char(rest[i])}{f}]"
                      for i in range(len(rest)))
    return f"([^{f}]|{f}(({prefixes}){f})*({breaks}))*({f}(({prefixes}){f})*({prefixes}))?"


def _answer_grammar(fmt: OutputFormat) -> dict:
    """The OutputFormat as one named llguidance grammar ("answer")."""
    llg = _llguidance()
    if fmt.kind in ("json_schema", "json_object"):
        schema = fmt.value if fmt.kind == "json_schema" else {"type": "object"}
        entry = json.loads(llg.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS))["grammars"][0]
    elif fmt.kind == "regex":
        entry = json.loads(llg.LLMatcher.grammar_from_regex(fmt.value))["grammars"][0]
    elif fmt.kind == "grammar":  # Lark, or llama.cpp's GBNF converted to it
        try:
            entry = {"lark_grammar": _gbnf_to_lark(fmt.value)}
        except Exception as e:  # noqa: BLE001 - the converter's own errors, whatever their type
            raise ConstraintError(f"grammar: {e}") from None
    else:
        entry = {"lark_grammar": "start: " + " | ".join(json.dumps(c, ensure_ascii=False) for c in fmt.value)}
    entry["name"] = "answer"
    return entry


def _gbnf_to_lark(text: str) -> str:
    from llguidance.gbnf_to_lark import any_to_lark  # Lark passes through unchanged

    return any_to_lark(text)


def build_grammar(fmt: OutputFormat | None, *, thinking: bool = False, tools: Sequence[dict] | None = None,
                  tool_choice: Any = "auto", parallel_tool_calls: bool = True,
                  token_ids: dict[str, int]) -> str | None:
    """The llguidance grammar (its JSON form) for one generation, or None when nothing is constrained.

    token_ids: the ids of THINK_END, TOOL_CALL_START and TOOL_CALL_END in the model's vocabulary.
    Tools are constrained unless tool_choice is "none" (no call can be written then)."""
    forced = tool_choice_name(tool_choice)
    tools = list(tools or [])
    if tool_choice == "none":
        tools = []
    elif (forced is not None or tool_choice == "required") and not tools:
        raise ConstraintError(f"tool_choice {tool_choice!r} needs tools")
    if fmt is None and not tools and tool_choice != "none":
        return None
    grammars: list[dict] = [{}]
    rules = ["%llguidance {}"]
    if fmt is not None:
        grammars.append(_answer_grammar(fmt))
        answer = "@answer"
    else:  # free text that cannot spell the tool-call marker out of pieces
        rules.append(f"TEXT: /{text_without(TOOL_CALL_START)}/")
        answer = "TEXT"
    if tools:
        named = [_tool_name(tool, i) for i, tool in enumerate(tools)]
        if forced is not None:
            matching = [(n, s) for n, s in named if n == forced]
            if not matching:
                raise ConstraintError(f"tool_choice names the function {forced!r}, which is not among the tools "
                                      f"({', '.join(n for n, _ in named)})")
            named = matching[:1]
        calls = [{"type": "object", "properties": {"name": {"const": n}, "arguments": s},
                  "required": ["name", "arguments"], "additionalProperties": False} for n, s in named]
        call_schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
        entry = json.loads(_llguidance().LLMatcher.grammar_from_json_schema(call_schema, defaults=JSON_OPTIONS))
        grammars.append({**entry["grammars"][0], "name": "call"})
        rules.append(f"call: <[{token_ids[TOOL_CALL_START]}]> @call <[{token_ids[TOOL_CALL_END]}]>")
        rules.append('calls: call ("\\n"? call)*' if parallel_tool_calls else "calls: call")
        if forced is not None:
            body = "call"
        elif tool_choice == "required":
            body = "calls"
        elif fmt is None:
            body = "TEXT calls?"
        else:
            body = "answer | calls"
            rules.append(f"answer: {answer}")
    else:
        body = answer
    if thinking:
        rules.append(f"REASONING: /{text_without(THINK_END)}/")
        rules.append(f"SPACE: /{ANSWER_SPACE}/")
        rules.append(f"start: REASONING <[{token_ids[THINK_END]}]> SPACE {body}")
    else:
        rules.append(f"start: {body}")
    grammars[0] = {"name": "start", "lark_grammar": "\n".join(rules)}
    return json.dumps({"grammars": grammars}, ensure_ascii=False)


# ---- enforcing it -----------------------------------------------------------------------------------------------


_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_VOCABULARIES_LOCK = threading.Lock()


def guide_vocabulary(tokenizer: Any, vocab_size: int) -> Any:
    """llguidance's view of the tokenizer (its token trie), built once per tokenizer (~0.6 s for
    EXAONE's 102400 tokens) from the backend's tokenizer.json, added tokens included."""
    llg = _llguidance()
    with _VOCABULARIES_LOCK:
        per_size = _VOCABULARIES.setdefault(tokenizer, {})
        vocab = per_size.get(vocab_size)
        if vocab is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            vocab = llg.LLTokenizer(tokenizer.backend.to_str(), n_vocab=vocab_size, eos_token=eos)
            per_size[vocab_size] = vocab
    return vocab


def marker_token_ids(tokenizer: Any) -> dict[str, int]:
    """The ids of the reasoning and tool-call markers; ConstraintError if the vocabulary lacks one."""
    ids = {}
    for marker in (THINK_END, TOOL_CALL_START, TOOL_CALL_END):
        token = tokenizer.convert_tokens_to_ids(marker)
        if token is None or tokenizer.encode(marker, add_special_tokens=False) != [token]:
            raise ConstraintError(f"the tokenizer has no single token for {marker!r}: structured output needs "
                                  f"EXAONE 4.0's vocabulary")
        ids[marker] = int(token)
    return ids


def make_constraint(tokenizer: Any, vocab_size: int, fmt: OutputFormat | None, *, thinking: bool = False,
                    tools: Sequence[dict] | None = None, tool_choice: Any = "auto", parallel_tool_calls: bool = True,
                    stop_token_ids: Iterable[int] = ()) -> TokenConstraint | None:
    """The TokenConstraint of one generation, or None when nothing is constrained: `fmt` for the
    answer (after the reasoning when `thinking`), tool_choice for calls of `tools`. With tool_choice
    "auto" calls are constrained when llguidance is installed (and only parsed when it is not)."""
    optional = fmt is None and tool_choice == "auto"  # nothing asked for: constrain calls where we can
    if optional and (not tools or not llguidance_available()):
        return None
    try:
        markers = marker_token_ids(tokenizer)
    except ConstraintError:
        if optional:
            return None
        raise
    grammar = build_grammar(fmt, thinking=thinking, tools=tools, tool_choice=tool_choice,
                            parallel_tool_calls=parallel_tool_calls, token_ids=markers)
    if grammar is None:
        return None
    return TokenConstraint(tokenizer, grammar, vocab_size, stop_token_ids)


_MASK_WORKER: ThreadPoolExecutor | None = None
_MASK_WORKER_LOCK = threading.Lock()


def _mask_worker() -> ThreadPoolExecutor:
    global _MASK_WORKER
    with _MASK_WORKER_LOCK:
        if _MASK_WORKER is None:
            _MASK_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exaone-cpu-mask")
        return _MASK_WORKER


class TokenConstraint:
    """One sequence's grammar state (an llguidance matcher) and its next-token mask.

    The mask of the next position is computed on a worker thread as soon as a token is consumed, so
    that it overlaps the forward pass of that token (llguidance releases the GIL); mask() waits for it.
    stop_token_ids are allowed exactly when the grammar accepts what was written; `done` says the
    grammar can take nothing more, and the sequence ends there.
    """

    def __init__(self, tokenizer: Any, grammar: str, vocab_size: int, stop_token_ids: Iterable[int] = ()):
        llg = _llguidance()
        vocabulary = guide_vocabulary(tokenizer, vocab_size)
        # an invalid schema, regex or grammar leaves the matcher in its error state, with the reason
        self.matcher = llg.LLMatcher(vocabulary, grammar, log_level=0)
        if self.matcher.is_error():
            raise ConstraintError(f"invalid structured-output constraint: {self.matcher.get_error().strip()}")
        self.vocab_size = vocab_size
        self.stop_token_ids = tuple(sorted({int(t) for t in stop_token_ids if 0 <= int(t) < vocab_size}))
        # llguidance allows its tokenizer's eos where the grammar may end; the stop tokens are ours to say
        eos = getattr(vocabulary, "eos_token", None)
        self._foreign_eos = eos if eos is not None and 0 <= eos < vocab_size and eos not in self.stop_token_ids \
            else None
        self._bits = np.zeros((vocab_size + 31) // 32, np.int32)
        self._pending: Future | None = None
        self.mask_seconds = 0.0  # time spent computing masks (on the worker)
        self.wait_seconds = 0.0  # time the sampling thread waited for a mask (what the overlap did not hide)
        self.masks = 0
        self._advanced()

    def _compute(self) -> None:  # on the worker; the main thread waits for it before touching the matcher
        start = time.perf_counter()
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        words = self._bits.view(np.uint32)
        # the grammar's own end-of-sequence bit is replaced by ours: the stop tokens where it may end
        for t, allowed in ([(self._foreign_eos, False)] if self._foreign_eos is not None else []) + \
                [(t, self.accepting) for t in self.stop_token_ids]:
            bit = np.uint32(1 << (t & 31))
            words[t >> 5] = (words[t >> 5] | bit) if allowed else (words[t >> 5] & ~bit)
        self.mask_seconds += time.perf_counter() - start
        self.masks += 1

    def _advanced(self) -> None:
        # read here, not on the worker's time: the matcher is used by one thread at a time
        self.done = self.matcher.is_stopped()  # the grammar can take no more tokens: the output is complete
        self.accepting = self.matcher.is_accepting()  # what was written is a complete output
        if not self.done:
            self._pending = _mask_worker().submit(self._compute)

    def mask(self) -> np.ndarray:
        """The allowed ids of the next position: a uint32 bitmask (a view, valid until consume())."""
        if self._pending is None:
            raise RuntimeError("the constraint is done: no further token is allowed")
        start = time.perf_counter()
        self._pending.result()
        self.wait_seconds += time.perf_counter() - start
        return self._bits.view(np.uint32)

    def consume(self, token: int) -> None:
        """Advances the grammar by a sampled token (a stop token ends the sequence: not consumed)."""
        if self._pending is not None:
            self._pending.result()  # the worker must not be writing the mask of the previous state
            self._pending = None
        if int(token) in self.stop_token_ids:
            return
        if not self.matcher.consume_token(int(token)):
            raise ConstraintError(f"token {token} does not follow the grammar: {self.matcher.get_error()}")
        self._advanced()
