"""Structured output (exaone_cpu.constraints): JSON schemas, regexes, grammars, choices and tool calls
enforced token by token on a tiny random model with the real EXAONE tokenizer, whose free-running
output is gibberish, so everything that parses below does so because of the constraint."""

from __future__ import annotations

import json
import random
import re
import sys

import numpy as np
import pytest

from model_factory import SHARED_MODEL_DIR, real_tokenizer_available, write_tiny_exaone

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

from exaone_cpu import constraints  # noqa: E402
from exaone_cpu.constraints import ConstraintError, OutputFormat, build_grammar, text_without  # noqa: E402

needs_tokenizer = pytest.mark.skipif(not real_tokenizer_available(),
                                     reason=f"EXAONE tokenizer files not found in {SHARED_MODEL_DIR}")
GENERATIONS = 100  # per schema, temperature 1.0, seeds 0..99

SCHEMAS = {
    "nested objects": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 16},
                    "address": {
                        "type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 12},
                                       "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                        "required": ["city", "zip"], "additionalProperties": False,
                    },
                },
                "required": ["name", "address"], "additionalProperties": False,
            },
        },
        "required": ["user"], "additionalProperties": False,
    },
    "arrays and enums": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 1, "maxItems": 4},
            "matrix": {"type": "array", "maxItems": 3,
                       "items": {"type": "array", "maxItems": 3, "items": {"type": "integer", "minimum": -9, "maximum": 9}}},
            "level": {"enum": ["low", "mid", "high", 3]},
        },
        "required": ["tags", "matrix", "level"], "additionalProperties": False,
    },
    "numbers with ranges": {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "score": {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.125},
            "offset": {"type": "number", "minimum": -2.5, "maximum": 7.25, "multipleOf": 0.25},
            "delta": {"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": 5},
        },
        "required": ["age", "score", "offset", "delta"], "additionalProperties": False,
    },
    "optional fields and patterns": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
            "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"},
            "note": {"type": "string", "maxLength": 20},
            "active": {"type": "boolean"},
            "count": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 1000}, {"type": "null"}]},
        },
        "required": ["id", "active"], "additionalProperties": False,
    },
}

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                        "unit": {"enum": ["celsius", "fahrenheit"]}},
                       "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Sum of two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                                                        "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
                       "required": ["a", "b"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "now", "description": "The time", "parameters": {"type": "object", "properties": {},
                                                                 "additionalProperties": False}}},
]
TOOL_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


# ---- the regex of text without a marker, against the plain definition ------------------------------------------


@pytest.mark.parametrize("word", ["<tool_call>", "</think>", "ab"])
def test_text_without_matches_exactly_the_strings_without_the_word(word):
    pattern = re.compile(text_without(word), re.DOTALL)
    alphabet = sorted(set(word)) + ["x", "\n", "한"]
    rng = random.Random(0)
    pieces = [word, word[:-1], word[:3], word[0] * 2, word[1:]]
    for _ in range(4000):
        s = "".join(rng.choice(alphabet + pieces) if rng.random() < 0.3 else rng.choice(alphabet)
                    for _ in range(rng.randint(0, 14)))
        assert (pattern.fullmatch(s) is not None) == (word not in s), s


def test_text_without_refuses_a_word_whose_first_character_recurs():
    with pytest.raises(ValueError):
        text_without("<a<")


# ---- options and their errors ------------------------------------------------------------------------------------


def test_output_format_options():
    assert OutputFormat.create() is None
    assert OutputFormat.create(json_schema='{"type": "object"}') == OutputFormat("json_schema", {"type": "object"})
    assert OutputFormat.create(choices=["a", "b"]) == OutputFormat("choices", ("a", "b"))
    with pytest.raises(ConstraintError, match="at most one of"):
        OutputFormat.create(regex="a", choices=["a"])
    with pytest.raises(ConstraintError, match="choices"):
        OutputFormat.create(choices=[])
    with pytest.raises(ConstraintError, match="choices"):
        OutputFormat.create(choices="ab")
    with pytest.raises(ConstraintError, match="json_schema is not valid JSON"):
        OutputFormat.create(json_schema="{nope")
    with pytest.raises(ConstraintError, match="json_schema must be a JSON schema object"):
        OutputFormat.create(json_schema=[1])


def test_a_pydantic_model_class_is_a_schema():
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):
        name: str
        qty: int

    fmt = OutputFormat.create(json_schema=Item)
    assert fmt.value == Item.model_json_schema()


def test_without_llguidance_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "llguidance", None)
    with pytest.raises(ConstraintError, match=r'pip install "exaone_cpu\[structured\]"'):
        build_grammar(OutputFormat("regex", "a+"), token_ids={})
    assert not constraints.llguidance_available()


MARKERS = {"</think>": 355, "<tool_call>": 352, "</tool_call>": 351}


