"""EXAONE 4.0 tokenizer built on the `tokenizers` library, without transformers.

With a `tokenizer.json` the backend is loaded as is. Without one, the backend is
assembled from vocab.json + merges.txt + tokenizer_config.json exactly as
transformers 5.x does for `"tokenizer_class": "GPT2Tokenizer"`
(`GPT2Tokenizer.__init__` + `TokenizersBackend.__init__`): byte-level BPE with
no unk token, ByteLevel pre-tokenizer and decoder, a TemplateProcessing
post-processor that adds nothing unless add_bos_token/add_eos_token are set,
and every entry of `added_tokens_decoder` registered with its own flags (so the
whitespace-run tokens and `<think>`/`<tool_call>` match before BPE, and only
the ones marked special are dropped by `skip_special_tokens`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, pre_tokenizers, processors
from tokenizers import Tokenizer as _Backend
from tokenizers.models import BPE

from .chat_template import NoChatTemplateError, render_chat_template
from .gguf_file import GGUFError, GGUFFile, is_gguf, open_gguf
from .hub import is_repo_id, resolve_model

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"

# Named special tokens, in transformers' SPECIAL_TOKENS_ATTRIBUTES order.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# GGUF token types of added tokens, and the tokenizer.ggml keys of the named special tokens.
_GGUF_CONTROL, _GGUF_USER_DEFINED = 3, 4
_GGUF_SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
                     "sep_token": "seperator_token_id", "pad_token": "padding_token_id", "cls_token": "cls_token_id",
                     "mask_token": "mask_token_id"}

# Classes whose slow->fast conversion is the GPT-2 byte-level BPE one.
_BYTE_LEVEL_BPE_CLASSES = {"GPT2Tokenizer", "GPT2TokenizerFast", "PreTrainedTokenizerFast", "TokenizersBackend"}


class BatchEncoding(dict):
    """Dict of model inputs that also allows attribute access (`enc.input_ids`), like transformers."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet (bytes_to_unicode), inverted: printable bytes stand for themselves,
    the others for 256 + their rank."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


_BYTE_OF_CHAR = _byte_of_char()


def _token_content(value: Any) -> str | None:
    # Tokens are serialized either as plain strings or as AddedToken dicts.
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"] or None
    raise ValueError(f"cannot read a special token from {str(value)[:100]!r}")


