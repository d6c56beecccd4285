"""The loader mutation fuzzer (tools/fuzz_loader.py), bounded and with a fixed seed: every mutated
checkpoint loads cleanly or fails with FileNotFoundError / CheckpointError / ConfigError / ValueError,
never another exception type, a MemoryError, a crash or a hang. Run it longer by hand:
`python tools/fuzz_loader.py --cases 5000`."""

import sys
from pathlib import Path

import pytest

from model_factory import real_tokenizer_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import fuzz_loader  # noqa: E402


@pytest.mark.skipif(not real_tokenizer_available(), reason="../shared/exaone-4.0-1.2b tokenizer files not present")
def test_mutated_checkpoints_load_or_fail_cleanly():
    results = fuzz_loader.fuzz(cases=200, seed=20261206, timeout=60, log=lambda _msg: None)
    assert not results["BAD"], results["BAD"][:5]
    assert results["ok"] and results["rejected"]  # the mutations reach both outcomes
