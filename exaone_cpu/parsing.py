"""Parse EXAONE 4.0 generations into reasoning, answer and tool calls, and keep multi-turn chats.

Output format (from the model's chat template):
  * reasoning mode: the prompt ends with "<think>\\n", the model writes its reasoning, "</think>",
    then the answer;
  * tool calls: "<tool_call>{"name": ..., "arguments": {...}}</tool_call>", several separated by
    newlines, possibly after some answer text.

One parser, OutputParser, reads the text incrementally and emits deltas: ("reasoning", text),
("content", text) and ("tool_call", call). The streamed and the non-streamed output are the same
deltas (parse_output feeds the whole text at once), so concatenating the streamed pieces gives exactly
the final message. The rules:
  * reasoning: only when the prompt opened it (thinking=True) or the text starts, after whitespace,
    with "<think>"; it ends at the first "</think>" (without one, everything is reasoning and the
    output is `truncated`). Otherwise "<think>" / "</think>" are ordinary content.
  * tool calls (when `tools`): each <tool_call>...</tool_call> whose body is a JSON object with a
    "name" becomes a call; any other body stays in the content as written, with an entry in `errors`;
    an unterminated one likewise, and `truncated`.
  * whitespace: each section (reasoning, content) loses its leading and trailing whitespace, as
    str.strip() would.
  * stream_calls (for output whose calls a grammar keeps well-formed, exaone_cpu.constraints): a
    call is streamed as it is written: ("tool_call_begin", {"id", "name"}) once its body has read
    `{"name": "...", "arguments": `, then ("tool_call_arguments", text) as the arguments grow (a tail
    that may be the call object's closing brace is held back), then ("tool_call", call) at
    </tool_call>. Its `arguments` are the text as written (what was streamed); a call cut off by the
    end of generation keeps the arguments written so far, with an entry in `errors` and `truncated`.
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

REASONING, CONTENT, TOOL_CALL = "reasoning", "content", "tool_call"  # delta kinds
TOOL_CALL_BEGIN, TOOL_CALL_ARGUMENTS = "tool_call_begin", "tool_call_arguments"  # with stream_calls

# the opening of a call's body up to its arguments: {"name": "...", "arguments":
_CALL_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\\x00-\x1f]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_HELD = " \t\r\n}"  # what may still turn out to close the call object rather than its arguments
MAX_CALL_HEADER = 1024  # characters of a call's body in which its header must be complete to be streamed


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
        return None, f"tool call is not valid JSON ({e.msg} at char {e.pos}): {payload[:200]!r}"
    except RecursionError:
        return None, f"tool call nests too deeply to parse: {payload[:200]!r}"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None, f"tool call has no function name: {payload[:200]!r}"
    # The template accepts "parameters" as an alias of "arguments".
    arguments = data.get("arguments", data.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": new_tool_call_id(),
        "type": "function",
        "function": {"name": data["name"], "arguments": arguments},
    }, None


def tool_call_text(call: dict) -> str:
    """A parsed call written back as the model writes one (for display)."""
    fn = call["function"]
    body = {"name": fn["name"], "arguments": _arguments_object(fn["arguments"])}
    return TOOL_CALL_START + json.dumps(body, ensure_ascii=False) + TOOL_CALL_END


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of marker (text that may still
    become the marker)."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


_START, _REASONING, _CONTENT, _TOOL_CALL = range(4)


class OutputParser:
    """Incremental parser of one assistant turn (rules in the module docstring).

        parser = OutputParser(thinking=False, tools=True)
        for piece in pieces:
            for kind, value in parser.feed(piece): ...    # kind: "reasoning" | "content" | "tool_call"
        parser.finish(); parser.output                    # the ParsedOutput the deltas add up to

    Work per piece is bounded by the piece (plus a marker's length): nothing is rescanned.
    """

    def __init__(self, thinking: bool = False, tools: bool = True, stream_calls: bool = False):
        self.thinking = thinking
        self.tools = tools
        self.stream_calls = stream_calls
        self._open: dict | None = None  # the call being streamed (stream_calls)
        self._stream_buf = ""  # body text held back: it may start </tool_call>
        self._head: str | None = ""  # the body until its header is complete (None: not streamed)
        self._args_held = ""  # argument text held back: it may close the call object
        self.output = ParsedOutput(reasoning="" if thinking else None)
        self._state = _START
        self._buf = ""  # undecided text
        self._call: list[str] = []  # body of the open tool call
        self._call_tail = ""  # last chars of the body (where a split </tool_call> may start)
        self._fresh = True  # the section's leading whitespace is still being dropped
        self._ws: list[str] = []  # trailing whitespace held until more text follows
        self._out: list[tuple[str, Any]] = []
        self.finished = False

    # ---- emission ----

    def _emit(self, kind: str, text: str) -> None:
        if self._fresh:
            text = text.lstrip()
            if not text:
                return
            self._fresh = False
        body = text.rstrip()
        if not body:
            self._ws.append(text)
            return
        trail = text[len(body):]
        piece = "".join(self._ws) + body
        self._ws = [trail] if trail else []
        self._out.append((kind, piece))
        if kind == REASONING:
            self.output.reasoning += piece
        else:
            self.output.content += piece

    def _end_section(self) -> None:
        self._fresh, self._ws = True, []

    # ---- parsing ----

    def feed(self, text: str) -> list[tuple[str, Any]]:
        """The deltas the new text completes."""
        if self.finished:
            raise RuntimeError("feed() after finish()")
        self._buf += text
        self._run(final=False)
        out, self._out = self._out, []
        return out

    def finish(self) -> list[tuple[str, Any]]:
        """The last deltas, at the end of the turn."""
        if not self.finished:
            self._run(final=True)
            self.finished = True
        out, self._out = self._out, []
        return out

    def _run(self, final: bool) -> None:
        while True:
            state, buf = self._state, self._buf
            if state == _START:
                head = buf.lstrip()
                if not final and (not head or THINK_START.startswith(head)):
                    return  # may still become "<think>"
                if head.startswith(THINK_START):
                    self._state, self._buf = _REASONING, head[len(THINK_START):]
                    if self.output.reasoning is None:
                        self.output.reasoning = ""
                else:
                    self._state = _REASONING if self.thinking else _CONTENT
                continue
            if state == _REASONING:
                end = buf.find(THINK_END)
                if end >= 0:
                    self._emit(REASONING, buf[:end])
                    self._end_section()
                    self._state, self._buf = _CONTENT, buf[end + len(THINK_END):]
                    continue
                if final:
                    self._emit(REASONING, buf)
                    self._buf, self.output.truncated = "", True
                    return
                keep = _partial_suffix(buf, THINK_END)
                self._emit(REASONING, buf[: len(buf) - keep])
                self._buf = buf[len(buf) - keep:]
                return
            if state == _CONTENT:
                at = buf.find(TOOL_CALL_START) if self.tools else -1
                if at >= 0:
                    self._emit(CONTENT, buf[:at])
                    self._state, self._buf = _TOOL_CALL, buf[at + len(TOOL_CALL_START):]
                    self._call, self._call_tail = [], ""
                    self._stream_buf, self._head, self._args_held = "", "", ""
                    continue
                keep = 0 if final or not self.tools else _partial_suffix(buf, TOOL_CALL_START)
                self._emit(CONTENT, buf[: len(buf) - keep])
                self._buf = buf[len(buf) - keep:]
                return
            # _TOOL_CALL: look for the end marker in the new text and the few chars before it
            window = self._call_tail + buf
            end = window.find(TOOL_CALL_END)
            if end < 0:
                if final and self.stream_calls:
                    self._call_text(buf, final=True)
                if final and self._open is not None:
                    self._close_streamed_call("".join(self._call) + buf, complete=False)
                    self._state, self._buf = _CONTENT, ""
                    return
                if final:
                    body = "".join(self._call) + buf
                    raw = TOOL_CALL_START + body
                    self.output.errors.append(f"unterminated tool call (output truncated?): {raw[:200]!r}")
                    self.output.truncated = True
                    self._emit(CONTENT, raw)
                    self._state, self._buf = _CONTENT, ""
                    return
                self._call.append(buf)
                self._call_tail = window[-(len(TOOL_CALL_END) - 1):]
                self._buf = ""
                self._call_text(buf)
                return
            cut = end - len(self._call_tail)  # the end marker's start, relative to buf (may be < 0)
            body = "".join(self._call)
            body = body[: len(body) + cut] if cut < 0 else body + buf[:cut]
            rest = buf[cut + len(TOOL_CALL_END):]
            if self.stream_calls:  # the rest of the body: what was held, less the marker's start
                held = self._stream_buf + buf[: max(cut, 0)]
                self._stream_buf = ""
                self._call_text(held[: len(held) + cut] if cut < 0 else held, final=True)
            if self._open is not None:
                self._close_streamed_call(body, complete=True)
                self._state, self._buf = _CONTENT, rest
                continue
            call, error = _tool_call(body.strip())
            if call is None:
                self.output.errors.append(error)
                self._emit(CONTENT, TOOL_CALL_START + body + TOOL_CALL_END)
            else:
                self.output.tool_calls.append(call)
                self._out.append((TOOL_CALL, call))
            self._state, self._buf = _CONTENT, rest


    # ---- calls streamed as they are written (stream_calls) ----

    def _call_text(self, text: str, final: bool = False) -> None:
        """More of the open call's body for streaming; a tail that may start </tool_call> is held
        (unless final: the body is complete)."""
        if not self.stream_calls:
            return
        pending = self._stream_buf + text
        hold = 0 if final else _partial_suffix(pending, TOOL_CALL_END)
        self._stream_buf = pending[len(pending) - hold:] if hold else ""
        ready = pending[: len(pending) - hold]
        if self._open is None:
            if self._head is None:
                return
            self._head += ready
            m = _CALL_HEADER.match(self._head)
            if m is None:
                if len(self._head) > MAX_CALL_HEADER:  # not the form a grammar writes: parsed at the end
                    self._head = None
                return
            try:
                name = json.loads('"' + m.group(1) + '"')
            except ValueError:
                self._head = None
                return
            self._open = {"id": new_tool_call_id(), "type": "function", "function": {"name": name, "arguments": ""}}
            self._out.append((TOOL_CALL_BEGIN, {"id": self._open["id"], "name": name}))
            ready, self._head = self._head[m.end():], None
        self._args_held += ready
        if not self._open["function"]["arguments"]:  # whitespace before the arguments is not theirs
            self._args_held = self._args_held.lstrip()
        self._send_arguments(self._args_held.rstrip(_HELD))

    def _send_arguments(self, piece: str) -> None:
        if piece:
            self._out.append((TOOL_CALL_ARGUMENTS, piece))
            self._open["function"]["arguments"] += piece
            self._args_held = self._args_held[len(piece):]

    def _close_streamed_call(self, body: str, complete: bool) -> None:
        """Ends the open call at </tool_call> (complete) or where the generation ended."""
        held = self._args_held.rstrip()
        if complete and held.endswith("}"):  # the call object's closing brace
            held = held[:-1].rstrip()
        self._send_arguments(held)
        call, self._open = self._open, None
        if complete:
            _, error = _tool_call(body.strip())
            if error is not None:
                self.output.errors.append(error)
        else:
            self.output.errors.append(f"unterminated tool call (output truncated?): {body[:200]!r}")
            self.output.truncated = True
        self.output.tool_calls.append(call)
        self._out.append((TOOL_CALL, call))


def parse_output(text: str, thinking: bool = False, tools: bool = True) -> ParsedOutput:
    """Split a whole generated assistant turn (the same result as streaming it through OutputParser).

    `thinking` says the prompt already opened the reasoning block ("<think>\\n", from
    enable_thinking=True); `tools` whether <tool_call> blocks are parsed. Text decoded with special
    tokens is cut at the end-of-turn marker.
    """
    parser = OutputParser(thinking=thinking, tools=tools)
    parser.feed(text.split(END_OF_TURN, 1)[0])
    parser.finish()
    return parser.output


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
