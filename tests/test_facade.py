"""The transformers-style facade: the model card's three examples, changed only in the import line, the model
path and return_tensors="np", run on a tiny random model with the real EXAONE tokenizer."""

from __future__ import annotations

import contextlib
import io
import re
import warnings

import numpy as np
import pytest

from exaone_cpu import AutoModelForCausalLM, AutoTokenizer
from exaone_cpu.sampling import SamplingParams
from exaone_cpu.tokenizer import Tokenizer

from model_factory import SHARED_MODEL_DIR, real_tokenizer_available, write_tiny_exaone

MODEL_CARD = SHARED_MODEL_DIR / "README.md"
EXAMPLES = {
    "non-reasoning": "### Non-reasoning mode",
    "reasoning": "### Reasoning mode",
    "tool use": "### Agentic tool use",
}

pytestmark = pytest.mark.skipif(
    not (real_tokenizer_available() and MODEL_CARD.is_file()),
    reason=f"EXAONE tokenizer files or model card not found in {SHARED_MODEL_DIR}",
)


def card_example(name: str, model_dir) -> str:
    """The example's code from the model card with the three allowed changes (each must apply exactly)."""
    card = MODEL_CARD.read_text(encoding="utf-8")
    start = card.index(EXAMPLES[name])
    code = re.search(r"```python\n(.*?)```", card[start:], re.S).group(1)
    replacements = [('return_tensors="pt"', 'return_tensors="np"')]
    if name == "non-reasoning":
        replacements += [
            ("from transformers import AutoModelForCausalLM, AutoTokenizer",
             "from exaone_cpu import AutoModelForCausalLM, AutoTokenizer"),
            ('model_name = "LGAI-EXAONE/EXAONE-4.0-1.2B"', f"model_name = {str(model_dir)!r}"),
        ]
    for old, new in replacements:
        assert code.count(old) == 1, f"model card example {name!r} no longer contains {old!r}"
        code = code.replace(old, new)
    assert "transformers" not in code and "LGAI-EXAONE" not in code
    return code


