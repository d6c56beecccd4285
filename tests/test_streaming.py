"""Streaming detokenization never emits half a character and adds up to the full decode."""

from pathlib import Path

import pytest

from exaone_cpu.streaming import IncrementalDetokenizer

MODEL_DIR = Path(__file__).resolve().parents[2] / "shared" / "exaone-4.0-1.2b"

TEXTS = [
    # common Korean words are whole tokens; rare syllables are split into byte pieces
    "너가 얼마나 대단한지 설명해 봐. 뷁! 햏자 똠얌꿍 쀍 꽊",
    "😀👍🏽 🇰🇷 👨‍👩‍👧‍👦 ❤️ 🤖 emoji at the end 🎉",
    "<think>\n생각해 보면...\n</think>\n\n답: 서울은 맑음 ☀️[|endofturn|]",
    "Mixed 日本語 and español: ¿Qué tal? 龘 𠀀 ㈜ 안녕!",
]


@pytest.fixture(scope="module")
def tok():
    if not (MODEL_DIR / "vocab.json").is_file():
        pytest.skip(f"EXAONE tokenizer files not found in {MODEL_DIR}")
    from exaone_cpu.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(MODEL_DIR)


def stream(detok, ids):
    pieces = [detok.add(i) for i in ids]
    return pieces, detok.flush()


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_token_by_token(tok, text, skip_special_tokens):
    ids = tok.encode(text)
    # The case is only meaningful if some single token is an incomplete UTF-8 sequence.
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    pieces, tail = stream(IncrementalDetokenizer(tok, skip_special_tokens=skip_special_tokens), ids)
    assert not any("\ufffd" in piece for piece in pieces)
    assert tail == ""
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip_special_tokens)


def test_pieces_are_whole_characters(tok):
    ids = tok.encode("가나다라마바사 🎉🎉")
    pieces, _ = stream(IncrementalDetokenizer(tok), ids)
    assert [p for p in pieces if p] and all(p.encode("utf-8").decode("utf-8") == p for p in pieces)
    assert "".join(pieces) == "가나다라마바사 🎉🎉"


def test_truncated_character_comes_out_on_flush(tok):
    ids = tok.encode("끝 🎉")
    ids = ids[:-1]  # stop generation inside the emoji
    detok = IncrementalDetokenizer(tok)
    pieces, tail = stream(detok, ids)
    assert not any("\ufffd" in p for p in pieces)
    assert "\ufffd" in tail
    assert "".join(pieces) + tail == tok.decode(ids)


class ByteTokenizer:
    """Every id is one byte: the worst case for splitting UTF-8 characters."""

    def decode(self, ids, skip_special_tokens=False):
        return bytes(ids).decode("utf-8", errors="replace")


def test_byte_tokenizer_without_checkpoint():
    text = "a한글😀b"
    ids = list(text.encode("utf-8"))
    detok = IncrementalDetokenizer(ByteTokenizer())
    pieces = [detok.add(i) for i in ids]
    assert [p for p in pieces if p] == ["a", "한", "글", "😀", "b"]
    assert detok.flush() == ""
    assert detok.text == text


# ---- stop strings -------------------------------------------------------------------------------------------


def reference_stop(text, stops):
    """Plain reference: the first position where a stop string ends; of two ending there, the longer.
    Returns (text before the stop string, the stop string) or (text, None)."""
    for end in range(1, len(text) + 1):
        hits = [s for s in stops if s and text[:end].endswith(s)]
        if hits:
            stop = max(hits, key=len)
            return text[: end - len(stop)], stop
    return text, None


def test_stop_matcher_matches_the_reference_for_any_split():
    import numpy as np

    from exaone_cpu.streaming import StopMatcher

    rng = np.random.default_rng(0)
    alphabet = "ab한 "
    for _ in range(2000):
        text = "".join(rng.choice(list(alphabet), int(rng.integers(0, 20))))
        stops = ["".join(rng.choice(list(alphabet), int(rng.integers(1, 5)))) for _ in range(int(rng.integers(1, 4)))]
        want_text, want_stop = reference_stop(text, stops)
        matcher = StopMatcher(stops)
        cuts = sorted(set(rng.integers(0, len(text) + 1, 4).tolist()))
        got = "".join(matcher.feed(text[a:b]) for a, b in zip([0] + cuts, cuts + [len(text)])) + matcher.flush()
        assert (got, matcher.matched) == (want_text, want_stop), (text, stops)
