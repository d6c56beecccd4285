"""Hub ids: `load("owner/name")`, Generator / Tokenizer / the facade / the CLI resolve a repo id from a
fake Hugging Face cache (a temporary HF_HOME laid out as huggingface_hub lays it out) with the
network blocked: cached files are used without a connection, local_files_only / HF_HUB_OFFLINE
never try one, a GGUF file is picked by quant type, and what is missing is a clear error."""

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

import exaone_cpu  # noqa: E402
from exaone_cpu import cli  # noqa: E402
from exaone_cpu.auto import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from exaone_cpu.hub import pick_gguf, resolve_model  # noqa: E402
from exaone_cpu.tokenizer import Tokenizer  # noqa: E402
from model_factory import SHARED_MODEL_DIR, real_tokenizer_available, write_gguf, write_tiny_exaone  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return home


def cache_repo(home: Path, repo: str, files: dict[str, Path]) -> Path:
    """A repo in the cache as huggingface_hub stores it: refs/main -> snapshots/<commit>/<files>."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copy(src, snapshot / name)
    return snapshot


def fixture_files(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in directory.iterdir() if p.is_file()}


def test_load_from_the_cache_offline(hf_home, monkeypatch, no_network):
    snapshot = cache_repo(hf_home, "lg/tiny", fixture_files(FIXTURES / "tiny-1.2b"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = exaone_cpu.load("lg/tiny")
    direct = exaone_cpu.load(FIXTURES / "tiny-1.2b")
    ids = np.arange(1, 20)
    np.testing.assert_array_equal(model.logits(ids), direct.logits(ids))
    assert resolve_model("lg/tiny") == snapshot


def test_cache_first_even_when_downloads_are_allowed(hf_home, no_network):
    cache_repo(hf_home, "lg/tiny", fixture_files(FIXTURES / "tiny-1.2b"))
    exaone_cpu.load("lg/tiny")  # complete in the cache: no connection (no_network would fail it)
    assert exaone_cpu.loading.read_config("lg/tiny").num_hidden_layers == 3


def test_missing_repo_is_a_clear_error_without_network(hf_home, no_network):
    with pytest.raises(FileNotFoundError, match=r"'lg/absent' is not a local path and is not in the Hugging Face "
                                                 r"cache .*downloads are off"):
        exaone_cpu.load("lg/absent", local_files_only=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        exaone_cpu.load("./not/a/repo/id")


def test_gguf_repo_picks_a_file_by_quant_type(hf_home, tmp_path, no_network):
    files = {}
    for kind in ("Q8_0", "Q4_0"):
        files[f"EXAONE-tiny-{kind}.gguf"] = write_gguf(FIXTURES / "tiny-1.2b", tmp_path / f"t-{kind}.gguf", kind)
    snapshot = cache_repo(hf_home, "lg/tiny-GGUF", files)
    model = exaone_cpu.load("lg/tiny-GGUF", gguf="Q4_0", local_files_only=True)
    assert model.layers[0].q_proj.format == exaone_cpu._core.QuantFormat.Q4G
    assert resolve_model("lg/tiny-GGUF", gguf="q8_0", local_files_only=True) == snapshot / "EXAONE-tiny-Q8_0.gguf"
    assert resolve_model("lg/tiny-GGUF", gguf="EXAONE-tiny-Q4_0.gguf", local_files_only=True).name == "EXAONE-tiny-Q4_0.gguf"
    with pytest.raises(FileNotFoundError, match="holds 2 GGUF files; pick one with gguf="):
        exaone_cpu.load("lg/tiny-GGUF", local_files_only=True)
    with pytest.raises(FileNotFoundError, match="'Q5_K_M'"):
        exaone_cpu.load("lg/tiny-GGUF", gguf="Q5_K_M", local_files_only=True)
    # a local directory of GGUF files works the same way
    assert resolve_model(snapshot, gguf="Q4_0").name == "EXAONE-tiny-Q4_0.gguf"


def test_pick_gguf_matches_whole_quant_names():
    files = ["a/m-Q4_K_M.gguf", "a/m-Q4_K_S.gguf", "a/m-Q8_0.gguf", "README.md"]
    assert pick_gguf(files, "Q4_K_M", "r") == "a/m-Q4_K_M.gguf"
    assert pick_gguf(files, "q8_0", "r") == "a/m-Q8_0.gguf"
    with pytest.raises(FileNotFoundError, match="no GGUF file matching 'Q4_K'"):
        pick_gguf(files, "Q4_K", "r")  # not a prefix match of Q4_K_M / Q4_K_S
    assert pick_gguf(["only.gguf"], None, "r") == "only.gguf"


def test_facade_honours_local_files_only(hf_home, no_network):
    cache_repo(hf_home, "lg/tiny", fixture_files(FIXTURES / "tiny-1.2b"))
    model = AutoModelForCausalLM.from_pretrained("lg/tiny", local_files_only=True, torch_dtype="bfloat16")
    assert model.config.num_hidden_layers == 3
    with pytest.raises(FileNotFoundError, match="downloads are off"):
        AutoModelForCausalLM.from_pretrained("lg/other", local_files_only=True)


@pytest.mark.skipif(not real_tokenizer_available(), reason="needs the real EXAONE tokenizer files")
def test_generator_tokenizer_and_cli_take_hub_ids(hf_home, tmp_path, monkeypatch, capsys, no_network):
    src = write_tiny_exaone(tmp_path / "src", dtype="F32", seed=5)
    files = {p.name: p.resolve() for p in src.iterdir()}
    cache_repo(hf_home, "lg/tiny-chat", files)
    gguf = write_gguf(src, tmp_path / "tiny-Q8_0.gguf", "Q8_0", tokenizer_dir=SHARED_MODEL_DIR)
    cache_repo(hf_home, "lg/tiny-chat-GGUF", {"tiny-chat-Q8_0.gguf": gguf, "tiny-chat-F32.gguf": gguf})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    g = exaone_cpu.Generator.from_pretrained("lg/tiny-chat")
    want = g.generate(g.encode_chat([{"role": "user", "content": "Hi"}]), max_new_tokens=4).token_ids
    assert Tokenizer.from_pretrained("lg/tiny-chat").encode("안녕") == AutoTokenizer.from_pretrained("lg/tiny-chat").encode("안녕")
    gg = exaone_cpu.Generator.from_pretrained("lg/tiny-chat-GGUF", gguf="Q8_0")
    assert len(gg.generate(gg.encode_chat([{"role": "user", "content": "Hi"}]), max_new_tokens=4).token_ids) == len(want)
    assert cli.main(["generate", "lg/tiny-chat-GGUF", "--gguf", "Q8_0", "Hi", "--max-new-tokens", "3"]) == 0
    assert cli.main(["generate", "lg/tiny-chat-GGUF", "Hi"]) == 2  # two GGUF files: --gguf is needed
    assert "pick one with gguf= (or --gguf)" in capsys.readouterr().err


def test_quantize_takes_a_hub_id(hf_home, tmp_path, monkeypatch, no_network):
    cache_repo(hf_home, "lg/tiny", fixture_files(FIXTURES / "tiny-1.2b"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["quantize", "lg/tiny", str(tmp_path / "q4"), "--bits", "4", "--quiet"]) == 0
    assert exaone_cpu.load(tmp_path / "q4").layers[0].q_proj.format == exaone_cpu._core.QuantFormat.Q4G
    assert cli.main(["quantize", "lg/missing", str(tmp_path / "x"), "--bits", "4"]) == 2
