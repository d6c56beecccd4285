"""Render Hugging Face chat templates the way transformers does, with jinja2 only.

Mirrors `transformers.utils.chat_template_utils` (5.x): the same sandboxed
environment, filters and globals, the same clean-up of messages (None-valued
keys dropped, reasoning fields aliased) and the same variables passed to the
template, so prompts are byte-identical to `apply_chat_template(tokenize=False)`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment


class NoChatTemplateError(ValueError):
    """The checkpoint has no chat template and none was given."""


# Names a message's reasoning may be given under; templates read `reasoning_content` (gpt-oss reads `thinking`).
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _raise_exception(message: str) -> None:
    # Templates call raise_exception('...') to reject a conversation they cannot render.
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Unlike jinja's own tojson, no HTML escaping, and indent/separators/sort_keys are honoured.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    # A callable standing in for `dict` so templates cannot reach the real type's attributes.
    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    # Namespaces refuse underscore-prefixed attributes, so templates cannot reach CPython internals.
    def __init__(*args: Any, **kwargs: Any) -> None:  # same signature trick as jinja's Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore-prefixed attribute {name!r}")


class _GenerationTag(jinja2.ext.Extension):
    # `{% generation %}...{% endgeneration %}` marks assistant text for masks; here it only renders its body.
    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


MAX_RENDERED_CHARS = 1 << 24  # a rendered prompt is far below this; a runaway template stops here


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with string and list repetition (`'ab' * n`) bounded like the whole output."""

    intercepted_binops = frozenset(["*"])

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_RENDERED_CHARS:
                    raise ValueError(f"the chat template builds a value of over {MAX_RENDERED_CHARS} items")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=16)
def compile_chat_template(source: str) -> jinja2.Template:
    env = _BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(source)


def _plain(value: Any) -> Any:
    """Rebuild a value out of JSON types, so the sandbox never sees arbitrary objects (as transformers does)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):  # also bool subclasses / numpy ints that subclass int
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return _plain(value.item())
    if callable(getattr(value, "model_dump", None)):  # pydantic models, e.g. OpenAI SDK messages
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def normalize_messages(conversation: Any) -> list[dict]:
    """Messages as plain dicts, None-valued keys dropped and reasoning fields aliased, as transformers prepares them."""
    messages = getattr(conversation, "messages", conversation)
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"a conversation is a list of message dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("cannot apply a chat template to an empty conversation")
    normalized = []
    for message in _plain(list(messages)):
        if not isinstance(message, dict):
            raise TypeError(f"chat messages must be dicts, got {message!r}")
        # APIs send content=None / tool_calls=None; templates handle a missing key but render "None" for these.
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        normalized.append(message)
    return normalized


def _tool_schemas(tools: Any) -> list[dict] | None:
    if tools is None:
        return None
    for tool in tools:
        if not isinstance(tool, dict):
            raise TypeError(
                f"tools must be JSON-schema dicts ({{'type': 'function', 'function': {{...}}}}), got {tool!r}"
            )
    return _plain(list(tools))


# Appended to the message being continued, so the render can be cut right after that message's text.
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def render_chat_template(
    template: str | None,
    conversation: Any,
    tools: list[dict] | None = None,
    documents: list[dict] | None = None,
    add_generation_prompt: bool = False,
    special_tokens: Mapping[str, str] | None = None,
    continue_final_message: bool | str = False,
    **kwargs: Any,
) -> str:
    """Render one conversation.

    `special_tokens` (bos_token, eos_token, ...) become template variables, and any other keyword (enable_thinking,
    skip_think, ...) is passed through; keywords win over special tokens of the same name. `tools` and `documents`
    are always defined for the template (None when not given), as in transformers.

    continue_final_message (True for "content", or a field name such as "reasoning_content") leaves the last
    message open so the model continues it (prefill), cut the way transformers cuts it.
    """
    if template is None:
        raise NoChatTemplateError("no chat template: the checkpoint has none and none was passed")
    if documents is not None and not all(isinstance(d, dict) for d in documents):
        raise TypeError("documents must be a list of dicts with 'title' and 'text' keys")
    messages = normalize_messages(conversation)
    if continue_final_message:
        if add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt cannot be used together")
        final_text = _tag_final_message(messages, template, continue_final_message)
    variables = _plain({**(special_tokens or {}), **kwargs})
    pieces, size = [], 0
    for piece in compile_chat_template(template).generate(
        messages=messages,
        tools=_tool_schemas(tools),
        documents=_plain(documents),
        add_generation_prompt=add_generation_prompt,
        **variables,
    ):
        size += len(piece)
        if size > MAX_RENDERED_CHARS:  # the output is bounded as it is produced, not after
            raise ValueError(f"the chat template renders more than {MAX_RENDERED_CHARS} characters")
        pieces.append(piece)
    rendered = "".join(pieces)
    if not continue_final_message:
        return rendered
    if final_text.strip() not in rendered or _CONTINUE_TAG.strip() not in rendered:
        raise ValueError("continue_final_message is set but the template does not render the final message verbatim")
    cut = rendered.rindex(_CONTINUE_TAG.strip())
    if rendered[cut : cut + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return rendered[:cut]
    return rendered[:cut].rstrip()  # the template trimmed the message's trailing space


def _tag_final_message(messages: list[dict], template: str, continue_final_message: bool | str) -> str:
    """Mark the text to continue in the last message (every alias of it, for reasoning); returns that text."""
    field_name = continue_final_message if isinstance(continue_final_message, str) else "content"
    final = messages[-1].get(field_name)
    if not isinstance(final, str):
        raise ValueError(f"continue_final_message: the final message has no text {field_name!r} to continue")
    fields = [field_name]
    if field_name in REASONING_FIELDS:
        fields = [f for f in REASONING_FIELDS if messages[-1].get(f) == final]
    if not any(f in template for f in fields):
        raise ValueError(f"continue_final_message: the chat template does not read {field_name!r}")
    for f in fields:
        messages[-1][f] = final + _CONTINUE_TAG
    return final
