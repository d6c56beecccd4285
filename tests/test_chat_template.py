"""Chat prompts must be byte-identical to transformers' apply_chat_template(tokenize=False)."""

import json
import shutil
from datetime import datetime
from pathlib import Path

import jinja2
import numpy as np
import pytest
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE

from exaone_cpu.chat_template import NoChatTemplateError, render_chat_template
from exaone_cpu.tokenizer import Tokenizer

MODEL_DIR = Path(__file__).resolve().parents[2] / "shared" / "exaone-4.0-1.2b"
EXPECTED = json.loads((Path(__file__).parent / "data" / "chat_template_expected.json").read_text(encoding="utf-8"))
CASES = EXPECTED["cases"]


@pytest.fixture(scope="module")
def tok():
    if not (MODEL_DIR / "vocab.json").is_file():
        pytest.skip(f"EXAONE tokenizer files not found in {MODEL_DIR}")
    return Tokenizer.from_pretrained(MODEL_DIR)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_render_matches_transformers(tok, case):
    assert tok.apply_chat_template(case["messages"], tokenize=False, **case["kwargs"]) == case["rendered"]


@pytest.mark.parametrize("case", [c for c in CASES if "ids" in c], ids=[c["name"] for c in CASES if "ids" in c])
def test_tokenized_prompt_matches_transformers(tok, case):
    assert tok.apply_chat_template(case["messages"], **case["kwargs"]) == case["ids"]
    arr = tok.apply_chat_template(case["messages"], return_tensors="np", **case["kwargs"])
    assert arr.dtype == np.int64 and arr.shape == (1, len(case["ids"]))
    assert arr[0].tolist() == case["ids"]
    enc = tok.apply_chat_template(case["messages"], return_dict=True, **case["kwargs"])
    assert enc["input_ids"] == case["ids"] and enc["attention_mask"] == [1] * len(case["ids"])


@pytest.mark.parametrize("case", EXPECTED["errors"], ids=[c["name"] for c in EXPECTED["errors"]])
def test_template_errors_match_transformers(tok, case):
    with pytest.raises((jinja2.exceptions.TemplateError, ValueError)) as info:
        tok.apply_chat_template(case["messages"], tokenize=False, **case["kwargs"])
    assert type(info.value).__name__ == case["error_type"]
    if isinstance(info.value, jinja2.exceptions.TemplateError):  # raised by the template itself: same message
        assert str(info.value) == case["error"]


def test_enable_thinking_is_passed_only_when_given(tok):
    messages = [{"role": "user", "content": "hi"}]
    default = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert default.endswith("[|assistant|]\n<think>\n\n</think>\n\n")
    on = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=True)
    assert on.endswith("[|assistant|]\n<think>\n")


