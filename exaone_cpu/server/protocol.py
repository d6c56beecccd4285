"""OpenAI request validation and response shapes, kept apart from HTTP and from the engine."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool")  # developer: OpenAI's newer name for system
MAX_STOP_CHARS = 1000
MAX_TOP_K = 1 << 30
# chat_template_kwargs a request may set: the variables EXAONE 4.0's template reads. Nothing else
# reaches the renderer (a client must not send its own template or renderer options).
TEMPLATE_VARIABLES = {"enable_thinking": bool, "skip_think": bool}


class APIError(Exception):
    """An error returned to the client as OpenAI's error JSON."""

    def __init__(self, status: int, message: str, *, param: str | None = None, type: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type or {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                             413: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": _printable(self.message), "type": self.type,
                          "param": None if self.param is None else _printable(self.param), "code": self.code}}


def _printable(text: str) -> str:
    """text as valid UTF-8 (a request's lone surrogate echoed in a message becomes U+FFFD)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _bad(param: str, message: str) -> APIError:
    return APIError(400, f"{param}: {message}", param=param)


def _number(body: dict, name: str, lo: float, hi: float, default: float | None) -> float | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise _bad(name, f"must be a number between {lo} and {hi}, got {value!r}")
    return float(value)


def _int(body: dict, name: str, lo: int, default: int | None = None, *, hi: int = 1 << 62) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        shown = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a larger number"
        raise _bad(name, f"must be an integer between {lo} and {hi}, got {shown}")
    return value


@dataclass
class CompletionParams:
    """What both endpoints share: limits, sampling and stop conditions. `sampling` holds only the sampling
    fields the request set (SamplingParams names); the rest come from the server's defaults."""

    model: str
    max_tokens: int | None
    sampling: dict[str, Any]
    stop: list[str]
    stream: bool
    include_usage: bool
    logprobs: int | None = None  # top alternatives per token (0: the chosen token's only); None: off
    ignore_eos: bool = False  # vLLM's extension, for benchmarks


# OpenAI fields this server does not implement, with the values that ask for nothing (accepted)
UNSUPPORTED = {
    "echo": (False, None), "suffix": (None, ""), "best_of": (None, 1), "response_format": (None, {"type": "text"}),
    "functions": (None,), "function_call": (None,), "audio": (None,), "modalities": (None, ["text"]),
    "prediction": (None,), "service_tier": (None, "auto", "default"),
}


