"""OpenAI request validation (pydantic models) and response shapes, kept apart from HTTP and from the engine."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..constraints import ConstraintError, OutputFormat, schema_dict

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


# ---- request models (pydantic): types and ranges declared once, errors naming the field -----------------------

Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # an int or a float, not a bool or a string
Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
Str = Annotated[str, Field(strict=True)]


class _Model(BaseModel):
    # unknown fields are kept to be named in the response's Warning header and the log, never dropped silently
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Model):
    include_usage: Bool = False


class FunctionCall(_Model):
    name: Str
    arguments: Any = "{}"


class ToolCall(_Model):
    id: Str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool"]  # developer: OpenAI's newer system
    content: Any = None  # a string, a list of text parts or null: _message
    tool_calls: list[ToolCall] | None = None
    reasoning_content: Str | None = None
    tool_call_id: Str | None = None
    name: Str | None = None


class FunctionDef(_Model):
    name: Str
    description: Str | None = None
    parameters: dict[str, Any] | None = None
    strict: Bool | None = None


class Tool(_Model):
    type: Literal["function"] = "function"
    function: FunctionDef


class JsonSchemaFormat(_Model):
    name: Str = "response"
    description: Str | None = None
    schema_: Any = Field(None, alias="schema")  # a JSON schema (an object, or true / false)
    strict: Bool | None = None


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema_: Any = Field(None, alias="schema")  # llama-server: {"type": "json_object", "schema": {...}}


class _Common(_Model):
    model: Str
    max_tokens: Int | None = Field(None, ge=1, le=1 << 62)
    max_completion_tokens: Int | None = Field(None, ge=1, le=1 << 62)
    n: Int = Field(1, ge=1, le=1)
    stop: Any = None  # a string or up to 4 strings: _stop
    stream: Bool = False
    stream_options: StreamOptions | None = None
    seed: Int | None = Field(None, ge=-(2**63), lt=2**64)
    logit_bias: dict[str, Any] | None = None  # token id (a string) -> bias: _logit_bias
    ignore_eos: Bool = False  # vLLM's extension, for benchmarks
    temperature: Float | None = Field(None, ge=0.0, le=2.0)
    top_p: Float | None = Field(None, gt=0.0, le=1.0)
    top_k: Int | None = Field(None, ge=-1, le=MAX_TOP_K)  # -1: off, as vLLM
    min_p: Float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: Float | None = Field(None, ge=0.01, le=100.0)
    presence_penalty: Float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: Float | None = Field(None, ge=-2.0, le=2.0)
    response_format: ResponseFormat | None = None
    json_schema: Any = None  # llama-server's: a JSON schema
    grammar: Str | None = None  # llama-server's: GBNF (or llguidance's Lark)
    user: Str | None = None  # OpenAI's end-user id: nothing to do with it here
    metadata: dict[str, Any] | None = None  # OpenAI's stored-completion tags: nothing is stored here
    store: Bool | None = None


class ChatBody(_Common):
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Any = "auto"
    parallel_tool_calls: Bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    logprobs: Bool | None = False
    top_logprobs: Int | None = Field(None, ge=0, le=20)


class CompletionBody(_Common):
    prompt: Any = None  # a string or token ids: parse_completion
    logprobs: Int | None = Field(None, ge=0, le=20)


class TokenizeBody(_Model):
    content: Str
    add_special: Bool = False
    with_pieces: Bool = False


class DetokenizeBody(_Model):
    tokens: list[Any]


def _param(loc: tuple) -> str:
    """A pydantic error location as the field path clients know: messages[0].role, prompt[1]."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validate(model: type[_Model], body: Any) -> _Model:
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object", param="body")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        param = _param(first["loc"]) or "body"
        shown = first.get("input")
        got = f", got {shown!r:.60}" if isinstance(shown, (str, int, float, bool)) or shown is None else ""
        if isinstance(shown, int) and not isinstance(shown, bool) and abs(shown) >= 10**30:
            got = ", got a larger number"
        raise _bad(param, f"{first['msg'][0].lower()}{first['msg'][1:]}{got}") from None


def unknown_fields(request: _Model) -> list[str]:
    """Fields of the request (and of its messages, tools, ...) this server does not know: they have no
    effect, and the response says so (Warning header) as does the log."""
    found = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, BaseModel):
            found.extend(f"{where}{'.' if where else ''}{k}" for k in (value.model_extra or {}))
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{where}{'.' if where else ''}{name}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    walk(request, "")
    return found


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
    ignored: list[str] = field(default_factory=list)  # unknown request fields (no effect)
    output_format: OutputFormat | None = None  # response_format / json_schema / grammar
    format_param: str | None = None  # the request field output_format came from
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True