def test_template_from_tokenizer_config_and_missing_template(tok, tmp_path):
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        shutil.copy(MODEL_DIR / name, tmp_path / name)
    config = json.loads((MODEL_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    messages = CASES[0]["messages"]
    with pytest.raises(NoChatTemplateError, match="chat template"):
        Tokenizer.from_pretrained(tmp_path).apply_chat_template(messages)

    config["chat_template"] = tok.chat_template
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert (
        Tokenizer.from_pretrained(tmp_path).apply_chat_template(messages, tokenize=False, **CASES[0]["kwargs"])
        == CASES[0]["rendered"]
    )


def test_missing_template_error_without_checkpoint():
    bare = Tokenizer(Backend(BPE()), chat_template=None)
    with pytest.raises(NoChatTemplateError):
        bare.apply_chat_template([{"role": "user", "content": "hi"}])
    with pytest.raises(NoChatTemplateError):
        render_chat_template(None, [{"role": "user", "content": "hi"}])
    assert issubclass(NoChatTemplateError, ValueError)


# ---- the jinja environment itself (no checkpoint needed) ----


def render(template, messages=({"role": "user", "content": "x"},), **kwargs):
    return render_chat_template(template, list(messages), **kwargs)


def test_tojson_matches_json_dumps():
    value = {"b": '한국어 <tag> & "q"', "a": [1, 2.5, None, True]}
    assert render("{{ v | tojson }}", v=value) == json.dumps(value, ensure_ascii=False)
    assert render("{{ v | tojson(indent=2, sort_keys=True) }}", v=value) == json.dumps(
        value, ensure_ascii=False, indent=2, sort_keys=True
    )
    assert render("{{ v | tojson(separators=(',', ':'), ensure_ascii=True) }}", v=value) == json.dumps(
        value, separators=(",", ":")
    )


def test_environment_features():
    # trim_blocks/lstrip_blocks eat the newlines and indentation around tags; loopcontrols, namespace and
    # {% generation %} work (transformers renders this template to "ac2" too)
    template = (
        "{% set ns = namespace(n=0) %}\n"
        "  {% for m in messages %}\n"
        "{% if loop.index0 == 1 %}{% continue %}{% endif %}\n"
        "{% set ns.n = ns.n + 1 %}{% generation %}{{ m.content }}{% endgeneration %}\n"
        "{% endfor %}\n"
        "{{ ns.n }}"
    )
    messages = [{"role": "user", "content": c} for c in "abc"]
    assert render(template, messages) == "ac2"
    with pytest.raises(jinja2.exceptions.SecurityError):
        render("{% set ns = namespace() %}{% set ns._x = 1 %}")


def test_raise_exception_and_strftime_now():
    with pytest.raises(jinja2.exceptions.TemplateError, match="no such role"):
        render("{{ raise_exception('no such role') }}")
    assert render("{{ strftime_now('%Y') }}") == str(datetime.now().year)


def test_variables_passed_like_transformers():
    template = "|".join(
        ["{{ bos_token }}", "{{ eos_token }}", "{{ tools is none }}", "{{ documents is none }}"]
        + ["{{ add_generation_prompt }}", "{{ custom }}"]
    )
    out = render(template, special_tokens={"bos_token": "[BOS]", "eos_token": "[EOS]"}, custom=7)
    assert out == "[BOS]|[EOS]|True|True|False|7"
    # keywords override special tokens of the same name
    assert render("{{ eos_token }}", special_tokens={"eos_token": "[EOS]"}, eos_token="X") == "X"


def test_messages_are_normalized():
    template = "{% for m in messages %}{{ m | tojson }}\n{% endfor %}"
    messages = [
        {"role": "assistant", "content": None, "tool_calls": None, "reasoning": "r"},
        {"role": "user", "content": np.int64(3)},
    ]
    lines = render(template, messages).splitlines()
    assert json.loads(lines[0]) == {"thinking": "r", "role": "assistant", "reasoning": "r", "reasoning_content": "r"}
    assert json.loads(lines[1]) == {"role": "user", "content": 3}


def test_conversation_objects_and_bad_inputs():
    class Chat:
        messages = [{"role": "user", "content": "hi"}]

    assert render_chat_template("{{ messages[0].content }}", Chat()) == "hi"
    with pytest.raises(ValueError, match="empty"):
        render_chat_template("x", [])
    with pytest.raises(TypeError, match="tools"):
        render("x", tools=[lambda: None])


def test_continue_final_message_cuts_after_the_last_message():
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y "}]
    loop = "{% for m in messages %}<{{ m.content }}>{% endfor %}"
    assert render_chat_template(loop, messages, continue_final_message=True) == "<x><y "
    trimmed = "{% for m in messages %}<{{ m.content | trim }}>{% endfor %}"
    assert render_chat_template(trimmed, messages, continue_final_message=True) == "<x><y"
    with pytest.raises(ValueError, match="no text"):
        render_chat_template(loop, messages, continue_final_message="reasoning_content")
    with pytest.raises(ValueError, match="verbatim"):
        render_chat_template("{{ messages[0].content }}", messages, continue_final_message=True)


def test_rendering_is_bounded():
    """Output stops at MAX_RENDERED_CHARS as it is produced: unbounded, these would take 12 GB or 10**10 steps."""
    from exaone_cpu.chat_template import render_chat_template

    messages = [{"role": "user", "content": "hi"}]
    for template in ("{{ 'ab ' * 4000000000 }}", "{{ [1] * 100000000 }}",
                     "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}"):
        with pytest.raises(ValueError, match="chat template"):
            render_chat_template(template, messages)