def parse_common(body: Any, served_model: str) -> CompletionParams:
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "is required and must be a string")
    if model != served_model:
        raise APIError(404, f"The model '{model}' does not exist; this server serves '{served_model}'",
                       param="model", code="model_not_found")
    max_tokens = _int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1)
    n = _int(body, "n", 1, 1)
    if n != 1:
        raise _bad("n", "only n=1 is supported")
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) and len(stop) <= 4):
        raise _bad("stop", "must be a string or a list of up to 4 non-empty strings")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise _bad("stop", f"each stop string may have at most {MAX_STOP_CHARS} characters")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", "must be a boolean")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("stream_options", "must be an object")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**64):
        raise _bad("seed", "must be a 64-bit integer")
    logit_bias = body.get("logit_bias")
    if logit_bias is not None:
        if not isinstance(logit_bias, dict) or len(logit_bias) > 300:
            raise _bad("logit_bias", "must be an object of at most 300 token ids (as strings) to biases")
        parsed = {}
        for key, value in logit_bias.items():
            if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 9):
                raise _bad("logit_bias", f"keys must be token ids, got {key!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
                raise _bad("logit_bias", f"biases must be numbers between -100 and 100, got {value!r}")
            parsed[int(key)] = float(value)
        logit_bias = parsed or None
    for name, off in UNSUPPORTED.items():
        if name in body and body[name] not in off:
            raise _bad(name, "is not supported by this server")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise _bad("ignore_eos", "must be a boolean")
    top_p = _number(body, "top_p", 0.0, 1.0, None)
    if top_p == 0.0:
        raise _bad("top_p", "must be greater than 0 (use temperature 0 for greedy decoding)")
    sampling = {
        "temperature": _number(body, "temperature", 0.0, 2.0, None),
        "top_p": top_p,
        "top_k": None if body.get("top_k") == -1 else _int(body, "top_k", 0, None, hi=MAX_TOP_K),  # -1: off
        "min_p": _number(body, "min_p", 0.0, 1.0, None),
        "repetition_penalty": _number(body, "repetition_penalty", 0.01, 100.0, None),
        "presence_penalty": _number(body, "presence_penalty", -2.0, 2.0, None),
        "frequency_penalty": _number(body, "frequency_penalty", -2.0, 2.0, None),
        "seed": seed,
        "logit_bias": logit_bias,
    }
    return CompletionParams(
        model=model,
        max_tokens=max_tokens,
        sampling={k: v for k, v in sampling.items() if v is not None},
        stop=stop,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        ignore_eos=ignore_eos,
    )


@dataclass
class ChatRequest:
    params: CompletionParams
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    enable_thinking: bool
    template_kwargs: dict[str, Any] = field(default_factory=dict)


def _message(i: int, m: Any) -> dict[str, Any]:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _bad(where, "must be an object")
    role = m.get("role")
    if role not in ROLES:
        raise _bad(f"{where}.role", f"must be one of {', '.join(ROLES)}, got {role!r}")
    content = m.get("content")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise _bad(f"{where}.content[{j}]", "only text parts are supported")
            parts.append(part["text"])
        content = "".join(parts)
    if content is not None and not isinstance(content, str):
        raise _bad(f"{where}.content", "must be a string, a list of text parts or null")
    if content is None and not (role == "assistant" and m.get("tool_calls")):
        raise _bad(f"{where}.content", "is required")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": content}
    if role == "assistant" and m.get("tool_calls") is not None:
        calls = m["tool_calls"]
        if not isinstance(calls, list):
            raise _bad(f"{where}.tool_calls", "must be a list")
        out["tool_calls"] = [_tool_call(f"{where}.tool_calls[{j}]", c) for j, c in enumerate(calls)]
    if role == "assistant" and isinstance(m.get("reasoning_content"), str):
        out["reasoning_content"] = m["reasoning_content"]
    if role == "tool" and m.get("tool_call_id") is not None:
        out["tool_call_id"] = m["tool_call_id"]
    return out


def _tool_call(where: str, call: Any) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _bad(where, "must have function.name")
    args = fn.get("arguments", "{}")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            raise _bad(f"{where}.function.arguments", "is not valid JSON") from None
    # The chat template serialises arguments itself, so it gets them as an object.
    return {"id": call.get("id"), "type": "function", "function": {"name": fn["name"], "arguments": args}}


def parse_chat(body: Any, served_model: str) -> ChatRequest:
    params = parse_common(body, served_model)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "must be a non-empty list")
    messages = [_message(i, m) for i, m in enumerate(messages)]
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and t.get("type", "function") == "function" and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str) for t in tools
        ):
            raise _bad("tools", "must be a list of {type: 'function', function: {name, ...}} objects")
    choice = body.get("tool_choice", "auto")
    if choice == "none":
        tools = None
    elif choice not in ("auto", "required") and not (isinstance(choice, dict) and choice.get("type") == "function"):
        raise _bad("tool_choice", "must be 'none', 'auto', 'required' or a function choice")
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise _bad("chat_template_kwargs", "must be an object")
    for key, value in kwargs.items():
        kind = TEMPLATE_VARIABLES.get(key)
        if kind is None:
            raise _bad(f"chat_template_kwargs.{str(key)[:50]}",
                       f"is not a variable of the chat template (allowed: {', '.join(TEMPLATE_VARIABLES)})")
        if not isinstance(value, kind):
            raise _bad(f"chat_template_kwargs.{key}", f"must be a {kind.__name__}")
    thinking = kwargs.get("enable_thinking", False)
    extra = {k: v for k, v in kwargs.items() if k != "enable_thinking"}
    wants = body.get("logprobs", False)
    if wants is not None and not isinstance(wants, bool):
        raise _bad("logprobs", "must be a boolean")
    top = _int(body, "top_logprobs", 0, None)
    if top is not None:
        if top > 20:
            raise _bad("top_logprobs", f"must be between 0 and 20, got {top}")
        if not wants:
            raise _bad("top_logprobs", "needs logprobs: true")
    params.logprobs = (top or 0) if wants else None
    return ChatRequest(params, messages, tools or None, thinking, extra)


def parse_completion(body: Any, served_model: str, vocab: int) -> tuple[CompletionParams, str | list[int]]:
    """The request's params and its prompt: a string, or token ids (a list of ints, as OpenAI's API
    allows; a list holding one string or one id list is that prompt). Several prompts in one request
    are refused: one completion per request."""
    params = parse_common(body, served_model)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        raise _bad("prompt", f"holds {len(prompt)} prompts; send one prompt per request")
    if isinstance(prompt, list):
        if not prompt:
            raise _bad("prompt", "must not be empty")
        for i, t in enumerate(prompt):
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
                raise _bad(f"prompt[{i}]", f"must be a token id in [0, {vocab}), got {t!r:.40}")
    elif not isinstance(prompt, str) or not prompt:
        raise _bad("prompt", "must be a non-empty string or a list of token ids")
    top = _int(body, "logprobs", 0, None)
    if top is not None and top > 20:
        raise _bad("logprobs", f"must be between 0 and 20, got {top}")
    params.logprobs = top
    return params, prompt


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _bad(name, f"must be true or false, got {value!r:.60}")
    return value


def parse_tokenize(body: Any) -> tuple[str, bool, bool]:
    """POST /tokenize (llama-server's): {"content", "add_special", "with_pieces"}."""
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    content = body.get("content")
    if not isinstance(content, str):
        raise _bad("content", "must be a string")
    return content, _bool(body, "add_special", False), _bool(body, "with_pieces", False)


def parse_detokenize(body: Any, vocab: int) -> list[int]:
    """POST /detokenize (llama-server's): {"tokens": [ids]}."""
    if not isinstance(body, dict):
        raise _bad("body", "must be a JSON object")
    tokens = body.get("tokens")
    if not isinstance(tokens, list):
        raise _bad("tokens", "must be a list of token ids")
    for i, t in enumerate(tokens):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
            raise _bad(f"tokens[{i}]", f"must be a token id in [0, {vocab}), got {t!r:.40}")
    return tokens