def test_tool_choice_errors():
    with pytest.raises(ConstraintError, match="needs tools"):
        build_grammar(None, tool_choice="required", token_ids=MARKERS)
    with pytest.raises(ConstraintError, match="'nope', which is not among the tools"):
        build_grammar(None, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}},
                      token_ids=MARKERS)
    with pytest.raises(ConstraintError, match="tool_choice must be"):
        build_grammar(None, tools=TOOLS, tool_choice="sometimes", token_ids=MARKERS)
    with pytest.raises(ConstraintError, match=r"tools\[0\] must be a function with a name"):
        build_grammar(None, tools=[{"type": "function"}], tool_choice="required", token_ids=MARKERS)
    assert build_grammar(None, tools=None, tool_choice="auto", token_ids=MARKERS) is None


# ---- generation ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    if not real_tokenizer_available():
        pytest.skip(f"EXAONE tokenizer files not found in {SHARED_MODEL_DIR}")
    from exaone_cpu.generation import Generator

    return Generator.from_pretrained(write_tiny_exaone(tmp_path_factory.mktemp("tiny-structured")), threads=1)


@pytest.fixture(scope="module")
def prompt(gen):
    return gen.encode_chat([{"role": "user", "content": "Describe it as JSON."}])


def test_free_running_output_is_gibberish(gen, prompt):
    text = gen.generate(prompt, temperature=1.0, seed=0, max_new_tokens=20).text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_sampled_json_always_validates(gen, prompt, name):
    schema = SCHEMAS[name]
    for seed in range(GENERATIONS):
        r = gen.generate(prompt, json_schema=schema, temperature=1.0, seed=seed, max_new_tokens=400)
        assert r.finish_reason == "stop", (seed, r.text)
        jsonschema.validate(json.loads(r.text), schema)
        assert r.token_ids[-1] not in gen.eos_token_ids  # ended where the grammar was complete


def test_greedy_json_validates(gen, prompt):
    for name, schema in SCHEMAS.items():
        r = gen.generate(prompt, json_schema=schema, max_new_tokens=400)
        jsonschema.validate(json.loads(r.text), schema)


def test_json_object_regex_grammar_and_choices(gen, prompt):
    for seed in range(20):
        r = gen.generate(prompt, regex=r"[0-9]{3}-[a-z]{2,4}", temperature=1.0, seed=seed)
        assert re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", r.text), r.text
        r = gen.generate(prompt, choices=["yes", "no", "네", "아니요"], temperature=1.0, seed=seed)
        assert r.text in ("yes", "no", "네", "아니요") and r.finish_reason == "stop"
        r = gen.generate(prompt, grammar='start: "x=" NUM ("," NUM)*\nNUM: /[0-9]{1,3}/',
                         temperature=1.0, seed=seed, max_new_tokens=200)
        assert re.fullmatch(r"x=[0-9]{1,3}(,[0-9]{1,3})*", r.text), r.text


def test_any_json_object(gen, prompt):
    from exaone_cpu.constraints import OutputFormat

    for seed in range(6):
        r = gen.generate(prompt, output_format=OutputFormat("json_object"), temperature=0.7, seed=seed,
                         max_new_tokens=120)
        if r.finish_reason == "stop":
            assert isinstance(json.loads(r.text), dict)
        else:  # a string without a length bound may run past the budget; what came is still a prefix
            assert r.text.startswith("{")


def test_invalid_constraints_are_errors_naming_the_problem(gen, prompt):
    with pytest.raises(ConstraintError, match="unclosed character class"):
        gen.generate(prompt, regex="[a-z")
    with pytest.raises(ConstraintError, match="objectx"):
        gen.generate(prompt, json_schema={"type": "objectx"})
    with pytest.raises(ConstraintError, match="unknown name"):
        gen.generate(prompt, grammar="start: foo")
    with pytest.raises(TypeError, match="unknown generation options: json_shema"):
        gen.generate(prompt, json_shema={})


def check_call(call, names=TOOL_SCHEMAS):
    name = call["function"]["name"]
    assert name in names
    jsonschema.validate(json.loads(call["function"]["arguments"]), TOOL_SCHEMAS[name])


@pytest.fixture(scope="module")
def tool_prompt(gen):
    return gen.encode_chat([{"role": "user", "content": "What is the weather in Seoul?"}], tools=TOOLS)


def test_required_tool_calls_always_validate(gen, tool_prompt):
    names = set()
    for seed in range(GENERATIONS):
        r = gen.generate(tool_prompt, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                         temperature=1.0, seed=seed, max_new_tokens=400)
        assert r.finish_reason == "tool_calls", (seed, r.text)
        assert len(r.output.tool_calls) == 1 and not r.output.errors and r.output.content == ""
        for call in r.output.tool_calls:
            check_call(call)
            names.add(call["function"]["name"])
        # the text is the call as the chat template renders calls
        body = r.text.removeprefix("<tool_call>").removesuffix("</tool_call>")
        call = r.output.tool_calls[0]["function"]
        assert body.startswith('{"name": "%s", "arguments": {' % call["name"]) and body.endswith("}}")
        assert json.loads(body) == {"name": call["name"], "arguments": json.loads(call["arguments"])}
    assert names == set(TOOL_SCHEMAS)  # every tool was chosen by some seed


