"""Parsing EXAONE 4.0 generations and carrying a conversation across turns."""

import json
from pathlib import Path

import pytest

from exaone_cpu.parsing import CONTENT, REASONING, TOOL_CALL, Conversation, OutputParser, ParsedOutput, parse_output

MODEL_DIR = Path(__file__).resolve().parents[2] / "shared" / "exaone-4.0-1.2b"
CHAT_EXPECTED = json.loads((Path(__file__).parent / "data" / "chat_template_expected.json").read_text(encoding="utf-8"))

ROLL_DICE_CALL = '<tool_call>{"name": "roll_dice", "arguments": {"max_num": 6}}</tool_call>'


def test_reasoning_then_answer_with_generation_prompt_think():
    # enable_thinking=True: the prompt ends with "<think>\n", so the output has no opening tag.
    out = parse_output(
        "The user compares 3.12 and 3.9.\n0.9 > 0.12.\n</think>\n\n3.9 is bigger.[|endofturn|]", thinking=True
    )
    assert out.reasoning == "The user compares 3.12 and 3.9.\n0.9 > 0.12."
    assert out.content == "3.9 is bigger."
    assert out.tool_calls == [] and out.errors == [] and not out.truncated


def test_reasoning_with_opening_tag():
    out = parse_output("<think>\n생각 중...\n</think>\n\n답은 42입니다.")
    assert out.reasoning == "생각 중..."
    assert out.content == "답은 42입니다."


def test_non_reasoning_answer():
    out = parse_output("Hello! How can I help you today?[|endofturn|]")
    assert out.reasoning is None
    assert out.content == "Hello! How can I help you today?"


def test_empty_reasoning_block_from_non_thinking_prompt():
    out = parse_output("<think>\n\n</think>\n\nAnswer.")
    assert out.reasoning == "" and out.content == "Answer."


def test_several_tool_calls():
    weather = '<tool_call>{"name": "get_weather", "arguments": {"city": "서울", "unit": "celsius"}}</tool_call>'
    text = f"I'll roll twice and check the weather.\n{ROLL_DICE_CALL}\n{ROLL_DICE_CALL}\n{weather}[|endofturn|]"
    out = parse_output(text)
    assert out.content == "I'll roll twice and check the weather."
    assert out.errors == []
    assert [c["function"]["name"] for c in out.tool_calls] == ["roll_dice", "roll_dice", "get_weather"]
    for call in out.tool_calls:
        assert call["type"] == "function" and call["id"].startswith("call_")
        assert isinstance(call["function"]["arguments"], str)
    assert len({c["id"] for c in out.tool_calls}) == 3
    assert json.loads(out.tool_calls[0]["function"]["arguments"]) == {"max_num": 6}
    # non-ASCII arguments stay readable in the JSON string
    assert out.tool_calls[2]["function"]["arguments"] == '{"city": "서울", "unit": "celsius"}'


def test_tool_call_after_reasoning_and_parameters_alias():
    text = 'Need a dice.\n</think>\n\n<tool_call>{"name": "roll_dice", "parameters": {"max_num": 20}}</tool_call>'
    out = parse_output(text, thinking=True)
    assert out.reasoning == "Need a dice."
    assert out.content == ""
    assert json.loads(out.tool_calls[0]["function"]["arguments"]) == {"max_num": 20}


def test_malformed_tool_call_is_reported_and_kept():
    bad = '<tool_call>{"name": "roll_dice", "arguments": {"max_num": 6}</tool_call>'  # missing brace
    no_name = '<tool_call>{"arguments": {}}</tool_call>'
    out = parse_output(ROLL_DICE_CALL + "\n" + bad + "\n" + no_name)
    assert len(out.tool_calls) == 1
    assert len(out.errors) == 2
    assert "not valid JSON" in out.errors[0] and "no function name" in out.errors[1]
    assert bad in out.content and no_name in out.content
    assert not out.truncated


def test_truncated_inside_tool_call():
    out = parse_output(ROLL_DICE_CALL + '\n<tool_call>{"name": "roll_dice", "argum')
    assert len(out.tool_calls) == 1
    assert out.truncated
    assert len(out.errors) == 1 and "unterminated" in out.errors[0]
    assert out.content == '<tool_call>{"name": "roll_dice", "argum'


def test_truncated_inside_reasoning():
    out = parse_output("Let me think about this carefully. First,", thinking=True)
    assert out.reasoning == "Let me think about this carefully. First,"
    assert out.content == "" and out.truncated
    out = parse_output("<think>\nhalf a thought")
    assert out.reasoning == "half a thought" and out.truncated


def test_to_message():
    msg = parse_output("r\n</think>\n\n" + ROLL_DICE_CALL, thinking=True).to_message()
    assert msg["role"] == "assistant" and msg["reasoning_content"] == "r" and len(msg["tool_calls"]) == 1
    assert ParsedOutput(content="hi").to_message() == {"role": "assistant", "content": "hi"}


# ---- conversation round trips through the real chat template ----


