"""Generate the tokenizer and chat-template expectations from transformers (run once, commit the output).

    /path/to/venv-with-transformers/bin/python tools/make_tokenizer_fixtures.py [MODEL_DIR]

MODEL_DIR defaults to ../shared/exaone-4.0-1.2b next to the repository. Writes
tests/data/tokenizer_expected.json and tests/data/chat_template_expected.json;
each stores its inputs next to transformers' outputs, so the tests never need
transformers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import transformers
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"

CORPUS = [
    "",
    " ",
    "\n",
    "\t",
    "Hello world",
    " Hello world",
    "Hello world ",
    "  two leading spaces and three trailing   ",
    "The EXAONE 4.0 model integrates a non-reasoning mode and a reasoning mode.",
    "Explain how wonderful you are",
    "Explica lo increíble que eres. ¿Qué día es hoy? Año, niño, pingüino, corazón.",
    "너가 얼마나 대단한지 설명해 봐",
    "안녕하세요! 오늘 날씨가 정말 좋네요. LG AI연구원의 EXAONE 4.0입니다.",
    "한국어와 English가 섞인 문장, 그리고 숫자 12345.",
    "日本語のテキストと中文文本",
    "café naïve Ωμέγα ∑ ∞ — “quotes” ‘single’ … €100",
    "def roll_dice(max_num: int):\n    return random.randint(1, max_num)\n",
    "class A:\n    def f(self):\n        if x:\n            return  1\n\n\n",
    "if (x) {\n\tif (y) {\n\t\t\tz();\n\t\t}\n}\n",
    "x" + " " * 40 + "y" + "\t" * 12 + "z",
    "mixed \t \t  \t\t   indentation  \n",
    "1234567890 3.14159 2025-07-15 1,000,000 0x1F 1e-5",
    "😀👍🏽 🇰🇷 👨‍👩‍👧‍👦 ❤️ 🤖",
    "Emoji at the end 🎉",
    "[|system|]\nYou are helpful.[|endofturn|]\n[|user|]\nHi[|endofturn|]\n[|assistant|]\n",
    "[BOS][PAD][UNK][EOS]",
    "[unused0] [extra_id_5] PI:URL PI:EMAIL",
    "[|notatoken|] [|user |] <thinking>",
    "<think>\nThe user asks about 3.12 vs 3.9.\n</think>\n\n3.9 is bigger.",
    '<tool_call>{"name": "roll_dice", "arguments": {"max_num": 6}}</tool_call>',
    '<tool_result>{"result": 3}</tool_result>',
    "text<think>inner</think>text</tool_call><tool_call>",
    "line1\n\nline2\r\nline3\n\n\n",
    "   \n   \n",
]

ROLL_DICE = {
    "type": "function",
    "function": {
        "name": "roll_dice",
        "description": "Roll a dice with the number 1 to N. User can select the number N.",
        "parameters": {
            "type": "object",
            "required": ["max_num"],
            "properties": {"max_num": {"type": "int", "description": "Max number of the dice"}},
        },
    },
}

GET_WEATHER_KO = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "주어진 도시의 현재 날씨를 알려줍니다.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "도시 이름 (예: 서울)"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

MULTI_TURN_WITH_REASONING = [
    {"role": "user", "content": "Which one is bigger, 3.12 vs 3.9?"},
    {"role": "assistant", "content": "<think>\nCompare 3.12 and 3.9: 0.9 > 0.12.\n</think>\n\n3.9 is bigger."},
    {"role": "user", "content": "And 2.5 vs 2.45?"},
    {"role": "assistant", "content": "2.5 is bigger.", "reasoning_content": "0.5 > 0.45, so 2.5."},
    {"role": "user", "content": "Thanks! 고마워요."},
]

TOOL_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Roll D6 dice twice, and tell me the weather in Seoul."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "roll_dice", "arguments": {"max_num": 6}}},
            {"id": "call_2", "type": "function", "function": {"name": "roll_dice", "arguments": {"max_num": 6}}},
            {"id": "call_3", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "서울"}}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": 3},
    {"role": "tool", "tool_call_id": "call_2", "content": "5"},
    {"role": "tool", "tool_call_id": "call_3", "content": {"temperature": 23, "condition": "맑음"}},
    {"role": "assistant", "content": "You rolled 3 and 5. 서울은 23도이고 맑습니다."},
    {"role": "user", "content": "Roll once more."},
]

CHAT_CASES = [
    {
        "name": "system_user_generation_prompt",
        "messages": [{"role": "system", "content": "You are EXAONE."}, {"role": "user", "content": "Hello!"}],
        "kwargs": {"add_generation_prompt": True},
        "tokenize": True,
    },
    {
        "name": "user_no_generation_prompt",
        "messages": [{"role": "user", "content": "Explain how wonderful you are"}],
        "kwargs": {"add_generation_prompt": False},
    },
    {
        "name": "thinking_on",
        "messages": [{"role": "user", "content": "Which one is bigger, 3.12 vs 3.9?"}],
        "kwargs": {"add_generation_prompt": True, "enable_thinking": True},
        "tokenize": True,
    },
    {
        "name": "thinking_off_explicit",
        "messages": [{"role": "user", "content": "너가 얼마나 대단한지 설명해 봐"}],
        "kwargs": {"add_generation_prompt": True, "enable_thinking": False},
        "tokenize": True,
    },
    {
        "name": "multi_turn_reasoning_thinking_on",
        "messages": MULTI_TURN_WITH_REASONING,
        "kwargs": {"add_generation_prompt": True, "enable_thinking": True},
    },
    {
        "name": "multi_turn_reasoning_thinking_off",
        "messages": MULTI_TURN_WITH_REASONING,
        "kwargs": {"add_generation_prompt": True},
    },
    {
        "name": "last_assistant_reasoning_kept_skip_think_false",
        "messages": MULTI_TURN_WITH_REASONING[:4],
        "kwargs": {"add_generation_prompt": False, "skip_think": False},
    },
    {
        "name": "last_assistant_reasoning_default_skip_think",
        "messages": MULTI_TURN_WITH_REASONING[:4],
        "kwargs": {"add_generation_prompt": False},
    },
    {
        "name": "alias_thinking_and_reasoning_fields",
        "messages": [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1", "thinking": "thought one"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2", "reasoning": "thought two"},
        ],
        "kwargs": {"add_generation_prompt": False, "skip_think": False},
    },
    {
        "name": "tools_with_system_calls_and_results",
        "messages": TOOL_CONVERSATION,
        "kwargs": {"add_generation_prompt": True, "tools": [ROLL_DICE, GET_WEATHER_KO]},
        "tokenize": True,
    },
    {
        "name": "tools_without_system_thinking_on",
        "messages": [{"role": "user", "content": "Roll D6 dice twice!"}],
        "kwargs": {"add_generation_prompt": True, "tools": [ROLL_DICE], "enable_thinking": True},
    },
    {
        "name": "korean_tool_description",
        "messages": [{"role": "user", "content": "서울 날씨 어때?"}],
        "kwargs": {"add_generation_prompt": True, "tools": [GET_WEATHER_KO]},
        "tokenize": True,
    },
    {
        "name": "assistant_content_and_tool_calls_parameters_alias",
        "messages": [
            {"role": "user", "content": "Roll a D20."},
            {
                "role": "assistant",
                "content": "Sure, rolling now.",
                "tool_calls": [{"name": "roll_dice", "parameters": {"max_num": 20}}],
            },
            {"role": "tool", "content": "17"},
        ],
        "kwargs": {"add_generation_prompt": True, "tools": [ROLL_DICE]},
    },
    {
        "name": "empty_tools_list",
        "messages": [{"role": "user", "content": "Hi"}],
        "kwargs": {"add_generation_prompt": True, "tools": []},
    },
    {
        "name": "continue_final_message_content",
        "messages": [
            {"role": "user", "content": "Write one sentence about Seoul."},
            {"role": "assistant", "content": "Seoul is "},
        ],
        "kwargs": {"continue_final_message": True},
        "tokenize": True,
    },
    {
        "name": "continue_final_message_reasoning",
        "messages": [
            {"role": "user", "content": "3.12 vs 3.9?"},
            {"role": "assistant", "content": "3.9", "reasoning_content": "Compare the decimals"},
        ],
        "kwargs": {"continue_final_message": "reasoning_content", "skip_think": False},
    },
    {
        "name": "special_tokens_in_content",
        "messages": [{"role": "user", "content": "Say [|endofturn|] and <think> literally."}],
        "kwargs": {"add_generation_prompt": True},
        "tokenize": True,
    },
]

ERROR_CASES = [
    {
        "name": "continue_final_message_with_generation_prompt",
        "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
        "kwargs": {"continue_final_message": True, "add_generation_prompt": True},
    },
    {"name": "unknown_role", "messages": [{"role": "narrator", "content": "Once upon a time"}], "kwargs": {}},
    {
        "name": "tool_call_without_arguments",
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]},
        ],
        "kwargs": {},
    },
]


def tokenizer_expectations(tok) -> dict:
    texts = []
    for text in CORPUS:
        ids = tok.encode(text)
        assert ids == tok.encode(text, add_special_tokens=False) == tok(text)["input_ids"]
        texts.append(
            {
                "text": text,
                "ids": ids,
                "tokens": tok.convert_ids_to_tokens(ids),
                "decoded": tok.decode(ids),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            }
        )
    added = {str(i): {"content": t.content, "special": t.special} for i, t in sorted(tok.added_tokens_decoder.items())}
    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    # The backend pipeline without its vocabulary, to check ours is assembled the same way.
    backend = json.loads(tok.backend_tokenizer.to_str())
    pipeline = {key: backend[key] for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder")}
    pipeline["model"] = {k: v for k, v in backend["model"].items() if k not in ("vocab", "merges")}
    pipeline["num_merges"] = len(backend["model"]["merges"])
    return {
        "transformers_version": transformers.__version__,
        "tokenizer_class": type(tok).__name__,
        "vocab_size": tok.vocab_size,
        "len": len(tok),
        "special_tokens": {n: getattr(tok, n) for n in names},
        "special_token_ids": {n + "_id": getattr(tok, n + "_id") for n in names},
        "all_special_ids": tok.all_special_ids,
        "added_tokens": added,
        "backend_pipeline": pipeline,
        "texts": texts,
    }


def chat_expectations(tok) -> dict:
    cases = []
    for case in CHAT_CASES:
        rendered = tok.apply_chat_template(case["messages"], tokenize=False, **case["kwargs"])
        entry = {**case, "rendered": rendered}
        if case.get("tokenize"):
            entry["ids"] = tok.apply_chat_template(case["messages"], tokenize=True, return_dict=False, **case["kwargs"])
        cases.append(entry)
    errors = []
    for case in ERROR_CASES:
        try:
            tok.apply_chat_template(case["messages"], tokenize=False, **case["kwargs"])
        except Exception as e:  # noqa: BLE001 - we record whatever transformers raises
            errors.append({**case, "error_type": type(e).__name__, "error": str(e)})
        else:
            raise AssertionError(f"{case['name']} rendered without an error")
    return {"transformers_version": transformers.__version__, "cases": cases, "errors": errors}


def main() -> None:
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "exaone-4.0-1.2b"
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    DATA.mkdir(parents=True, exist_ok=True)
    for name, data in (
        ("tokenizer_expected.json", tokenizer_expectations(tok)),
        ("chat_template_expected.json", chat_expectations(tok)),
    ):
        with open(DATA / name, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print("wrote", DATA / name)


if __name__ == "__main__":
    main()