# OpenAI fields this server does not implement, with the values that ask for nothing (accepted)
UNSUPPORTED = {
    "echo": (False, None), "suffix": (None, ""), "best_of": (None, 1),
    "functions": (None,), "function_call": (None,), "audio": (None,), "modalities": (None, ["text"]),
    "prediction": (None,), "service_tier": (None, "auto", "default"),
}


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) and len(stop) <= 4):
        raise _bad("stop", "must be a string or a list of up to 4 non-empty strings")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise _bad("stop", f"each stop string may have at most {MAX_STOP_CHARS} characters")
    return stop


def _logit_bias(bias: dict[str, Any] | None) -> dict[int, float] | None:
    if bias is None:
        return None
    if len(bias) > 300:
        raise _bad("logit_bias", "must be an object of at most 300 token ids (as strings) to biases")
    parsed = {}
    for key, value in bias.items():
        if not (key.isascii() and key.isdigit() and len(key) <= 9):
            raise _bad("logit_bias", f"keys must be token ids, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise _bad("logit_bias", f"biases must be numbers between -100 and 100, got {value!r}")
        parsed[int(key)] = float(value)
    return parsed or None


def _output_format(request: _Common) -> tuple[OutputFormat | None, str | None]:
    """The constraint on the answer: OpenAI's response_format, or llama-server's json_schema / grammar."""
    given = [name for name in ("json_schema", "grammar") if getattr(request, name) is not None]
    rf = request.response_format
    if rf is not None and rf.type != "text":
        given.insert(0, "response_format")
    if len(given) > 1:
        raise _bad(given[1], f"give one of response_format, json_schema, grammar (got {', '.join(given)})")
    if not given:
        return None, None
    name = given[0]
    try:
        if name == "grammar":
            return OutputFormat.create(grammar=request.grammar), name
        if name == "json_schema":
            return OutputFormat("json_schema", schema_dict(request.json_schema, name)), name
        if rf.type == "json_schema":
            name = "response_format.json_schema"
            if rf.json_schema is None or rf.json_schema.schema_ is None:
                raise _bad(f"{name}.schema", "is required with type json_schema")
            return OutputFormat("json_schema", schema_dict(rf.json_schema.schema_, f"{name}.schema")), name
        if rf.schema_ is not None:
            return OutputFormat("json_schema", schema_dict(rf.schema_, "response_format.schema")), name
        return OutputFormat("json_object"), name
    except ConstraintError as e:
        raise _bad(name, str(e)) from None


def parse_common(body: Any, served_model: str, model: type[_Common]) -> tuple[_Common, CompletionParams]:
    if isinstance(body, dict):
        for name, off in UNSUPPORTED.items():  # before the types: these name what is not supported
            if name in body and body[name] not in off:
                raise _bad(name, "is not supported by this server")
        if body.get("n", 1) != 1 and isinstance(body.get("n"), int) and not isinstance(body.get("n"), bool):
            raise _bad("n", "only n=1 is supported")
    request = _validate(model, body)
    if request.model != served_model:
        raise APIError(404, f"The model '{request.model}' does not exist; this server serves '{served_model}'",
                       param="model", code="model_not_found")
    if not request.model:
        raise _bad("model", "is required and must be a string")
    sampling = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": None if request.top_k == -1 else request.top_k,
        "min_p": request.min_p,
        "repetition_penalty": request.repetition_penalty,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "seed": request.seed,
        "logit_bias": _logit_bias(request.logit_bias),
    }
    ignored = [name for name in unknown_fields(request) if name not in UNSUPPORTED]
    params = CompletionParams(
        model=request.model,
        max_tokens=request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens,
        sampling={k: v for k, v in sampling.items() if v is not None},
        stop=_stop(request.stop),
        stream=request.stream,
        include_usage=request.stream_options is not None and request.stream_options.include_usage,
        ignore_eos=request.ignore_eos,
        ignored=ignored,
    )
    params.output_format, params.format_param = _output_format(request)
    return request, params


@dataclass
class ChatRequest:
    params: CompletionParams
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    enable_thinking: bool
    template_kwargs: dict[str, Any] = field(default_factory=dict)


