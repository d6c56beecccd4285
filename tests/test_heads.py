"""Task heads against transformers' float32 eager outputs (fixtures from tools/make_fixtures.py)."""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import exaone_cpu
from exaone_cpu import CheckpointError, ConfigError
from exaone_cpu.heads import (
    Exaone4ForQuestionAnswering,
    Exaone4ForSequenceClassification,
    Exaone4ForTokenClassification,
)

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 2e-4


def ref(name):
    return np.load(FIXTURES / name / "reference.npz")


def close(actual, expected):
    return np.abs(actual - expected).max() <= TOL * np.abs(expected).max()


def test_load_picks_the_class_from_architectures():
    assert type(exaone_cpu.load(FIXTURES / "tiny-seqcls")) is Exaone4ForSequenceClassification
    assert type(exaone_cpu.load(FIXTURES / "tiny-tokcls")) is Exaone4ForTokenClassification
    assert type(exaone_cpu.load(FIXTURES / "tiny-qa")) is Exaone4ForQuestionAnswering
    assert type(exaone_cpu.load(FIXTURES / "tiny-1.2b")) is exaone_cpu.Model


def test_sequence_classification():
    model = exaone_cpu.load(FIXTURES / "tiny-seqcls")
    r = ref("tiny-seqcls")
    ids = r["input_ids"]
    assert model.config.pad_token_id == 0 and (ids[1] == 0).sum() == 5
    for row in range(2):  # row 1 ends in 5 pad tokens: scored at its last non-pad token
        logits = model.logits(ids[row])
        assert logits.shape == (3,) and logits.dtype == np.float32
        assert close(logits, r["logits"][row])
        assert model.predict(ids[row]) == model.config.id2label[int(np.argmax(r["logits"][row]))]
    unpadded = ids[1][ids[1] != 0]
    assert close(model.logits(unpadded), r["logits_row1_unpadded"])
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}


def test_token_classification():
    model = exaone_cpu.load(FIXTURES / "tiny-tokcls")
    r = ref("tiny-tokcls")
    logits = model.logits(r["input_ids"])
    assert logits.shape == r["logits"].shape and close(logits, r["logits"])
    expected = [model.config.id2label[int(i)] for i in np.argmax(r["logits"], -1)]
    assert model.predict(r["input_ids"]) == expected
    assert "sliding_attention" in model.config.layer_types  # this fixture is the hybrid shape


def test_question_answering():
    model = exaone_cpu.load(FIXTURES / "tiny-qa")
    r = ref("tiny-qa")
    start, end = model.logits(r["input_ids"])
    assert close(start, r["start_logits"]) and close(end, r["end_logits"])
    span = model.best_span(r["input_ids"], context_start=2, max_answer_tokens=4)
    # independent brute force over the allowed spans
    best = max(
        ((s, e) for s in range(2, len(start)) for e in range(s, min(s + 4, len(start)))),
        key=lambda se: r["start_logits"][se[0]] + r["end_logits"][se[1]],
    )
    assert (span.start, span.end) == best and span.text is None


def test_heads_do_not_generate():
    model = exaone_cpu.load(FIXTURES / "tiny-seqcls")
    with pytest.raises(TypeError, match="no language-model head"):
        model.generate([1, 2, 3])


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def test_unknown_architecture(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(FIXTURES / "tiny-seqcls", d)
    _edit_config(d, architectures=["Exaone4ForMultipleChoice"])
    with pytest.raises(ConfigError, match="unknown architecture 'Exaone4ForMultipleChoice'"):
        exaone_cpu.load(d)


def test_label_map_inconsistent_with_num_labels(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(FIXTURES / "tiny-seqcls", d)
    _edit_config(d, num_labels=5)
    with pytest.raises(ConfigError, match="num_labels is 5 but id2label has 3"):
        exaone_cpu.load(d)


def test_head_size_must_match_the_label_map(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(FIXTURES / "tiny-seqcls", d)
    _edit_config(d, id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 1})
    with pytest.raises(CheckpointError, match=r"score.weight' has shape \[3, 64\], expected \[2, 64\]"):
        exaone_cpu.load(d)


def test_missing_head_tensor(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(FIXTURES / "tiny-qa", d)
    f = d / "model.safetensors"
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    del header["qa_outputs.bias"]
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    f.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])
    with pytest.raises(CheckpointError, match="missing tensor 'qa_outputs.bias'"):
        exaone_cpu.load(d)
