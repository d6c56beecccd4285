"""Parse EXAONE 4.0 generations into reasoning, answer and tool calls, and keep multi-turn chats.

Output format (from the model's chat template):
  * reasoning mode: the prompt ends with "<think>\\n", the model writes its
    reasoning, "</think>", then the answer;
  * tool calls: "<tool_call>{"name": ..., "arguments": {...}}</tool_call>",
    several separated by newlines, possibly after some answer text;
  * the turn ends with "[|endofturn|]" (present when decoded with special tokens).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

THINK_START = "<think>"
THINK_END = "</think>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
END_OF_TURN = "[|endofturn|]"

_TOOL_CALL_RE = re.compile(re.escape(TOOL_CALL_START) + r"(.*?)" + re.escape(TOOL_CALL_END), re.DOTALL)


@dataclass
class ParsedOutput:
    """One assistant turn. `errors` lists every tool call that could not be used; its raw text stays in
    `content`. `truncated` is set when a <think> or <tool_call> block was never closed."""

    reasoning: str | None = None
    content: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    truncated: bool = False

    def to_message(self) -> dict:
        """OpenAI-style assistant message (tool-call arguments as JSON strings)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning is not None:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


def new_tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _tool_call(payload: str) -> tuple[dict | None, str | None]:
    """One <tool_call> body to an OpenAI tool call, or (None, error message)."""
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as e:
        return None, f"tool call is not valid JSON ({e.msg} at char {e.pos}): {payload!r}"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None, f"tool call has no function name: {payload!r}"
    # The template accepts "parameters" as an alias of "arguments".
    arguments = data.get("arguments", data.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": new_tool_call_id(),
        "type": "function",
        "function": {"name": data["name"], "arguments": arguments},
    }, None


def parse_output(text: str, thinking: bool = False) -> ParsedOutput:
    """Split a generated assistant turn.

    `thinking` says the prompt already opened the reasoning block ("<think>\\n", from enable_thinking=True),
    so text before "</think>" is reasoning even without a leading "<think>"; with it false a reasoning block
    is still recognised when the text itself contains one. An unclosed reasoning block makes everything
    reasoning (and `truncated`).
    """
    result = ParsedOutput()
    text = text.split(END_OF_TURN, 1)[0]

    # Same split as the chat template: reasoning is before the first </think>, the answer after the last.
    if THINK_END in text:
        reasoning = text.split(THINK_END)[0].strip()
        if reasoning.startswith(THINK_START):
            reasoning = reasoning[len(THINK_START) :].strip()
        result.reasoning = reasoning
        text = text.split(THINK_END)[-1]
    elif thinking or text.lstrip().startswith(THINK_START):
        reasoning = text.strip()
        if reasoning.startswith(THINK_START):
            reasoning = reasoning[len(THINK_START) :].strip()
        result.reasoning = reasoning
        result.truncated = True
        return result

    kept: list[str] = []  # answer text, including the raw text of unusable tool calls
    position = 0
    for match in _TOOL_CALL_RE.finditer(text):
        kept.append(text[position : match.start()])
        call, error = _tool_call(match.group(1).strip())
        if call is None:
            result.errors.append(error)
            kept.append(match.group(0))
        else:
            result.tool_calls.append(call)
        position = match.end()
    tail = text[position:]
    if TOOL_CALL_START in tail:  # generation stopped inside a tool call
        start = tail.index(TOOL_CALL_START)
        result.errors.append(f"unterminated tool call (output truncated?): {tail[start:]!r}")
        result.truncated = True
    kept.append(tail)
    result.content = "".join(kept).strip()
    return result


def _arguments_object(arguments: Any) -> Any:
    # The template renders arguments with `tojson`; a JSON string would be encoded twice.
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


class Conversation:
    """A chat history kept in the shape EXAONE's chat template renders.

    Assistant replies store the answer as `content`, the reasoning as `reasoning_content` (the template shows
    it only for the last assistant turn, and only when rendered with skip_think=False) and tool calls with
    their arguments as objects; tool results keep their value as given, since the template JSON-encodes it.
    """

    def __init__(self, messages: list[dict] | None = None, system: str | None = None):
        self.messages: list[dict] = list(messages or [])
        if system is not None:
            self.add_system(system)

    def add_system(self, content: str) -> Conversation:
        self.messages.append({"role": "system", "content": content})
        return self

    def add_user(self, content: str) -> Conversation:
        self.messages.append({"role": "user", "content": content})
        return self

    def add_assistant(self, reply: ParsedOutput | str, thinking: bool = False) -> ParsedOutput:
        """Append the model's reply (raw generated text or an already parsed one); returns the parsed reply."""
        parsed = parse_output(reply, thinking=thinking) if isinstance(reply, str) else reply
        message: dict[str, Any] = {"role": "assistant", "content": parsed.content}
        if parsed.reasoning:
            message["reasoning_content"] = parsed.reasoning
        if parsed.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": _arguments_object(call["function"]["arguments"]),
                    },
                }
                for call in parsed.tool_calls
            ]
        self.messages.append(message)
        return parsed

    def add_tool_result(self, result: Any, tool_call_id: str | None = None, name: str | None = None) -> Conversation:
        """Append one tool's result; consecutive results are grouped into one tool turn by the template."""
        message: dict[str, Any] = {"role": "tool", "content": result}
        if tool_call_id is not None:
            message["tool_call_id"] = tool_call_id
        if name is not None:
            message["name"] = name
        self.messages.append(message)
        return self

    def render(self, tokenizer: Any, add_generation_prompt: bool = True, **kwargs: Any) -> str:
        """The prompt text for the next turn (tools=, enable_thinking= ... go to the template)."""
        return tokenizer.apply_chat_template(
            self.messages, add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs
        )

    def __len__(self) -> int:
        return len(self.messages)