def _read_json(path: Path) -> dict:
    """A JSON object from path; anything else is a ValueError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def _check_added_tokens(path: Path, added: Any) -> dict[str, dict]:
    """added_tokens_decoder: {id (a string of digits): {content: str, flags: bool ...}}."""
    if added is None:
        return {}
    if not isinstance(added, dict):
        raise ValueError(f"{path}: added_tokens_decoder must be an object")
    for key, entry in added.items():
        where = f"{path}: added_tokens_decoder[{key[:20]!r}]"
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 9):
            raise ValueError(f"{where}: keys must be token ids")
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) or not entry["content"]:
            raise ValueError(f"{where}: must be an object with a non-empty string 'content'")
        for flag in ("single_word", "lstrip", "rstrip", "normalized", "special"):
            if flag in entry and not isinstance(entry[flag], bool):
                raise ValueError(f"{where}.{flag} must be true or false, got {entry[flag]!r}")
    return added


def _to_id_list(ids: Any) -> list[int]:
    if isinstance(ids, int):
        return [ids]
    if hasattr(ids, "tolist"):  # numpy arrays and torch tensors
        ids = ids.tolist()
        if isinstance(ids, int):
            return [ids]
    ids = list(ids)
    if ids and isinstance(ids[0], (list, tuple)):
        raise ValueError("decode expects one sequence of ids; use batch_decode for a batch")
    return [int(i) for i in ids]


def _as_tensor(rows: list[list[int]], return_tensors: str | None) -> Any:
    if return_tensors is None:
        return rows
    if return_tensors == "np":
        import numpy as np

        return np.asarray(rows, dtype=np.int64)
    if return_tensors == "pt":
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                "return_tensors='pt' needs PyTorch, which is not installed; use return_tensors='np' instead"
            ) from e
        return torch.tensor(rows, dtype=torch.long)
    raise ValueError(f"return_tensors must be None, 'np' or 'pt', got {return_tensors!r}")


def _build_byte_level_bpe(model_dir: Path, config: dict) -> _Backend:
    vocab_path, merges_path = model_dir / VOCAB_FILE, model_dir / MERGES_FILE
    for path in (vocab_path, merges_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: without {TOKENIZER_FILE} the tokenizer needs {path.name}")
    # Same parser the Rust BPE uses for these files (skips the "#version" line).
    try:
        vocab, merges = BPE.read_file(str(vocab_path), str(merges_path))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exception
        raise ValueError(f"{vocab_path} / {merges_path.name} could not be read: {e}") from None
    try:
        model = BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                    fuse_unk=False)
    except Exception as e:  # noqa: BLE001 - e.g. a merge of tokens the vocabulary does not have
        raise ValueError(f"{vocab_path} / {merges_path.name} do not agree: {e}") from None
    backend = _Backend(model)
    add_prefix_space = bool(config.get("add_prefix_space", False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    backend.decoder = decoders.ByteLevel()
    return backend


def _template_post_processor(bos: tuple[str, int] | None, eos: tuple[str, int] | None) -> processors.PostProcessor:
    # transformers' TokenizersBackend.update_post_processor
    single = f"{bos[0] + ':0 ' if bos else ''}$A:0{' ' + eos[0] + ':0' if eos else ''}"
    pair = f"{single}{' ' + bos[0] + ':1' if bos else ''} $B:1{' ' + eos[0] + ':1' if eos else ''}"
    special = [t for t in (bos, eos) if t]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


class Tokenizer:
    """Byte-level BPE tokenizer with EXAONE's special tokens and chat template."""

    def __init__(
        self,
        backend: _Backend,
        special_tokens: dict[str, str] | None = None,
        additional_special_tokens: Sequence[str] = (),
        chat_template: str | dict[str, str] | None = None,
        name_or_path: str = "",
    ):
        self.backend = backend
        self.name_or_path = name_or_path
        self.chat_template = chat_template
        self._special = {k: v for k, v in (special_tokens or {}).items() if k in SPECIAL_TOKEN_NAMES and v is not None}
        self.additional_special_tokens = list(additional_special_tokens)

    # ---- loading -------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path, *, gguf: str | None = None,
                        local_files_only: bool | None = None) -> Tokenizer:
        """The tokenizer of a model directory (tokenizer.json, or vocab.json + merges.txt, with
        tokenizer_config.json), of a GGUF file, or of a Hub repo id (exaone_cpu.hub)."""
        model_dir = Path(path)
        if not model_dir.exists() and is_repo_id(path):
            model_dir = resolve_model(path, gguf=gguf, local_files_only=local_files_only)
        if is_gguf(model_dir):
            return cls.from_gguf(open_gguf(model_dir))
        if not model_dir.is_dir():
            raise FileNotFoundError(f"tokenizer directory {model_dir} does not exist")
        config_path = model_dir / TOKENIZER_CONFIG_FILE
        config = _read_json(config_path) if config_path.is_file() else {}
        map_path = model_dir / SPECIAL_TOKENS_MAP_FILE
        special_map = _read_json(map_path) if map_path.is_file() else {}

        # tokenizer_config.json wins over the legacy special_tokens_map.json.
        special = {}
        for name in SPECIAL_TOKEN_NAMES:
            source = config_path if name in config else map_path
            try:
                content = _token_content(config.get(name, special_map.get(name)))
            except ValueError as e:
                raise ValueError(f"{source}: {name}: {e}") from None
            if content is not None:
                special[name] = content
        extra = config.get("additional_special_tokens") or config.get("extra_special_tokens")
        if not extra:
            extra = special_map.get("additional_special_tokens") or []
        if isinstance(extra, dict):  # v5 named extras: {"image_token": "<image>"}
            extra = list(extra.values())
        if not isinstance(extra, list):
            raise ValueError(f"{config_path}: additional_special_tokens must be a list")
        try:
            extra = [t for t in (_token_content(t) for t in extra) if t is not None]
        except ValueError as e:
            raise ValueError(f"{config_path}: additional_special_tokens: {e}") from None
        for name in ("tokenizer_class", "chat_template"):
            value = config.get(name)
            if value is not None and not isinstance(value, (str, list)):
                raise ValueError(f"{config_path}: {name} must be a string, got {type(value).__name__}")
        for name in ("add_prefix_space", "add_bos_token", "add_eos_token", "split_special_tokens"):
            if config.get(name) is not None and not isinstance(config[name], bool):
                raise ValueError(f"{config_path}: {name} must be true or false, got {config[name]!r}")
        _check_added_tokens(config_path, config.get("added_tokens_decoder"))

        tokenizer_json = model_dir / TOKENIZER_FILE
        if tokenizer_json.is_file():
            try:
                backend = _Backend.from_file(str(tokenizer_json))
            except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exception
                raise ValueError(f"{tokenizer_json} could not be read: {e}") from None
        else:
            tokenizer_class = config.get("tokenizer_class", "GPT2Tokenizer")
            if tokenizer_class not in _BYTE_LEVEL_BPE_CLASSES:
                raise ValueError(
                    f"{model_dir} has no {TOKENIZER_FILE} and its tokenizer_class {tokenizer_class!r} is not a "
                    "GPT-2 style byte-level BPE tokenizer; only those can be built from vocab.json + merges.txt"
                )
            backend = _build_byte_level_bpe(model_dir, config)
            cls._register_added_tokens(backend, config, special, extra)
            ends = {}
            for end in ("bos", "eos"):
                token = special.get(f"{end}_token")
                if config.get(f"add_{end}_token") and token is not None:
                    ends[end] = (token, backend.token_to_id(token))
            backend.post_processor = _template_post_processor(ends.get("bos"), ends.get("eos"))

        # split_special_tokens=True in the config means special tokens are tokenized as plain text.
        backend.encode_special_tokens = bool(config.get("split_special_tokens", False))

        template_path = model_dir / CHAT_TEMPLATE_FILE
        if template_path.is_file():  # the standalone file takes priority, as in transformers
            chat_template = template_path.read_text(encoding="utf-8")
        else:
            chat_template = config.get("chat_template")
            if isinstance(chat_template, list):  # [{"name": ..., "template": ...}, ...]
                if not all(isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str)
                           for t in chat_template):
                    raise ValueError(f"{config_path}: chat_template list entries need a string name and template")
                chat_template = {t["name"]: t["template"] for t in chat_template}
        return cls(backend, special, extra, chat_template, name_or_path=str(path))

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> Tokenizer:
        """The tokenizer a GGUF file stores in `tokenizer.ggml.*` (model "gpt2": byte-level BPE;
        token types CONTROL and USER_DEFINED are the special and the plain added tokens) with its
        `tokenizer.chat_template`."""
        model = f.get("tokenizer.ggml.model", str, required=True)
        if model != "gpt2":
            raise GGUFError(f"{f.path}: tokenizer.ggml.model {model!r} is not supported (EXAONE 4 uses 'gpt2', "
                            "byte-level BPE)")
        pre = f.get("tokenizer.ggml.pre", str, "default")
        if pre not in ("exaone4", "gpt2", "default"):
            raise GGUFError(f"{f.path}: tokenizer.ggml.pre {pre!r} is not EXAONE 4's pre-tokenizer ('exaone4')")
        tokens = f.get("tokenizer.ggml.tokens", list, required=True)
        types = f.get("tokenizer.ggml.token_type", list, [1] * len(tokens))
        merges = f.get("tokenizer.ggml.merges", list, required=True)
        if (not all(isinstance(t, str) for t in tokens) or len(types) != len(tokens)
                or not all(isinstance(t, int) and not isinstance(t, bool) for t in types)):
            raise GGUFError(f"{f.path}: tokenizer.ggml.tokens and token_type must be lists of strings and of "
                            "integers, equally long")
        pairs = []
        for m in merges:
            parts = m.split(" ") if isinstance(m, str) else ()
            if len(parts) != 2:
                raise GGUFError(f"{f.path}: tokenizer.ggml.merges entry {m!r:.60} is not two tokens and a space")
            pairs.append((parts[0], parts[1]))
        added = [(tokens[i], t == _GGUF_CONTROL) for i, t in enumerate(types) if t in (_GGUF_CONTROL, _GGUF_USER_DEFINED)]
        special = {}
        for name, key in _GGUF_SPECIAL_IDS.items():
            i = f.get(f"tokenizer.ggml.{key}", int)
            if i is not None:
                if not 0 <= i < len(tokens):
                    raise GGUFError(f"{f.path}: tokenizer.ggml.{key} {i} is outside the vocabulary of {len(tokens)}")
                special[name] = tokens[i]
        try:
            return cls.from_vocab(tokens, pairs, added=added, special=special,
                                  add_bos=f.get("tokenizer.ggml.add_bos_token", bool, False),
                                  add_eos=f.get("tokenizer.ggml.add_eos_token", bool, False),
                                  chat_template=f.get("tokenizer.chat_template", str), name_or_path=str(f.path))
        except ValueError as e:
            raise GGUFError(str(e)) from None

    @classmethod
    def from_vocab(cls, tokens: Sequence[str], merges: Sequence[tuple[str, str]], *, added: Sequence[tuple[str, bool]],
                   special: dict[str, str], add_bos: bool = False, add_eos: bool = False,
                   chat_template: str | None = None, name_or_path: str = "") -> Tokenizer:
        """A byte-level BPE tokenizer from a token list (id = position, tokens in GPT-2's byte-level
        alphabet), its merges, and the tokens added on top of BPE as (content, special): how a GGUF
        file stores EXAONE's tokenizer. Added tokens match before BPE, unnormalized and unstripped,
        as EXAONE's tokenizer_config.json declares all of them."""
        vocab = {}
        for i, token in enumerate(tokens):
            vocab.setdefault(token, i)  # a duplicate keeps its first id, as the Rust BPE does
        try:
            model = BPE(vocab=vocab, merges=list(merges), dropout=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False)
        except Exception as e:  # noqa: BLE001 - e.g. a merge of tokens the vocabulary does not have
            raise ValueError(f"{name_or_path}: the vocabulary and merges do not agree: {e}") from None
        backend = _Backend(model)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        config = {"added_tokens_decoder": {str(vocab[c]) if c in vocab else str(len(tokens) + i):
                                           {"content": c, "special": sp, "normalized": False}
                                           for i, (c, sp) in enumerate(added)}}
        extra = [c for c, sp in added if sp and c not in special.values()]
        cls._register_added_tokens(backend, config, special, [])
        ends = {end: (special[f"{end}_token"], backend.token_to_id(special[f"{end}_token"]))
                for end, wanted in (("bos", add_bos), ("eos", add_eos)) if wanted and f"{end}_token" in special}
        backend.post_processor = _template_post_processor(ends.get("bos"), ends.get("eos"))
        return cls(backend, special, extra, chat_template, name_or_path=name_or_path)

    @staticmethod
    def _register_added_tokens(backend: _Backend, config: dict, special: dict[str, str], extra: list[str]) -> None:
        added = config.get("added_tokens_decoder") or {}
        tokens = []
        for _, entry in sorted(added.items(), key=lambda kv: int(kv[0])):
            flags = {k: entry[k] for k in ("single_word", "lstrip", "rstrip", "normalized", "special") if k in entry}
            tokens.append(AddedToken(entry["content"], **flags))
        # Older `tokenizers` releases drop the special flag in add_tokens, so add each run of equally flagged
        # tokens with the matching call; runs keep id order for tokens that are not in the vocabulary yet.
        run: list[AddedToken] = []
        for token in tokens:
            if run and token.special != run[0].special:
                (backend.add_special_tokens if run[0].special else backend.add_tokens)(run)
                run = []
            run.append(token)
        if run:
            (backend.add_special_tokens if run[0].special else backend.add_tokens)(run)
        # Special tokens named in the config but missing from added_tokens_decoder are added as special.
        known = {t.content for t in tokens}
        missing = [t for t in list(special.values()) + extra if t not in known]
        if missing:
            backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(missing)])

    # ---- vocabulary and special tokens --------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without tokens added on top of it)."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return self.backend.get_added_tokens_decoder()

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """Named special tokens that are set, as transformers 5 passes them to chat templates."""
        return {name: self._special[name] for name in SPECIAL_TOKEN_NAMES if name in self._special}

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys(list(self.special_tokens_map.values()) + self.additional_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def _special_id(self, name: str) -> int | None:
        token = self._special.get(name)
        return None if token is None else self.backend.token_to_id(token)

    bos_token = property(lambda self: self._special.get("bos_token"))
    eos_token = property(lambda self: self._special.get("eos_token"))
    unk_token = property(lambda self: self._special.get("unk_token"))
    pad_token = property(lambda self: self._special.get("pad_token"))
    bos_token_id = property(lambda self: self._special_id("bos_token"))
    eos_token_id = property(lambda self: self._special_id("eos_token"))
    unk_token_id = property(lambda self: self._special_id("unk_token"))
    pad_token_id = property(lambda self: self._special_id("pad_token"))

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int] | None:
        """Unknown tokens map to the unk token id (None when there is none), as in transformers."""
        if isinstance(tokens, str):
            index = self.backend.token_to_id(tokens)
            return self.unk_token_id if index is None else index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> str | list[str]:
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.backend.id_to_token(i) for i in _to_id_list(ids) if i not in skip]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (a byte-level BPE token may hold part of a UTF-8 character);
        an added token's text as UTF-8. What OpenAI's logprobs report as `bytes`."""
        token = self.backend.id_to_token(int(token_id))
        if token is None:
            raise ValueError(f"token id {token_id} is not in the vocabulary")
        if int(token_id) in self.added_tokens_decoder:
            return token.encode("utf-8")
        try:
            return bytes(_BYTE_OF_CHAR[ch] for ch in token)
        except KeyError:  # not a byte-level token
            return token.encode("utf-8")

    # ---- encoding and decoding ----------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        return self.backend.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`. EXAONE's post-processor adds no BOS/EOS, so both settings give the same ids."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        # clean_up_tokenization_spaces is False for this tokenizer (and transformers never applies it to BPE).
        return self.backend.decode(_to_id_list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(seq, skip_special_tokens=skip_special_tokens) for seq in sequences]

    def __call__(
        self, text: str | Sequence[str], add_special_tokens: bool = True, return_tensors: str | None = None
    ) -> BatchEncoding:
        """`{"input_ids", "attention_mask"}` for one text (flat lists) or a list of texts (one row each).

        With return_tensors ('np' or 'pt') the result has a batch dimension; texts of a batch must then have equal
        lengths, since padding is not implemented.
        """
        batched = not isinstance(text, str)
        texts = list(text) if batched else [text]
        rows = [enc.ids for enc in self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)]
        if return_tensors is not None and len({len(r) for r in rows}) > 1:
            raise ValueError("texts of different lengths cannot be stacked into one tensor (padding is not supported)")
        masks = [[1] * len(r) for r in rows]
        if return_tensors is None and not batched:
            return BatchEncoding(input_ids=rows[0], attention_mask=masks[0])
        return BatchEncoding(
            input_ids=_as_tensor(rows, return_tensors), attention_mask=_as_tensor(masks, return_tensors)
        )

    # ---- chat template ------------------------------------------------------------------------------------------

    def get_chat_template(self, chat_template: str | None = None, tools: list | None = None) -> str:
        """The template source to use: an explicit one, a named one, or this tokenizer's default."""
        templates = self.chat_template
        if isinstance(templates, dict):
            if chat_template is not None and chat_template in templates:
                return templates[chat_template]
            if chat_template is not None:
                return chat_template
            if tools is not None and "tool_use" in templates:
                return templates["tool_use"]
            if "default" in templates:
                return templates["default"]
            raise NoChatTemplateError(
                f"{self.name_or_path} has several chat templates and none is named 'default': {sorted(templates)}"
            )
        if chat_template is not None:
            return chat_template
        if templates is None:
            raise NoChatTemplateError(
                f"{self.name_or_path or 'this tokenizer'} has no chat template: neither {CHAT_TEMPLATE_FILE} nor a "
                f"'chat_template' entry in {TOKENIZER_CONFIG_FILE}; pass chat_template= explicitly"
            )
        return templates

    def apply_chat_template(
        self,
        conversation: Any,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool | str = False,
        tokenize: bool = True,
        return_tensors: str | None = None,
        return_dict: bool = False,
        enable_thinking: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Render `conversation` (a list of messages or an object with `.messages`) with the chat template.

        tokenize=False returns the prompt string; tokenize=True returns its ids as a list, or a [1, T] int64 array
        (return_tensors='np') / torch tensor ('pt'); return_dict=True returns `{"input_ids", "attention_mask"}`
        instead. enable_thinking is passed to the template only when given (templates test `is defined`).
        continue_final_message leaves the last message open for the model to continue (see render_chat_template).
        """
        if enable_thinking is not None:
            kwargs["enable_thinking"] = enable_thinking
        template = self.get_chat_template(chat_template, tools)
        prompt = render_chat_template(
            template,
            conversation,
            tools=tools,
            documents=documents,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            special_tokens=self.special_tokens_map,
            **kwargs,
        )
        if not tokenize:
            return prompt
        # The rendered prompt already carries its control tokens, so nothing is added around it.
        encoding = self(prompt, add_special_tokens=False, return_tensors=return_tensors)
        return encoding if return_dict else encoding["input_ids"]

    def __repr__(self) -> str:
        return f"Tokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, len={len(self)})"