@pytest.fixture(scope="module")
def tok():
    if not (MODEL_DIR / "vocab.json").is_file():
        pytest.skip(f"EXAONE tokenizer files not found in {MODEL_DIR}")
    from exaone_cpu.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(MODEL_DIR)


def _case(name):
    return next(c for c in CHAT_EXPECTED["cases"] if c["name"] == name)


def test_reasoning_turn_round_trip(tok):
    conv = Conversation().add_user("Which one is bigger, 3.12 vs 3.9?")
    prompt = conv.render(tok, enable_thinking=True)
    generated = "Compare the decimals: 0.9 > 0.12.\n</think>\n\n3.9 is bigger.[|endofturn|]"
    # as the model would produce it: ids -> text
    text = tok.decode(tok.encode(generated))
    parsed = conv.add_assistant(text, thinking=True)
    assert parsed.reasoning == "Compare the decimals: 0.9 > 0.12."
    # The template shows the last turn's reasoning with skip_think=False: exactly prompt + generation.
    rendered = tok.apply_chat_template(conv.messages, tokenize=False, skip_think=False)
    assert rendered == prompt + generated + "\n"
    # On the next turn the earlier reasoning is dropped, as the template does.
    conv.add_user("And 2.5 vs 2.45?")
    next_prompt = conv.render(tok, enable_thinking=True)
    assert next_prompt.startswith(prompt[: -len("<think>\n")] + "<think>\n\n</think>\n\n3.9 is bigger.[|endofturn|]\n")
    assert "0.9 > 0.12" not in next_prompt
    assert next_prompt.endswith("[|user|]\nAnd 2.5 vs 2.45?[|endofturn|]\n[|assistant|]\n<think>\n")


def test_tool_turn_round_trip(tok):
    tools = _case("tools_with_system_calls_and_results")["kwargs"]["tools"]
    conv = Conversation(system="You are a helpful assistant.")
    conv.add_user("Roll D6 dice twice, and tell me the weather in Seoul.")
    prompt = conv.render(tok, tools=tools)
    generated = (
        ROLL_DICE_CALL + "\n" + ROLL_DICE_CALL + "\n"
        '<tool_call>{"name": "get_weather", "arguments": {"city": "서울"}}</tool_call>[|endofturn|]'
    )
    parsed = conv.add_assistant(tok.decode(tok.encode(generated)))
    assert len(parsed.tool_calls) == 3 and parsed.errors == []
    assert conv.render(tok, add_generation_prompt=False, tools=tools) == prompt + generated + "\n"

    for call, result in zip(parsed.tool_calls, [3, "5", {"temperature": 23, "condition": "맑음"}]):
        conv.add_tool_result(result, tool_call_id=call["id"], name=call["function"]["name"])
    conv.add_assistant("You rolled 3 and 5. 서울은 23도이고 맑습니다.[|endofturn|]")
    conv.add_user("Roll once more.")
    # The whole conversation, built by the helper, renders as transformers rendered the hand-written one.
    assert conv.render(tok, tools=tools) == _case("tools_with_system_calls_and_results")["rendered"]


def test_multi_turn_reasoning_matches_transformers(tok):
    expected = _case("multi_turn_reasoning_thinking_on")
    conv = Conversation()
    conv.add_user("Which one is bigger, 3.12 vs 3.9?")
    conv.add_assistant("Compare 3.12 and 3.9: 0.9 > 0.12.\n</think>\n\n3.9 is bigger.", thinking=True)
    conv.add_user("And 2.5 vs 2.45?")
    conv.add_assistant("0.5 > 0.45, so 2.5.\n</think>\n\n2.5 is bigger.", thinking=True)
    conv.add_user("Thanks! 고마워요.")
    assert conv.render(tok, enable_thinking=True) == expected["rendered"]
    assert conv.messages[3]["reasoning_content"] == "0.5 > 0.45, so 2.5."


# ---- the incremental parser: any split of the text gives the same output --------------------------------------

FRAGMENTS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool", "</th", " ", "\n", "\n\n", "답",
             "text", '{"name": "f", "arguments": {"x": 1}}', '{"name": "g"}', '{"bad": ', "}", "<", "/", "👋"]


def _random_text(rng):
    return "".join(FRAGMENTS[i] for i in rng.integers(0, len(FRAGMENTS), int(rng.integers(0, 14))))


def _split(text, rng):
    cuts = sorted(set(rng.integers(0, len(text) + 1, int(rng.integers(0, 6))).tolist()))
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def _collect(deltas):
    reasoning = "".join(v for k, v in deltas if k == REASONING)
    content = "".join(v for k, v in deltas if k == CONTENT)
    calls = [v["function"] for k, v in deltas if k == TOOL_CALL]
    return reasoning, content, calls