def _message(i: int, m: Message) -> dict[str, Any]:
    where = f"messages[{i}]"
    content = m.content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise _bad(f"{where}.content[{j}]", "only text parts are supported")
            parts.append(part["text"])
        content = "".join(parts)
    if content is not None and not isinstance(content, str):
        raise _bad(f"{where}.content", "must be a string, a list of text parts or null")
    if content is None and not (m.role == "assistant" and m.tool_calls):
        raise _bad(f"{where}.content", "is required")
    out: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": content}
    if m.role == "assistant" and m.tool_calls is not None:
        out["tool_calls"] = [_tool_call(f"{where}.tool_calls[{j}]", c) for j, c in enumerate(m.tool_calls)]
    if m.role == "assistant" and m.reasoning_content is not None:
        out["reasoning_content"] = m.reasoning_content
    if m.role == "tool" and m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _tool_call(where: str, call: ToolCall) -> dict[str, Any]:
    args = call.function.arguments
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            raise _bad(f"{where}.function.arguments", "is not valid JSON") from None
    elif not isinstance(args, dict):
        raise _bad(f"{where}.function.arguments", "must be a JSON string or an object")
    # The chat template serialises arguments itself, so it gets them as an object.
    return {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": args}}


def parse_chat(body: Any, served_model: str) -> ChatRequest:
    request, params = parse_common(body, served_model, ChatBody)
    messages = [_message(i, m) for i, m in enumerate(request.messages)]
    tools = None if request.tools is None else body["tools"]  # as sent: the template renders them
    choice = request.tool_choice
    if choice == "none":
        tools = None  # the prompt does not offer them: no call to make, none parsed
    elif choice not in ("auto", "required") and not (isinstance(choice, dict) and choice.get("type") == "function"
                                                      and isinstance(choice.get("function"), dict)
                                                      and isinstance(choice["function"].get("name"), str)):
        raise _bad("tool_choice", "must be 'none', 'auto', 'required' or "
                                  "{'type': 'function', 'function': {'name': ...}}")
    elif tools is None and choice != "auto":
        raise _bad("tool_choice", f"{choice!r:.80} needs tools")
    elif isinstance(choice, dict) and choice["function"]["name"] not in [t.function.name for t in request.tools]:
        raise _bad("tool_choice", f"names the function {choice['function']['name']!r:.80}, which is not among the tools")
    params.tool_choice = "auto" if choice == "none" else choice
    params.parallel_tool_calls = request.parallel_tool_calls
    kwargs = request.chat_template_kwargs or {}
    for key, value in kwargs.items():
        kind = TEMPLATE_VARIABLES.get(key)
        if kind is None:
            raise _bad(f"chat_template_kwargs.{str(key)[:50]}",
                       f"is not a variable of the chat template (allowed: {', '.join(TEMPLATE_VARIABLES)})")
        if not isinstance(value, kind):
            raise _bad(f"chat_template_kwargs.{key}", f"must be a {kind.__name__}")
    thinking = kwargs.get("enable_thinking", False)
    extra = {k: v for k, v in kwargs.items() if k != "enable_thinking"}
    top = request.top_logprobs
    if top is not None and not request.logprobs:
        raise _bad("top_logprobs", "needs logprobs: true")
    params.logprobs = (top or 0) if request.logprobs else None
    return ChatRequest(params, messages, tools or None, thinking, extra)


MAX_PROMPTS = 64  # prompts in one completions request (each is a sequence in the engine)


def parse_completion(body: Any, served_model: str, vocab: int) -> tuple[CompletionParams, list[str | list[int]]]:
    """The request's params and its prompts, each a string or token ids: OpenAI's API takes a string, a
    list of token ids, a list of strings or a list of token-id lists (one choice per prompt)."""
    request, params = parse_common(body, served_model, CompletionBody)
    prompt = request.prompt
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and not isinstance(prompt[0], (str, list))):
        prompts, names = [prompt], ["prompt"]
    elif isinstance(prompt, list) and prompt:
        prompts, names = prompt, [f"prompt[{i}]" for i in range(len(prompt))]
        if len(prompts) > MAX_PROMPTS:
            raise _bad("prompt", f"holds {len(prompts)} prompts; at most {MAX_PROMPTS} in one request")
    else:
        raise _bad("prompt", "must be a non-empty string, a list of token ids, or a list of those")
    for one, name in zip(prompts, names):
        if isinstance(one, list):
            if not one:
                raise _bad(name, "must not be empty")
            _token_ids(name, one, vocab)
        elif not isinstance(one, str) or not one:
            raise _bad(name, "must be a non-empty string or a list of token ids")
    params.logprobs = request.logprobs
    return params, prompts


def _token_ids(name: str, ids: list[Any], vocab: int) -> None:
    for i, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
            raise _bad(f"{name}[{i}]", f"must be a token id in [0, {vocab}), got {t!r:.40}")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
          predictions: tuple[int, int] | None = None) -> dict[str, Any]:
    """OpenAI's usage object; predictions: (guessed tokens kept, dropped) when the server speculates."""
    out = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens,
           "prompt_tokens_details": {"cached_tokens": cached_tokens}}
    if predictions is not None:
        out["completion_tokens_details"] = {"accepted_prediction_tokens": predictions[0],
                                            "rejected_prediction_tokens": predictions[1]}
    return out


def parse_tokenize(body: Any) -> tuple[str, bool, bool]:
    """POST /tokenize (llama-server's): {"content", "add_special", "with_pieces"}."""
    request = _validate(TokenizeBody, body)
    return request.content, request.add_special, request.with_pieces


def parse_detokenize(body: Any, vocab: int) -> list[int]:
    """POST /detokenize (llama-server's): {"tokens": [ids]}."""
    request = _validate(DetokenizeBody, body)
    _token_ids("tokens", request.tokens, vocab)
    return request.tokens
