"""`exaone-cpu chat` and `exaone-cpu generate`, driven through stdin on a tiny model with the real tokenizer."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import exaone_cpu
from exaone_cpu.generation import ChatSession, Generator

from model_factory import SHARED_MODEL_DIR, real_tokenizer_available, write_tiny_exaone

pytestmark = pytest.mark.skipif(not real_tokenizer_available(),
                                reason=f"EXAONE tokenizer files not found in {SHARED_MODEL_DIR}")

STATS = re.compile(r"\[stats\] prompt=(\d+) cached=(\d+) completion=(\d+) .* finish=(\w+)")


def cli(*args: str, input: str = "", cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # the same exaone_cpu as this test imports (cwd is elsewhere, so `-m` cannot pick up a source tree)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(exaone_cpu.__file__).parents[1]), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "exaone_cpu.cli", *args], input=input, capture_output=True,
                          text=True, encoding="utf-8", cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_exaone(tmp_path_factory.mktemp("tiny-exaone-cli"))


@pytest.fixture(scope="module")
def generator(model_dir):
    return Generator.from_pretrained(model_dir, threads=1)


def stats(stderr: str) -> list[tuple[int, int, int, str]]:
    return [(int(p), int(c), int(n), f) for p, c, n, f in STATS.findall(stderr)]


def test_help_documents_every_option_and_command(tmp_path):
    chat = cli("chat", "--help", cwd=tmp_path)
    assert chat.returncode == 0
    for option in ("MODEL", "--system", "--think", "--show-reasoning", "--max-new-tokens", "--temperature", "--top-p",
                   "--top-k", "--min-p", "--repetition-penalty", "--presence-penalty", "--seed", "--stop",
                   "--threads", "--stats"):
        assert option in chat.stdout, option
    for command in ("/think", "/show", "/clear", "/exit", "/help", "Ctrl-D"):
        assert command in chat.stdout, command

    generate = cli("generate", "--help", cwd=tmp_path)
    assert generate.returncode == 0
    for option in ("MODEL", "PROMPT", "--raw", "--think", "--system", "--max-new-tokens", "--temperature", "--top-p",
                   "--top-k", "--seed", "--threads", "--stop", "--hide-reasoning"):
        assert option in generate.stdout, option


def test_two_turn_conversation_uses_the_prompt_cache(model_dir, generator, tmp_path):
    run = cli("chat", str(model_dir), "--max-new-tokens", "6", "--stats", "--threads", "1",
              input="안녕?\nAnd then? 😀\n/exit\nnever sent\n", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    turns = stats(run.stderr)
    assert len(turns) == 2  # the line after /exit is not read
    assert turns[0][1] == 0 and turns[1][1] >= 10  # the second turn reuses the first one's cache
    assert all(n == 6 and f == "length" for _, _, n, f in turns)

    # the same conversation through the library prints the same answers
    chat = ChatSession(generator, max_new_tokens=6)
    results = [chat.send("안녕?").until_done(), chat.send("And then? 😀").until_done()]
    assert run.stdout == "".join(r.text.lstrip() + "\n" for r in results)
    assert [(r.prompt_tokens, r.cached_tokens) for r in results] == [(p, c) for p, c, _, _ in turns]


def test_think_show_clear_and_end_of_input(model_dir, generator, tmp_path):
    lines = ["hi", "/think", "how?", "/show", "why?", "/clear", "again", "/help", "/nonsense"]
    run = cli("chat", str(model_dir), "--max-new-tokens", "5", "--stats", "--temperature", "0",
              "--system", "Be brief.", input="\n".join(lines) + "\n", cwd=tmp_path)  # ends at end of input
    assert run.returncode == 0, run.stderr
    for notice in ("[reasoning on]", "[showing reasoning on]", "[conversation cleared]", "/exit",
                   "[unknown command /nonsense"):
        assert notice in run.stderr, notice
    turns = stats(run.stderr)
    assert len(turns) == 4
    assert turns[3][0] < turns[2][0]  # after /clear the prompt is short again

    chat = ChatSession(generator, system="Be brief.", max_new_tokens=5)
    hi = chat.send("hi").until_done()
    chat.thinking = True
    how = chat.send("how?").until_done()
    why = chat.send("why?").until_done()
    chat.clear()
    again = chat.send("again").until_done()
    counts = [(r.prompt_tokens, r.cached_tokens) for r in (hi, how, why, again)]
    assert counts == [(p, c) for p, c, _, _ in turns]
    # reasoning is hidden for "how?", shown from "why?" on (/show stays on after /clear)
    assert run.stdout == (hi.text.lstrip() + "\n" + displayed(how.text, show=False)
                          + displayed(why.text, show=True) + displayed(again.text, show=True))
    assert run.stdout.count("<think>") == 2


def displayed(text: str, show: bool) -> str:
    """How the chat prints a reasoning-mode answer: the reasoning (if shown) inside <think> ... </think>,
    then the answer without its leading blank lines."""
    reasoning, closed, answer = text.partition("</think>")
    answer = answer.lstrip()
    if not show:
        return answer + "\n"
    return "<think>\n" + reasoning + ("\n</think>\n\n" + answer if answer else "") + "\n"


def test_generate_streams_the_answer(model_dir, generator, tmp_path):
    run = cli("generate", str(model_dir), "너가 얼마나 대단한지 설명해 봐 😀", "--max-new-tokens", "12",
              "--stats", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    prompt = generator.encode_chat([{"role": "user", "content": "너가 얼마나 대단한지 설명해 봐 😀"}])
    expected = generator.generate(prompt, max_new_tokens=12)
    assert run.stdout == expected.text + "\n"
    assert stats(run.stderr) == [(len(prompt), 0, 12, "length")]

    think = cli("generate", str(model_dir), "-", "--think", "--max-new-tokens", "4", "--seed", "3",
                input="Which one is bigger, 3.12 vs 3.9?", cwd=tmp_path)
    assert think.returncode == 0, think.stderr
    prompt = generator.encode_chat([{"role": "user", "content": "Which one is bigger, 3.12 vs 3.9?"}],
                                   enable_thinking=True)
    # --think without sampling options uses the model card's temperature 0.6 / top-p 0.95
    expected = generator.generate(prompt, max_new_tokens=4, temperature=0.6, top_p=0.95, seed=3)
    assert think.stdout == "<think>\n" + expected.text + "\n"

    raw = cli("generate", str(model_dir), "Once upon a time", "--raw", "--max-new-tokens", "5", cwd=tmp_path)
    expected = generator.generate(generator.tokenizer.encode("Once upon a time"), max_new_tokens=5)
    assert raw.returncode == 0 and raw.stdout == expected.text + "\n"


def test_generate_reports_bad_input(tmp_path):
    run = cli("generate", str(tmp_path / "missing"), "hi", cwd=tmp_path)
    assert run.returncode == 2 and "does not exist" in run.stderr


def test_generate_with_structured_output(model_dir, generator, tmp_path):
    pytest.importorskip("llguidance")
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9},
                                               "ok": {"type": "boolean"}},
              "required": ["n", "ok"], "additionalProperties": False}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema), encoding="utf-8")
    run = cli("generate", str(model_dir), "JSON please", "--json-schema", str(path), "--temperature", "1",
              "--seed", "2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    prompt = generator.encode_chat([{"role": "user", "content": "JSON please"}])
    expected = generator.generate(prompt, json_schema=schema, temperature=1.0, seed=2)
    assert run.stdout == expected.text + "\n"
    value = json.loads(run.stdout)
    assert set(value) == {"n", "ok"} and 0 <= value["n"] <= 9

    choice = cli("generate", str(model_dir), "Pick", "--choice", "left", "--choice", "right", "--temperature", "1",
                 cwd=tmp_path)
    assert choice.returncode == 0 and choice.stdout in ("left\n", "right\n"), choice.stderr
    gbnf = cli("generate", str(model_dir), "Digits", "--grammar", 'root ::= [0-9] [0-9] "!"', cwd=tmp_path)
    assert gbnf.returncode == 0 and re.fullmatch(r"[0-9]{2}!\n", gbnf.stdout), gbnf.stderr
    bad = cli("generate", str(model_dir), "x", "--regex", "[a-", cwd=tmp_path)
    assert bad.returncode == 2 and "invalid structured-output constraint" in bad.stderr


def test_generate_with_speculative_decoding(model_dir, generator, tmp_path):
    text = "abc abc abc abc abc abc abc"
    prompt = generator.encode_chat([{"role": "user", "content": text}])
    expected = generator.generate(prompt, max_new_tokens=20)
    for options in (["--speculative", "prompt-lookup"], ["--draft", str(model_dir), "--draft-max", "3"]):
        run = cli("generate", str(model_dir), text, "--max-new-tokens", "20", "--stats", *options, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert run.stdout == expected.text + "\n"
        assert "drafted=" in run.stderr and stats(run.stderr) == [(len(prompt), 0, 20, "length")]
    if importlib.util.find_spec("llguidance") is not None:  # masks inside verification rounds
        choice = ["--choice", "abc abc abc", "--choice", "abd", "--temperature", "1", "--seed", "4"]
        plain = cli("generate", str(model_dir), text, *choice, cwd=tmp_path)
        spec = cli("generate", str(model_dir), text, *choice, "--speculative", "prompt-lookup", cwd=tmp_path)
        assert plain.returncode == spec.returncode == 0 and plain.stdout == spec.stdout, spec.stderr
    for options, message in ((["--draft-max", "0", "--speculative", "prompt-lookup"], "--draft-max must be between"),
                             (["--draft-max", "4"], "--draft-max needs"),
                             (["--draft", str(model_dir), "--speculative", "prompt-lookup"], "not both"),
                             (["--draft", str(tmp_path / "nowhere")], "nowhere")):
        run = cli("generate", str(model_dir), "x", *options, cwd=tmp_path)
        assert run.returncode == 2 and message in run.stderr, (options, run.stderr)