def test_parallel_tool_calls(gen, tool_prompt):
    # the random model goes on with "\n" + another call about as often as it stops: every finished
    # call validates, and some generations hold several
    most = 0
    for seed in range(20):
        r = gen.generate(tool_prompt, tools=TOOLS, tool_choice="required", temperature=1.0, seed=seed,
                         max_new_tokens=150)
        for call in r.output.tool_calls:
            check_call(call)
        assert r.output.tool_calls and (r.finish_reason == "tool_calls" or r.output.truncated)
        most = max(most, len(r.output.tool_calls))
    assert most >= 2


def test_a_named_tool_choice_forces_that_call(gen, tool_prompt):
    choice = {"type": "function", "function": {"name": "add"}}
    for seed in range(20):
        r = gen.generate(tool_prompt, tools=TOOLS, tool_choice=choice, temperature=1.0, seed=seed)
        assert [c["function"]["name"] for c in r.output.tool_calls] == ["add"]
        check_call(r.output.tool_calls[0])


def test_auto_and_none(gen, tool_prompt):
    # the random model never picks <tool_call> by itself: a bias makes "auto" write calls now and then
    calls = 0
    for seed in range(30):
        r = gen.generate(tool_prompt, tools=TOOLS, tool_choice="auto", temperature=1.0, seed=seed,
                         max_new_tokens=100, logit_bias={352: 9.0})
        assert not r.output.errors or r.finish_reason == "length"  # a call cut off by the budget
        for call in r.output.tool_calls:
            check_call(call)
        calls += len(r.output.tool_calls)
        assert "<tool_call>" not in r.output.content or r.output.truncated
        r = gen.generate(tool_prompt, tools=TOOLS, tool_choice="none", temperature=1.0, seed=seed,
                         max_new_tokens=30, logit_bias={352: 9.0})
        assert not r.output.tool_calls and "<tool_call>" not in r.text
    assert calls > 0


def test_thinking_is_free_and_the_answer_validates(gen):
    schema = SCHEMAS["numbers with ranges"]
    prompt = gen.encode_chat([{"role": "user", "content": "Think, then answer in JSON."}], enable_thinking=True)
    reasoned = 0
    for seed in range(GENERATIONS):
        # a bias on </think> ends the random model's reasoning after a few tokens
        r = gen.generate(prompt, json_schema=schema, temperature=1.0, seed=seed, max_new_tokens=400,
                         logit_bias={355: 11.0})
        assert r.finish_reason == "stop", (seed, r.text)
        assert r.output.reasoning is not None
        jsonschema.validate(json.loads(r.output.content), schema)
        reasoned += bool(r.output.reasoning)
    assert reasoned > GENERATIONS // 4


def test_chat_session_and_model_generate(gen):
    from exaone_cpu.generation import ChatSession

    chat = ChatSession(gen, tools=TOOLS, tool_choice="required", temperature=1.0, seed=1)
    result = chat.send("Add 2 and 3.").until_done()
    assert result.finish_reason == "tool_calls"
    check_call(result.output.tool_calls[0])
    result = chat.add_tool_result(5, tool_choice="none", json_schema=SCHEMAS["numbers with ranges"]).until_done()
    jsonschema.validate(json.loads(result.text), SCHEMAS["numbers with ranges"])

    ids = gen.encode_chat([{"role": "user", "content": "hi"}])
    new = gen.model.generate(ids, 300, temperature=1.0, seed=3, tokenizer=gen.tokenizer,
                             json_schema=SCHEMAS["arrays and enums"])
    jsonschema.validate(json.loads(gen.tokenizer.decode(new)), SCHEMAS["arrays and enums"])
    with pytest.raises(ValueError, match="need tokenizer="):
        gen.model.generate(ids, 10, regex="a+")


def test_facade_generate(gen, tmp_path):
    from exaone_cpu.auto import AutoModelForCausalLM, AutoTokenizer

    path = gen.tokenizer.name_or_path
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = np.array([gen.encode_chat([{"role": "user", "content": "hi"}])])
    out = model.generate(ids, max_new_tokens=200, do_sample=True, seed=0, tokenizer=tok, regex=r"[a-c]{2,5}!")
    assert re.fullmatch(r"[a-c]{2,5}!", tok.decode(out[0, ids.shape[1]:]))
    with pytest.raises(ValueError, match="need tokenizer="):
        model.generate(ids, max_new_tokens=5, choices=["a"])


def test_stop_tokens_are_the_callers(gen, prompt):
    # without stop tokens (eos ignored) the grammar's end is where generation stops, never an eos token
    for seed in range(10):
        r = gen.generate(prompt, choices=["yes", "no"], stop_token_ids=(), temperature=1.0, seed=seed,
                         logit_bias={361: 30.0})
        assert r.text in ("yes", "no") and 361 not in r.token_ids
    r = gen.generate(prompt, grammar='start: "a"+', stop_token_ids=(), temperature=1.0, seed=1, max_new_tokens=12,
                     logit_bias={361: 30.0})
    assert r.finish_reason == "length" and set(r.text) == {"a"} and 361 not in r.token_ids
