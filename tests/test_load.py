"""The server under load (tools/load_test.py), briefly: 16 streaming clients, a third hanging up
mid-stream, hostile requests mixed in. No engine death, no cross-talk, every hostile request a 4xx,
every slot free at the end, resident memory flat once the load runs. By hand, the full run:
`python tools/load_test.py MODEL --clients 16 --seconds 60`."""

import sys
from pathlib import Path

import pytest

from model_factory import real_tokenizer_available, write_tiny_exaone

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


@pytest.mark.skipif(not real_tokenizer_available(), reason="../shared/exaone-4.0-1.2b tokenizer files not present")
def test_sixteen_clients_with_hang_ups_and_hostile_requests(tmp_path):
    import load_test

    model_dir = write_tiny_exaone(tmp_path / "tiny", seed=7)
    # a short run: memory is taken as settled at half time (the full run by hand uses a quarter of 60 s)
    stats = load_test.run(str(model_dir), clients=16, seconds=12, tokens=16, threads=1, max_rss_growth=10,
                          baseline_at=0.5, log=lambda _msg: None)
    assert stats["engine_healthy"] and stats["slots_left"] == (0, 0)
    assert not stats["cross_talk"] and not stats["errors"] and not stats["hostile_failures"]
    assert stats["completed"] > 16 and stats["hung_up"] > 0 and stats["hostile"] > 0
    assert stats["cache_hits"] > 16  # repeated prompts started from the prefix cache, and got their exact text
    assert stats["rss_growth_mb"] <= 10, stats["rss_samples_mb"]