def run_code(code: str, namespace: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("error")  # device_map="auto", torch_dtype=... are ignored without warnings
        exec(compile(code, "<model card>", "exec"), namespace)
    return out.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_exaone(tmp_path_factory.mktemp("tiny-exaone-real-vocab"))


@pytest.fixture(scope="module")
def first_example(model_dir):
    """Runs the non-reasoning example; the other two continue from its namespace, as in the model card."""
    namespace: dict = {}
    printed = run_code(card_example("non-reasoning", model_dir), namespace)
    return namespace, printed


def check_output(namespace: dict, printed: str, max_new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    input_ids, output, tokenizer = namespace["input_ids"], namespace["output"], namespace["tokenizer"]
    assert isinstance(input_ids, np.ndarray) and isinstance(output, np.ndarray)
    assert input_ids.ndim == 2 and input_ids.shape[0] == 1 and output.dtype == np.int64
    prompt_len = input_ids.shape[1]
    assert output.shape[0] == 1 and prompt_len < output.shape[1] <= prompt_len + max_new_tokens
    np.testing.assert_array_equal(output[0, :prompt_len], input_ids[0])
    new = output[0, prompt_len:]
    assert new.max() < 102400 and not np.any(new[:-1] == 361)  # only the last token may be eos
    if len(new) < max_new_tokens:
        assert new[-1] == 361
    assert printed == tokenizer.decode(output[0]) + "\n"
    return input_ids[0], new


def test_non_reasoning_example(first_example):
    namespace, printed = first_example
    prompt, new = check_output(namespace, printed, 128)
    assert printed.startswith(
        "[|user|]\n너가 얼마나 대단한지 설명해 봐[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\n"
    )
    # do_sample=False is greedy decoding: the same tokens as the runtime's own greedy loop
    model = namespace["model"]
    assert new.tolist() == model.model.generate(prompt, 128)


def test_reasoning_example(first_example, model_dir):
    namespace, _ = first_example
    namespace = dict(namespace)
    printed = run_code(card_example("reasoning", model_dir), namespace)
    check_output(namespace, printed, 128)
    assert "Which one is bigger, 3.12 vs 3.9?[|endofturn|]\n[|assistant|]\n<think>\n" in printed
    assert "</think>" not in printed.split("[|assistant|]")[1][:20]  # the think block is left open


def test_tool_use_example(first_example, model_dir):
    namespace, _ = first_example
    namespace = dict(namespace)
    printed = run_code(card_example("tool use", model_dir), namespace)
    check_output(namespace, printed, 1024)
    assert printed.startswith("[|system|]\n# Available Tools")
    assert '<tool>{"type": "function", "function": {"name": "roll_dice"' in printed
    assert "Roll D6 dice twice![|endofturn|]" in printed


# ---- the facade's own behaviour ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype="bfloat16", device_map="auto", threads=1)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def prompt(tokenizer):
    return tokenizer.apply_chat_template([{"role": "user", "content": "안녕"}], add_generation_prompt=True,
                                         return_tensors="np")


def test_loading(lm, tokenizer, prompt):
    assert isinstance(tokenizer, Tokenizer)
    assert lm.device == "cpu" and lm.config.vocab_size == 102400 and lm.config.eos_token_ids == (361,)
    assert lm.eval() is lm and lm.to("cpu") is lm
    assert prompt.to(lm.device) is prompt and type(prompt.numpy()) is np.ndarray
    with pytest.raises(TypeError, match="load_in_8bit"):
        AutoModelForCausalLM.from_pretrained(lm.name_or_path, load_in_8bit=True)
    with pytest.raises(FileNotFoundError):
        AutoModelForCausalLM.from_pretrained(str(lm.name_or_path) + "-missing")


def test_sampling_arguments_follow_transformers(lm):
    # do_sample with the model card's settings; top_k keeps transformers' default of 50
    card = SamplingParams(temperature=0.6, top_p=0.95, top_k=50)
    assert lm._sampling(True, {"temperature": 0.6, "top_p": 0.95}) == card
    # greedy ignores the sampling settings, but not the repetition penalty
    greedy = SamplingParams(repetition_penalty=1.2)
    assert lm._sampling(False, {"temperature": 0.6, "repetition_penalty": 1.2}) == greedy
    assert lm._sampling(None, {}).greedy  # generation_config.json has no do_sample
    with pytest.raises(ValueError):
        lm._sampling(True, {"temperature": 0.0})


def test_generate_returns_the_input_container(lm, prompt):
    out = lm.generate(prompt, max_new_tokens=5, do_sample=False)
    assert isinstance(out, np.ndarray) and out.shape == (1, prompt.shape[1] + 5)
    as_list = lm.generate(prompt.tolist(), max_new_tokens=5)
    assert as_list == out.tolist()
    plain = lm.generate(np.asarray(prompt), max_new_tokens=5)
    assert type(plain) is np.ndarray and (plain == out).all()
    # max_length counts the prompt, as in transformers; the default is generation_config's max_length (20)
    assert lm.generate(prompt, max_length=prompt.shape[1] + 3).shape == (1, prompt.shape[1] + 3)
    assert lm.generate(prompt).shape == (1, max(20, prompt.shape[1]))
    sampled = [lm.generate(prompt, max_new_tokens=8, do_sample=True, temperature=1.0, seed=4) for _ in range(2)]
    assert (sampled[0] == sampled[1]).all()


def test_speculative_options_as_transformers_spells_them(lm, prompt):
    plain = lm.generate(prompt, max_new_tokens=16)
    assert (lm.generate(prompt, max_new_tokens=16, prompt_lookup_num_tokens=5) == plain).all()
    assert (lm.generate(prompt, max_new_tokens=16, prompt_lookup_num_tokens=3, max_matching_ngram_size=3) == plain).all()
    assert (lm.generate(prompt, max_new_tokens=16, assistant_model=lm) == plain).all()
    sampled = lm.generate(prompt, max_new_tokens=8, do_sample=True, temperature=1.0, seed=4)
    assert (lm.generate(prompt, max_new_tokens=8, do_sample=True, temperature=1.0, seed=4, assistant_model=lm)
            == sampled).all()
    with pytest.raises(ValueError, match="not both"):
        lm.generate(prompt, prompt_lookup_num_tokens=3, assistant_model=lm)
    with pytest.raises(ValueError, match="needs prompt_lookup_num_tokens"):
        lm.generate(prompt, max_matching_ngram_size=3)
    with pytest.raises(ValueError, match="exaone_cpu CausalLM"):
        lm.generate(prompt, assistant_model="a string")
    with pytest.raises(ValueError, match="num_tokens must be"):
        lm.generate(prompt, prompt_lookup_num_tokens=0)


def test_generate_with_torch(lm, prompt):
    torch = pytest.importorskip("torch")
    ids = torch.tensor(np.asarray(prompt))
    out = lm.generate(ids, max_new_tokens=4)
    assert isinstance(out, torch.Tensor) and out.tolist() == lm.generate(prompt, max_new_tokens=4).tolist()


def test_batch_rows_are_padded_after_eos(lm, prompt):
    row = np.asarray(prompt)[0]
    greedy = lm.model.generate(row, 6, stop_at_eos=False)
    other = row.copy()
    other[-2] = 4
    batch = np.stack([row, other])
    stop = greedy[2]
    out = lm.generate(batch, max_new_tokens=6, eos_token_id=stop, pad_token_id=0)
    first_stop = greedy.index(stop)
    assert out[0, len(row):].tolist() == greedy[: first_stop + 1] + [0] * (out.shape[1] - len(row) - first_stop - 1)
    assert out[1, : len(row)].tolist() == other.tolist()


def test_stop_strings_streamer_and_errors(lm, tokenizer, prompt):
    row = np.asarray(prompt)[0]
    full = lm.generate(prompt, max_new_tokens=12)
    text = tokenizer.decode(full[0, len(row):])
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    out = lm.generate(prompt, max_new_tokens=12, stop_strings=stop, tokenizer=tokenizer)
    # as transformers' StopStringCriteria: stop at the token completing the first occurrence, keeping it
    assert stop in tokenizer.decode(out[0, len(row):]) and stop not in tokenizer.decode(out[0, len(row):-1])
    np.testing.assert_array_equal(out[0], full[0, : out.shape[1]])

    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(np.asarray(value).tolist())

        def end(self):
            self.calls.append("end")

    recorder = Recorder()
    out = lm.generate(prompt, max_new_tokens=4, streamer=recorder)
    assert recorder.calls == [np.asarray(prompt).tolist()] + [[t] for t in out[0, len(row):].tolist()] + ["end"]

    with pytest.raises(ValueError, match="output_scores"):
        lm.generate(prompt, max_new_tokens=2, output_scores=True)
    with pytest.raises(ValueError, match="tokenizer"):
        lm.generate(prompt, max_new_tokens=2, stop_strings=["x"])
    with pytest.raises(NotImplementedError):
        lm.generate(prompt, max_new_tokens=2, num_beams=4)


def test_forward_logits(lm, prompt):
    logits = lm(prompt).logits
    assert logits.shape == (1, prompt.shape[1], 102400)
    np.testing.assert_array_equal(np.asarray(logits)[0], lm.model.logits(np.asarray(prompt)[0]))
