"""The tokenizer built from vocab.json + merges.txt must match transformers id for id.

Expectations come from tools/make_tokenizer_fixtures.py (transformers' AutoTokenizer on the same files).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from exaone_cpu.tokenizer import Tokenizer

MODEL_DIR = Path(__file__).resolve().parents[2] / "shared" / "exaone-4.0-1.2b"
EXPECTED = json.loads((Path(__file__).parent / "data" / "tokenizer_expected.json").read_text(encoding="utf-8"))
TEXTS = EXPECTED["texts"]


@pytest.fixture(scope="module")
def tok():
    if not (MODEL_DIR / "vocab.json").is_file():
        pytest.skip(f"EXAONE tokenizer files not found in {MODEL_DIR}")
    return Tokenizer.from_pretrained(MODEL_DIR)


@pytest.mark.parametrize("case", TEXTS, ids=[f"text{i}" for i in range(len(TEXTS))])
def test_ids_and_decoding_match_transformers(tok, case):
    ids = tok.encode(case["text"])
    assert ids == case["ids"]
    assert tok.encode(case["text"], add_special_tokens=False) == case["ids"]
    assert tok.convert_ids_to_tokens(ids) == case["tokens"]
    assert tok.decode(ids) == case["decoded"]
    assert tok.decode(ids, skip_special_tokens=True) == case["decoded_skip_special"]


@pytest.mark.parametrize("case", TEXTS, ids=[f"text{i}" for i in range(len(TEXTS))])
def test_decode_inverts_encode(tok, case):
    assert tok.decode(tok.encode(case["text"])) == case["text"]


def test_special_tokens_and_sizes(tok):
    assert tok.vocab_size == EXPECTED["vocab_size"] == 102400
    assert len(tok) == EXPECTED["len"]
    for name, value in EXPECTED["special_tokens"].items():
        assert getattr(tok, name) == value
    for name, value in EXPECTED["special_token_ids"].items():
        assert getattr(tok, name) == value
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 361, 0)
    assert tok.all_special_ids == EXPECTED["all_special_ids"]


def test_added_tokens_have_transformers_flags(tok):
    ours = {str(i): {"content": t.content, "special": t.special} for i, t in tok.added_tokens_decoder.items()}
    assert ours == EXPECTED["added_tokens"]


def test_backend_pipeline_is_assembled_like_transformers(tok):
    backend = json.loads(tok.backend.to_str())
    ours = {key: backend[key] for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder")}
    ours["model"] = {k: v for k, v in backend["model"].items() if k not in ("vocab", "merges")}
    ours["num_merges"] = len(backend["model"]["merges"])
    expected = dict(EXPECTED["backend_pipeline"])
    # Older tokenizers releases serialize fewer BPE options (no ignore_merges): compare the ones they have.
    expected["model"] = {k: v for k, v in expected["model"].items() if k in ours["model"]}
    assert ours == expected


def test_no_bos_is_added(tok):
    ids = tok.encode("Hello")
    assert tok.bos_token_id not in ids and tok.eos_token_id not in ids


def test_markup_tokens_are_added_but_not_special(tok):
    ids = tok.encode("<think>\nx\n</think>\n\n<tool_call>{}</tool_call>[|endofturn|]")
    for token in ("<think>", "</think>", "<tool_call>", "</tool_call>", "[|endofturn|]"):
        assert tok.convert_tokens_to_ids(token) in ids
    assert tok.decode(ids, skip_special_tokens=True) == "<think>\nx\n</think>\n\n<tool_call>{}</tool_call>"


def test_whitespace_runs_match_before_bpe(tok):
    assert tok.encode("    ") == [tok.convert_tokens_to_ids(" " * 4)]
    # 40 spaces: the longest run token (31 spaces) first, then the 9-space token.
    assert tok.encode(" " * 40) == [tok.convert_tokens_to_ids(" " * 31), tok.convert_tokens_to_ids(" " * 9)]
    assert tok.encode("\t\t\t") == [tok.convert_tokens_to_ids("\t\t\t")]


def test_convert_tokens_to_ids(tok):
    assert tok.convert_tokens_to_ids("[|endofturn|]") == 361
    assert tok.convert_tokens_to_ids(["[PAD]", "[BOS]"]) == [0, 1]
    assert tok.convert_tokens_to_ids("definitely-not-a-token") == tok.unk_token_id


def test_call_and_tensors(tok):
    enc = tok("Hello world")
    expected = next(case["ids"] for case in TEXTS if case["text"] == "Hello world")
    assert enc["input_ids"] == enc.input_ids == expected
    assert enc["attention_mask"] == [1] * len(enc["input_ids"])
    arr = tok("Hello world", return_tensors="np")["input_ids"]
    assert arr.dtype == np.int64 and arr.shape == (1, len(enc["input_ids"]))
    batch = tok(["Hello world", "안녕"])
    assert batch["input_ids"][1] == tok.encode("안녕")
    with pytest.raises(ValueError, match="padding"):
        tok(["a", "a b c d"], return_tensors="np")
    with pytest.raises(ValueError, match="return_tensors"):
        tok("a", return_tensors="tf")


def test_decode_accepts_arrays(tok):
    ids = tok.encode("안녕하세요")
    assert tok.decode(np.asarray(ids)) == "안녕하세요"
    assert tok.batch_decode(np.asarray([ids])) == ["안녕하세요"]


def test_pt_tensors_need_torch(tok, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match="PyTorch"):
        tok("Hello", return_tensors="pt")


def test_tokenizer_json_is_used_when_present(tok, tmp_path):
    tok.backend.save(str(tmp_path / "tokenizer.json"))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(MODEL_DIR / name, tmp_path / name)
    loaded = Tokenizer.from_pretrained(tmp_path)  # no vocab.json / merges.txt here
    for case in TEXTS:
        assert loaded.encode(case["text"]) == case["ids"]
    assert loaded.eos_token_id == 361


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "GPT2Tokenizer"}')
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
    with pytest.raises(ValueError, match="LlamaTokenizer"):
        Tokenizer.from_pretrained(tmp_path)