@pytest.mark.parametrize("thinking", [False, True])
@pytest.mark.parametrize("tools", [False, True])
def test_any_split_gives_the_same_deltas_and_output(thinking, tools):
    import numpy as np

    rng = np.random.default_rng(thinking * 2 + tools)
    for _ in range(400):
        text = _random_text(rng)
        whole = parse_output(text, thinking=thinking, tools=tools)
        parser = OutputParser(thinking=thinking, tools=tools)
        deltas = [d for piece in _split(text, rng) for d in parser.feed(piece)] + parser.finish()
        reasoning, content, calls = _collect(deltas)
        out = parser.output
        assert (out.reasoning, out.content, out.errors, out.truncated) == \
            (whole.reasoning, whole.content, whole.errors, whole.truncated), repr(text)
        assert [c["function"] for c in out.tool_calls] == [c["function"] for c in whole.tool_calls]
        assert reasoning == (out.reasoning or "") and content == out.content and calls == \
            [c["function"] for c in out.tool_calls], repr(text)
        # sections are trimmed as the chat template trims them
        assert content == content.strip() and reasoning == reasoning.strip()
        if not tools:
            assert not out.tool_calls


def test_stray_think_end_without_reasoning_is_content():
    out = parse_output("a </think> b")
    assert out.reasoning is None and out.content == "a </think> b"


def test_hostile_outputs_parse():
    # 20,000 unclosed tags (quadratic before: 23 s) and JSON nested past the recursion limit
    for text in ("<tool_call>" * 20000, "<tool_call>" + "[" * 50000 + "</tool_call>",
                 "<tool_call>" + "[" * 100000 + "]" * 100000 + "</tool_call>"):
        out = parse_output(text, tools=True)
        assert out.content == text and len(out.errors) == 1 and not out.tool_calls


# ---- calls streamed as they are written (stream_calls) ----------------------------------------------------------

STREAM_FRAGMENTS = FRAGMENTS + [
    '<tool_call>{"name": "get_weather", "arguments": {"city": "서울 }", "n": [1, {"k": "}}"}]}}</tool_call>',
    '<tool_call>{"name": "f\\"q", "arguments": {}}</tool_call>', '<tool_call>{"name": "h", "arguments": "a b"}',
    '<tool_call>{"name": "h", "arguments": {"a": ', '  }  ', "</tool_call>\n"]


def _stream_collect(deltas):
    """Calls rebuilt from begin / argument deltas, and the completed calls."""
    built, done = [], []
    for kind, value in deltas:
        if kind == "tool_call_begin":
            built.append({"id": value["id"], "name": value["name"], "arguments": ""})
        elif kind == "tool_call_arguments":
            built[-1]["arguments"] += value
        elif kind == TOOL_CALL:
            done.append(value)
    return built, done


def test_streamed_calls_add_up_to_the_calls_for_any_split():
    import numpy as np

    rng = np.random.default_rng(13)
    streamed = 0
    for _ in range(600):
        text = "".join(STREAM_FRAGMENTS[i] for i in rng.integers(0, len(STREAM_FRAGMENTS), int(rng.integers(0, 8))))
        whole = OutputParser(stream_calls=True)
        whole_deltas = whole.feed(text) + whole.finish()
        parser = OutputParser(stream_calls=True)
        deltas = [d for piece in _split(text, rng) for d in parser.feed(piece)] + parser.finish()
        out = parser.output
        assert (out.content, out.errors, out.truncated) == (whole.output.content, whole.output.errors,
                                                            whole.output.truncated), repr(text)
        assert [c["function"] for c in out.tool_calls] == [c["function"] for c in whole.output.tool_calls]
        built, done = _stream_collect(deltas)
        # every streamed call adds up to a completed one, with the same id; unstreamed ones arrive whole
        by_id = {c["id"]: c for c in done}
        for call in built:
            assert by_id[call["id"]]["function"] == {"name": call["name"], "arguments": call["arguments"]}, repr(text)
        assert done == out.tool_calls
        assert [c["name"] for c in built] == [c["name"] for c in _stream_collect(whole_deltas)[0]], repr(text)
        streamed += len(built)
    assert streamed > 100


def test_a_streamed_call_is_the_text_as_written():
    parser = OutputParser(stream_calls=True)
    body = '{"name": "add", "arguments": {"a": -0, "b": [1,2]}}'
    deltas = []
    for ch in "<tool_call>" + body + "</tool_call>":  # one character at a time
        deltas += parser.feed(ch)
    deltas += parser.finish()
    built, done = _stream_collect(deltas)
    assert built[0]["name"] == "add" and built[0]["arguments"] == '{"a": -0, "b": [1,2]}'
    assert done[0]["function"]["arguments"] == '{"a": -0, "b": [1,2]}' and not parser.output.errors
    # the argument pieces came before the end: all but the held closing braces
    pieces = [v for k, v in deltas if k == "tool_call_arguments"]
    assert "".join(pieces[:-1]) == '{"a": -0, "b": [1,2]' and pieces[-1] == "}"


def test_a_streamed_call_cut_off_keeps_what_was_written():
    parser = OutputParser(stream_calls=True)
    deltas = parser.feed('<tool_call>{"name": "add", "arguments": {"a": 1') + parser.finish()
    built, done = _stream_collect(deltas)
    assert done[0]["function"] == {"name": "add", "arguments": '{"a": 1'}
    assert parser.output.truncated and parser.output.errors and parser.output.content == ""
