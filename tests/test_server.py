"""The OpenAI-compatible server, driven by the official `openai` client over loopback.

Two kinds of model behind it: a tiny random EXAONE 4 with the real tokenizer (batched decoding must
give every client exactly its single-client greedy text), and a scripted model that replies with fixed
text (so reasoning and tool calls, which a random model never writes, go through the real pipeline).
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
import time
import weakref

import numpy as np
import pytest

from model_factory import SHARED_MODEL_DIR, real_tokenizer_available, write_tiny_exaone

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

if not real_tokenizer_available():
    pytest.skip("../shared/exaone-4.0-1.2b tokenizer files not present", allow_module_level=True)

import uvicorn  # noqa: E402

import exaone_cpu  # noqa: E402
from exaone_cpu import constraints  # noqa: E402
from exaone_cpu.server.app import ServerSettings, create_app  # noqa: E402
from exaone_cpu.server.engine import BatchEngine  # noqa: E402
from exaone_cpu.tokenizer import Tokenizer  # noqa: E402

API_KEY = "sk-test-123"


class RunningServer:
    def __init__(self, app):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{self.port}"

    def client(self, key=API_KEY, **kw):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=60, **kw)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_exaone(tmp_path_factory.mktemp("tiny-real-vocab"), seed=7)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return Tokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def model(model_dir):
    return exaone_cpu.load(model_dir)


@pytest.fixture(scope="module")
def served(model, tokenizer):
    engine = BatchEngine(model, parallel=4, max_queue=4, cache_bytes=64 << 20)
    app = create_app(engine, tokenizer, ServerSettings("tiny", ctx=512, api_key=API_KEY, max_body_bytes=64_000))
    server = RunningServer(app)
    yield server
    server.stop()


# ---- a model that says what the test wants ------------------------------------------------------


class _Cache:
    def __init__(self):
        self.length = 0
        self.prompt: list[int] = []
        self.reply: list[int] | None = None  # known once the whole prompt was fed
        self.replied = 0


class ScriptedModel:
    """Engine-compatible stand-in: replies to a prompt with reply_for(prompt_text), token by token."""

    prefill_chunk = 256

    def __init__(self, tokenizer, reply_for):
        self.tokenizer = tokenizer
        self.reply_for = reply_for
        self.config = exaone_cpu.Exaone4Config.from_pretrained(SHARED_MODEL_DIR)
        self.vocab = self.config.vocab_size

    def new_cache(self, capacity=None):
        return _Cache()

    def forward_batch(self, ids, caches, logits_for=None, rows=None):
        if rows is not None:  # no speculation here: a row at most per sequence
            assert max(rows, default=0) <= 1
            logits_for = [b for b, r in enumerate(rows) if r]
        for chunk, cache in zip(ids, caches):
            if cache.reply is None:
                cache.prompt += [int(t) for t in chunk]
            cache.length += len(chunk)
        rows = []
        for b in range(len(caches)) if logits_for is None else logits_for:
            cache = caches[b]
            if cache.reply is None:  # the prompt is complete: its logits are asked for
                text = self.tokenizer.decode(cache.prompt)
                cache.reply = self.tokenizer.encode(self.reply_for(text), add_special_tokens=False) + [361]
            out = np.full(self.vocab, -50.0, np.float32)  # certain even at the default temperature 1
            out[cache.reply[min(cache.replied, len(cache.reply) - 1)]] = 50.0
            cache.replied += 1
            rows.append(out)
        return np.array(rows, np.float32).reshape(len(rows), self.vocab)


def scripted_reply(prompt: str) -> str:
    if "MALFORMED" in prompt:
        return ' Sure. <tool_call>{"name": "get_weather", "arguments": {"city": }</tool_call> done. '
    if "STRAY" in prompt:
        return "  just </think> text,\n then more.  "
    if "<tool_result>" in prompt:
        return "It is 21 degrees in Seoul."
    if "get_weather" in prompt:
        return ('<tool_call>{"name": "get_weather", "arguments": {"city": "Seoul"}}</tool_call>'
                '<tool_call>{"name": "get_weather", "arguments": {"city": "Busan"}}</tool_call>')
    if prompt.rstrip().endswith("<think>"):
        return "The user asks 2+2. That is 4.\n</think>\n\nThe answer is 4. 안녕하세요 👋"
    return "Hello! 반갑습니다."


@pytest.fixture(scope="module")
def scripted(tokenizer):
    engine = BatchEngine(ScriptedModel(tokenizer, scripted_reply), parallel=2, max_queue=2)
    server = RunningServer(create_app(engine, tokenizer, ServerSettings("scripted", ctx=4096)))
    yield server
    server.stop()


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "날씨를 알려줍니다 (current weather)",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


# ---- the real (random) model: batching and exact greedy text ------------------------------------


def greedy_text(model, tokenizer, prompt_ids, n):
    ids = model.generate(prompt_ids, max_new_tokens=n)
    ids = [t for t in ids if t not in model.config.eos_token_ids]
    return tokenizer.decode(ids, skip_special_tokens=True)


def test_completions_equal_direct_greedy(served, model, tokenizer):
    prompt = "The capital of Korea is"
    out = served.client().completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    assert out.choices[0].text == greedy_text(model, tokenizer, ids, 12)
    assert out.usage.prompt_tokens == len(ids) and out.usage.completion_tokens <= 12
    assert out.choices[0].finish_reason in ("length", "stop")


def test_chat_non_streaming_and_streaming_agree(served, model, tokenizer):
    client = served.client()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    full = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    pieces, finish, usage = [], None, None
    for chunk in client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == (full.choices[0].message.content or "")
    assert finish == full.choices[0].finish_reason
    assert usage.completion_tokens == full.usage.completion_tokens
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens


def _stream_completion(server, prompt, n):
    text = []
    for chunk in server.client().completions.create(model="tiny", prompt=prompt, max_tokens=n, temperature=0,
                                                    stream=True):
        text.append(chunk.choices[0].text if chunk.choices else "")
    return "".join(text)


def test_concurrent_streams_each_get_their_own_text(served, model, tokenizer):
    prompts = ["One two three", "안녕하세요 여러분", "def main():\n    ", "Numbers: 1 2 3 4", "Emoji 😀 time",
               "Another prompt here"]
    expected = [greedy_text(model, tokenizer, tokenizer.encode(p, add_special_tokens=False), 16) for p in prompts]
    engine = served.server.config.app.state.server.engine
    steps_before = engine.steps
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        got = list(pool.map(lambda p: _stream_completion(served, p, 16), prompts))
    assert got == expected
    assert engine.max_batch_seen >= 2  # they really were decoded together
    assert engine.steps > steps_before


def test_a_conversation_computes_only_each_turns_new_tokens(served, model, tokenizer):
    client = served.client()
    engine = served.server.config.app.state.server.engine
    messages = [{"role": "system", "content": "You are a helpful assistant. " * 8}]
    previous_prompt = 0
    for turn in range(5):
        messages.append({"role": "user", "content": f"Question number {turn}: what comes next?"})
        computed = engine.prompt_tokens_computed
        out = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        assert out.choices[0].message.content == greedy_text(model, tokenizer, ids, 6).strip()
        usage = out.usage
        cached = usage.prompt_tokens_details.cached_tokens
        assert usage.prompt_tokens == len(ids)
        assert engine.prompt_tokens_computed - computed == usage.prompt_tokens - cached  # only the rest computed
        if turn:  # at least the whole previous prompt (the answer too, where it renders as it was generated)
            assert previous_prompt <= cached < usage.prompt_tokens
        previous_prompt = usage.prompt_tokens
        messages.append({"role": "assistant", "content": out.choices[0].message.content})
    # the same request again: everything but the last prompt token comes from the cache
    again = client.chat.completions.create(model="tiny", messages=messages[:-1], max_tokens=6, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    assert again.choices[0].message.content == messages[-1]["content"]
    streamed = client.completions.create(model="tiny", prompt="A prompt that repeats " * 4, max_tokens=3, temperature=0,
                                         stream=True, stream_options={"include_usage": True})
    usages = [c.usage for c in streamed if c.usage is not None]
    assert len(usages) == 1 and usages[0].prompt_tokens_details.cached_tokens >= 0


def test_metrics_in_prometheus_text_format(served):
    parser = pytest.importorskip("prometheus_client.parser")
    client = served.client()
    client.completions.create(model="tiny", prompt="Metrics count this " * 3, max_tokens=3, temperature=0)
    client.completions.create(model="tiny", prompt="Metrics count this " * 3, max_tokens=3, temperature=0)
    _post(served, "/v1/completions", {"model": "tiny", "prompt": "x", "temperature": 9})  # a 400
    assert httpx.get(served.base + "/metrics").status_code == 401  # behind the API key like the rest
    r = httpx.get(served.base + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in parser.text_string_to_metric_families(r.text)}
    value = {f.name: f.samples[0].value for f in families.values() if f.samples}
    responses = {(s.labels["route"], s.labels["status"]): s.value for s in families["exaone_http_responses"].samples}
    assert responses[("/v1/completions", "200")] >= 2 and responses[("/v1/completions", "400")] >= 1
    assert responses[("/metrics", "401")] >= 1
    engine = served.server.config.app.state.server.engine
    assert value["exaone_generation_tokens"] == engine.tokens_generated >= 6
    assert value["exaone_prompt_tokens_computed"] == engine.prompt_tokens_computed
    assert value["exaone_prefix_cache_hits"] >= 1 and value["exaone_prompt_tokens_cached"] >= 1
    assert value["exaone_prefix_cache_budget_bytes"] == 64 << 20 and value["exaone_prefix_cache_bytes"] > 0
    assert value["exaone_requests_running"] >= 0 and value["exaone_requests_waiting"] == 0
    assert value["exaone_engine_steps"] == engine.steps and value["exaone_engine_busy_seconds"] > 0
    assert families["exaone_time_to_first_token_seconds"].type == "histogram"
    ttft = {s.name: s.value for s in families["exaone_time_to_first_token_seconds"].samples if "le" not in s.labels}
    assert ttft["exaone_time_to_first_token_seconds_count"] >= 2 and ttft["exaone_time_to_first_token_seconds_sum"] > 0
    buckets = [s.value for s in families["exaone_time_to_first_token_seconds"].samples if "le" in s.labels]
    assert buckets == sorted(buckets) and buckets[-1] == ttft["exaone_time_to_first_token_seconds_count"]


class Guesser:
    """Guesses a known continuation of each prompt (by its first tokens), a third of the guesses wrong."""

    answers: dict[tuple[int, ...], list[int]] = {}

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def propose(self, token_ids, k):
        for start, ids in self.answers.items():
            if tuple(token_ids[: len(start)]) == start:
                guess = np.array((ids + [0] * k)[len(token_ids) : len(token_ids) + k], np.int64)
                wrong = self.rng.random(k) < 0.33
                guess[wrong] = (guess[wrong] + 7) % 102400
                return guess
        return np.zeros(0, np.int64)


def test_speculative_decoding_in_the_server(model, tokenizer):
    from exaone_cpu import Generator
    from exaone_cpu.speculative import Speculative

    parser = pytest.importorskip("prometheus_client.parser")
    gen = Generator(model, tokenizer)
    prompt = "Repeat after me: one two three four, one two three four"
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    plain = gen.generate(ids, max_new_tokens=40)
    Guesser.answers = {tuple(ids): ids + plain.token_ids}
    engine = BatchEngine(model, parallel=2, speculative=Speculative(drafter=Guesser, num_tokens=6, adaptive=False))
    server = RunningServer(create_app(engine, tokenizer, ServerSettings("tiny", ctx=512)))
    try:
        client = server.client()
        out = client.completions.create(model="tiny", prompt=prompt, max_tokens=40, temperature=0)
        assert out.choices[0].text == plain.text and out.usage.completion_tokens == plain.completion_tokens
        details = out.usage.completion_tokens_details
        assert details.accepted_prediction_tokens > 0 and details.rejected_prediction_tokens > 0
        # a stop string inside a round: the text and the token count stop there, as in the library
        stop = plain.text[len(plain.text) // 2 : len(plain.text) // 2 + 3]
        cut = gen.generate(ids, max_new_tokens=40, stop_strings=[stop])
        assert cut.finish_reason == "stop"
        out = client.completions.create(model="tiny", prompt=prompt, max_tokens=40, temperature=0, stop=[stop])
        assert out.choices[0].text == cut.text and out.usage.completion_tokens == cut.completion_tokens
        streamed = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=40, temperature=0,
                                                  stream=True, stream_options={"include_usage": True}))
        assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.text
        assert streamed[-1].usage.completion_tokens_details.accepted_prediction_tokens > 0
        r = httpx.get(server.base + "/metrics")
        value = {f.name: f.samples[0].value for f in parser.text_string_to_metric_families(r.text) if f.samples}
        assert value["exaone_speculative_draft_tokens"] == engine.draft_tokens > 0
        assert value["exaone_speculative_accepted_tokens"] == engine.accepted_draft_tokens > 0
    finally:
        server.stop()


class SlowModel:
    """The real model, slowed to 20 ms a step, so a stream is still running when the test acts."""

    def __init__(self, model):
        self.model = model
        self.config = model.config
        self.prefill_chunk = model.prefill_chunk

    def new_cache(self, capacity=None):
        return self.model.new_cache(capacity)

    def forward_batch(self, ids, caches, logits_for=None, rows=None):
        time.sleep(0.02)
        return self.model.forward_batch(ids, caches, logits_for=logits_for, rows=rows)


@pytest.fixture
def slow(model, tokenizer):
    engine = BatchEngine(SlowModel(model), parallel=1, max_queue=0)
    server = RunningServer(create_app(engine, tokenizer, ServerSettings("tiny", ctx=512)))
    yield server, engine
    server.stop()


def _first_piece(lines):
    """Reads up to the first data line. The caller keeps `lines` alive: closing it would hang up."""
    for line in lines:
        if line.startswith("data: {"):
            return line
    raise AssertionError("stream ended before its first piece")


def test_disconnect_frees_the_slot(slow):
    server, engine = slow
    body = {"model": "tiny", "prompt": "Count forever", "max_tokens": 400, "stream": True, "temperature": 0}
    with httpx.stream("POST", server.base + "/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        _first_piece(lines)
        assert engine.load == (1, 0)
        del lines  # closing the reader hangs up mid-stream
    # 400 tokens would take 8 s; walking away must free the slot long before that
    deadline = time.time() + 2
    while engine.load != (0, 0):
        assert time.time() < deadline, f"slot not freed: {engine.load}"
        time.sleep(0.02)


def test_models_and_health(served):
    assert [m.id for m in served.client().models.list().data] == ["tiny"]
    assert httpx.get(served.base + "/health").json()["status"] == "ok"


# ---- errors in OpenAI's format --------------------------------------------------------------------


def _post(server, path, body, key=API_KEY, raw=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return httpx.post(server.base + path, content=raw, headers=headers, timeout=30)
    return httpx.post(server.base + path, json=body, headers=headers, timeout=30)


def _error(response, status):
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["message"] and err["type"]
    return err


def test_error_statuses(served):
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert _post(served, "/v1/chat/completions", chat).status_code == 200
    _error(_post(served, "/v1/chat/completions", None, raw=b"{not json"), 400)
    assert _error(_post(served, "/v1/chat/completions", {**chat, "temperature": "hot"}), 400)["param"] == "temperature"
    assert _error(_post(served, "/v1/chat/completions", {**chat, "messages": []}), 400)["param"] == "messages"
    bad_role = {**chat, "messages": [{"role": "robot", "content": "x"}]}
    assert _error(_post(served, "/v1/chat/completions", bad_role), 400)["param"] == "messages[0].role"
    too_long = {**chat, "max_tokens": 100_000}
    assert _error(_post(served, "/v1/chat/completions", too_long), 400)["code"] == "context_length_exceeded"
    assert _error(_post(served, "/v1/chat/completions", {**chat, "model": "gpt-4"}), 404)["param"] == "model"
    _error(_post(served, "/v1/chat/completions", chat, key="wrong"), 401)
    _error(_post(served, "/v1/chat/completions", chat, key=None), 401)
    assert httpx.get(served.base + "/v1/models").status_code == 401
    _error(_post(served, "/v1/chat/completions", None, raw=b'{"model": "' + b"x" * 70_000 + b'"}'), 413)
    _error(_post(served, "/v1/nothing", chat), 404)
    with pytest.raises(openai.NotFoundError):
        served.client().chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])


def test_full_queue_is_refused(slow):
    server, engine = slow
    body = {"model": "tiny", "prompt": "Long one", "max_tokens": 300, "stream": True, "temperature": 0}
    with httpx.stream("POST", server.base + "/v1/completions", json=body, timeout=30) as first:
        lines = first.iter_lines()
        _first_piece(lines)  # the only slot is busy now, and nothing may wait
        busy = httpx.post(server.base + "/v1/completions", json={**body, "stream": False}, timeout=30)
        assert _error(busy, 429)["code"] == "queue_full"


# ---- reasoning and tools through the scripted model -----------------------------------------------


def test_reasoning_on_and_off(scripted):
    client = scripted.client()
    q = [{"role": "user", "content": "What is 2+2?"}]
    on = client.chat.completions.create(model="scripted", messages=q,
                                        extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    msg = on.choices[0].message
    assert msg.content == "The answer is 4. 안녕하세요 👋"
    assert msg.model_extra["reasoning_content"] == "The user asks 2+2. That is 4."
    off = client.chat.completions.create(model="scripted", messages=q)
    assert off.choices[0].message.content == "Hello! 반갑습니다." and off.choices[0].finish_reason == "stop"

    reasoning, content = [], []
    for chunk in client.chat.completions.create(model="scripted", messages=q, stream=True,
                                                extra_body={"chat_template_kwargs": {"enable_thinking": True}}):
        delta = chunk.choices[0].delta
        reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
        content.append(delta.content or "")
    assert "".join(reasoning).strip() == "The user asks 2+2. That is 4."
    assert "".join(content).strip() == "The answer is 4. 안녕하세요 👋"


def test_tool_call_round_trip(scripted):
    client = scripted.client()
    messages = [{"role": "user", "content": "Weather in Seoul and Busan?"}]
    first = client.chat.completions.create(model="scripted", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Seoul"}, {"city": "Busan"}]

    messages.append(choice.message.model_dump(exclude_none=True))
    for call, temp in zip(calls, (21, 24)):
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp": temp})})
    second = client.chat.completions.create(model="scripted", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "It is 21 degrees in Seoul."
    assert second.choices[0].finish_reason == "stop"

    # streamed: no tool-call markup leaks into content; the calls arrive as OpenAI's incremental deltas:
    # index, id and name first, then pieces of the arguments
    content, calls = _streamed_message(client, model="scripted", messages=messages[:1], tools=[WEATHER_TOOL])[::2]
    assert content == "" and len(calls) == 2 and calls == [(c.function.name, c.function.arguments) for c in
                                                           first.choices[0].message.tool_calls]
    pieces = 0
    for chunk in client.chat.completions.create(model="scripted", messages=messages[:1], tools=[WEATHER_TOOL],
                                                stream=True):
        for d in chunk.choices[0].delta.tool_calls or []:
            assert (d.id is not None) == (d.function.name is not None)  # id and name come once, first
            pieces += 1
        finish = chunk.choices[0].finish_reason
    assert pieces > 4 and finish == "tool_calls"
    none = client.chat.completions.create(model="scripted", messages=messages[:1], tools=[WEATHER_TOOL],
                                          tool_choice="none")
    assert none.choices[0].message.tool_calls is None


def _streamed_message(client, **request):
    """content, reasoning, [(name, arguments)] of the calls reassembled by index, finish reason."""
    content, reasoning, calls, finish = [], [], {}, None
    for chunk in client.chat.completions.create(stream=True, **request):
        delta = chunk.choices[0].delta
        content.append(delta.content or "")
        reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
        for d in delta.tool_calls or []:
            name, arguments = calls.get(d.index, ("", ""))
            calls[d.index] = (name + (d.function.name or ""), arguments + (d.function.arguments or ""))
        finish = chunk.choices[0].finish_reason or finish
    return "".join(content), "".join(reasoning), [calls[i] for i in sorted(calls)], finish


THINK = {"chat_template_kwargs": {"enable_thinking": True}}


@pytest.mark.parametrize("user,extra", [
    ("What is 2+2?", {"extra_body": THINK}),
    ("What is 2+2?", {}),
    ("Weather in Seoul and Busan?", {"tools": [WEATHER_TOOL]}),
    ("Call get_weather for me", {"tools": [WEATHER_TOOL], "tool_choice": "none"}),
    ("MALFORMED call please", {"tools": [WEATHER_TOOL]}),
    ("STRAY tag", {}),
    ("STRAY tag", {"extra_body": THINK}),
    ("What is 2+2?", {"extra_body": THINK, "stop": ["4. 안"]}),
    ("hi", {"stop": ["반갑", "Hel"]}),
])
def test_streamed_deltas_add_up_to_the_message(scripted, user, extra, monkeypatch):
    if "MALFORMED" in user:  # the parser's side: a server without llguidance does not constrain calls
        monkeypatch.setattr(constraints, "llguidance_available", lambda: False)
    client = scripted.client()
    request = dict(model="scripted", messages=[{"role": "user", "content": user}], **extra)
    whole = client.chat.completions.create(**request).choices[0]
    content, reasoning, calls, finish = _streamed_message(client, **request)
    assert content == (whole.message.content or "")
    assert reasoning == ((whole.message.model_extra or {}).get("reasoning_content") or "")
    assert calls == [(c.function.name, c.function.arguments) for c in whole.message.tool_calls or []]
    assert finish == whole.finish_reason


def test_tool_markup_without_tools_stays_content(scripted, monkeypatch):
    monkeypatch.setattr(constraints, "llguidance_available", lambda: False)  # calls parsed, not constrained
    client = scripted.client()
    request = dict(model="scripted", messages=[{"role": "user", "content": "Call get_weather for me"}],
                   tools=[WEATHER_TOOL], tool_choice="none")
    message = client.chat.completions.create(**request).choices[0].message
    assert message.content.startswith('<tool_call>{"name": "get_weather"') and message.tool_calls is None
    bad = client.chat.completions.create(model="scripted", tools=[WEATHER_TOOL],
                                         messages=[{"role": "user", "content": "MALFORMED call"}]).choices[0]
    assert bad.message.content == 'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": }</tool_call> done.'
    assert bad.finish_reason == "stop" and bad.message.tool_calls is None
    stray = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "STRAY"}])
    assert stray.choices[0].message.content == "just </think> text,\n then more."
    assert "reasoning_content" not in (stray.choices[0].message.model_extra or {})


def test_stop_strings(scripted):
    out = scripted.client().chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}], stop=["반갑"])
    # the message is trimmed as the chat template trims it, and the stream adds up to the same message
    assert out.choices[0].message.content == "Hello!" and out.choices[0].finish_reason == "stop"
    pieces = []
    for chunk in scripted.client().chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "hi"}], stop=["반갑"], stream=True):
        pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "Hello!"


def test_ignore_eos_runs_to_max_tokens(scripted):
    client = scripted.client()
    normal = client.completions.create(model="scripted", prompt="hi", max_tokens=30)
    assert normal.choices[0].finish_reason == "stop" and normal.usage.completion_tokens < 30
    forced = client.completions.create(model="scripted", prompt="hi", max_tokens=30, extra_body={"ignore_eos": True})
    assert forced.choices[0].finish_reason == "length" and forced.usage.completion_tokens == 30


# ---- one pipeline: every frontend gives the same tokens -------------------------------------------------------


SAMPLED = dict(temperature=0.7, top_p=0.9, top_k=0, repetition_penalty=1.1, seed=11)


def test_every_frontend_gives_the_same_tokens(served, model, model_dir, tokenizer):
    from exaone_cpu import AutoModelForCausalLM, ChatSession, Generator

    messages = [{"role": "user", "content": "Tell me a story about a cat."}]
    gen = Generator(model, tokenizer)
    ids = gen.encode_chat(messages)
    n = 24
    expected = model.generate(ids, max_new_tokens=n, **SAMPLED)
    assert expected != model.generate(ids, max_new_tokens=n)  # really sampled
    assert gen.generate(ids, max_new_tokens=n, **SAMPLED).token_ids == expected
    assert ChatSession(gen).send(messages[0]["content"], max_new_tokens=n, **SAMPLED).until_done().token_ids == expected
    facade = AutoModelForCausalLM.from_pretrained(model_dir)
    assert facade.generate(np.array([ids]), max_new_tokens=n, do_sample=True, **SAMPLED)[0, len(ids):].tolist() \
        == expected

    # the server: chat and completions, streamed or not; its logprobs name the tokens
    want = b"".join(tokenizer.token_bytes(t) for t in expected if t not in model.config.eos_token_ids)
    assert tokenizer.encode(tokenizer.decode(ids), add_special_tokens=False) == ids
    client = served.client()
    request = dict(model="tiny", max_tokens=n, logprobs=True, **{k: SAMPLED[k] for k in ("temperature", "top_p", "seed")},
                   extra_body={k: SAMPLED[k] for k in ("top_k", "repetition_penalty")})
    chat = client.chat.completions.create(messages=messages, **request)
    assert b"".join(bytes(e.bytes) for e in chat.choices[0].logprobs.content) == want
    assert chat.usage.completion_tokens == len(expected)
    streamed = [e for chunk in client.chat.completions.create(messages=messages, stream=True, **request)
                if chunk.choices and chunk.choices[0].logprobs for e in chunk.choices[0].logprobs.content]
    assert b"".join(bytes(e.bytes) for e in streamed) == want
    request["logprobs"] = 0
    plain = client.completions.create(prompt=tokenizer.decode(ids), **request)
    assert plain.choices[0].text.encode() == want.decode("utf-8", errors="replace").encode()
    pieces = [c.choices[0].text for c in client.completions.create(prompt=tokenizer.decode(ids), stream=True,
                                                                   **request) if c.choices]
    assert "".join(pieces) == plain.choices[0].text


def test_logprobs_are_the_models(served, model, tokenizer):
    from exaone_cpu.decoding import TokenStream

    prompt = "The capital of Korea is"
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    stream = TokenStream(model, ids, max_new_tokens=6, logprobs=3)
    tokens = list(stream)
    out = served.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2, logprobs=True, top_logprobs=3)
    entry = out.choices[0].logprobs.content[0]
    assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
    assert entry.logprob <= 0
    done = served.client().completions.create(model="tiny", prompt=prompt, max_tokens=6, temperature=0, logprobs=3)
    lp = done.choices[0].logprobs
    want = [item.logprob for item in stream.logprobs if item.token not in model.config.eos_token_ids]
    np.testing.assert_allclose(lp.token_logprobs, want, atol=1e-5)
    assert len(lp.top_logprobs[0]) == 3 and len(lp.tokens) == len(want)
    assert lp.text_offset[0] == 0
    first = stream.logprobs[0]
    assert first.token == tokens[0] and first.top[0][0] == tokens[0]  # greedy: the top token is the chosen one


def test_sampling_fields_are_checked(served):
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for field, value in [("top_p", 0), ("top_p", 1.5), ("min_p", -0.1), ("repetition_penalty", 0), ("top_k", -2),
                         ("logit_bias", {"abc": 1}), ("logit_bias", {"5": 500}), ("logit_bias", {"999999": 1}),
                         ("seed", 2**70), ("top_logprobs", 3), ("echo", True),
                         ("logprobs", "yes")]:
        assert _error(_post(served, "/v1/chat/completions", {**chat, field: value}), 400)["param"] == field, field
    assert _post(served, "/v1/chat/completions", {**chat, "top_k": -1, "logit_bias": {"5": -100}}).status_code == 200


@pytest.mark.parametrize("change,param", [
    ({"messages": [{"role": "user", "content": "hi", "tool_calls": [{"function": {"name": 5}}]}]},
     "messages[0].tool_calls[0].function.name"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content[0]"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"presence_penalty": True}, "presence_penalty"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"user": 17}, "user"),
    ({"model": None}, "model"),
])
def test_wrong_types_are_400s_naming_the_field(served, change, param):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **change}
    err = _error(_post(served, "/v1/chat/completions", body), 400)
    assert err["param"] == param and err["message"].startswith(param), err


def test_unknown_fields_are_named_in_a_warning_header(served, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="exaone_cpu.server")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi", "mood": "happy"}], "max_tokens": 2,
            "temprature": 0.5, "user": "someone", "metadata": {"a": "b"}, "store": False}
    for stream in (False, True):
        r = _post(served, "/v1/chat/completions", {**body, "stream": stream})
        assert r.status_code == 200
        assert r.headers["warning"] == '299 exaone-cpu "unknown fields ignored: temprature, messages[0].mood"'
    assert any("temprature" in rec.getMessage() for rec in caplog.records)
    known = _post(served, "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2, "user": "u"})
    assert known.status_code == 200 and "warning" not in known.headers
    r = _post(served, "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2, "top_n": 3})
    assert r.status_code == 200 and "top_n" in r.headers["warning"]


def test_server_defaults_come_from_generation_config(model, tokenizer):
    from exaone_cpu.sampling import GenerationDefaults

    prompt = "The capital of Korea is"
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    greedy = greedy_text(model, tokenizer, ids, 8)
    sampled = GenerationDefaults(do_sample=True, temperature=1.5, top_k=0, top_p=1.0)
    for defaults, want_greedy in ((GenerationDefaults(), True), (sampled, False)):
        engine = BatchEngine(model, parallel=1, max_queue=1)
        server = RunningServer(create_app(engine, tokenizer, ServerSettings("tiny", ctx=256, defaults=defaults)))
        try:
            texts = {server.client().completions.create(model="tiny", prompt=prompt, max_tokens=8).choices[0].text
                     for _ in range(3)}
            explicit = server.client().completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0)
        finally:
            server.stop()
        assert explicit.choices[0].text == greedy
        assert (texts == {greedy}) == want_greedy


def test_serve_options_build_the_server(model_dir, tmp_path):
    """exaone-cpu serve's sampling defaults, --chat-template, --kv-dtype and --quant reach the server."""
    import argparse

    from exaone_cpu.commands import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}", encoding="utf-8")
    args = parser.parse_args([str(model_dir), "--temperature", "0.7", "--top-p", "0.9", "--presence-penalty", "1.5",
                              "--chat-template", str(template), "--kv-dtype", "f16", "--quant", "int8",
                              "--cache-mb", "16", "--batch-tokens", "32"])
    app, settings = serve.build(args)
    assert app.state.server.engine.prefix_cache.budget_bytes == 16 << 20
    assert app.state.server.engine.batch_tokens == 32
    defaults = settings.defaults.sampling_params()
    assert (defaults.temperature, defaults.top_p, defaults.presence_penalty) == (0.7, 0.9, 1.5)
    server = app.state.server
    assert server.engine.model.kv_dtype == "f16"
    text = server.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<<hi>>"
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}", encoding="utf-8")
    for bad in (["--temperature", "-1"], ["--top-p", "0"], ["--chat-template", str(tmp_path / "missing.jinja")],
                ["--chat-template", str(broken)], ["--cache-mb", "-1"], ["--batch-tokens", "0"],
                ["--draft-max", "16", "--speculative", "prompt-lookup"], ["--draft", str(tmp_path / "nowhere")]):
        with pytest.raises((ValueError, FileNotFoundError)):
            serve.build(parser.parse_args([str(model_dir), *bad]))
    app, _ = serve.build(parser.parse_args([str(model_dir), "--speculative", "prompt-lookup", "--draft-max", "5"]))
    assert app.state.server.engine.speculative.num_tokens == 5
    app, _ = serve.build(parser.parse_args([str(model_dir), "--draft", str(model_dir)]))
    assert app.state.server.engine.speculative.method == "draft-model"


# ---- an engine that cannot die (issue 11) ---------------------------------------------------------------------


def test_non_streaming_disconnect_frees_the_slot(slow):
    server, engine = slow
    body = {"model": "tiny", "prompt": "Count forever", "max_tokens": 400, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 0.5 s of a 8 s generation
        httpx.post(server.base + "/v1/completions", json=body, timeout=0.5)
    deadline = time.time() + 3
    while engine.load != (0, 0):
        assert time.time() < deadline, f"slot not freed: {engine.load}"
        time.sleep(0.02)


class RacingModel(SlowModel):
    """Cancels a sequence of the batch while the engine steps it (after it read the flags), and
    answers NaN logits for prompts that ask for them (the sampler then fails for that sequence)."""

    def __init__(self, model, tokenizer):
        super().__init__(model)
        self.tokenizer = tokenizer
        self.engine = None
        self.poisoned = weakref.WeakSet()  # caches, not ids: a freed cache's id comes back

    def forward_batch(self, ids, caches, logits_for=None, rows=None):
        assert all(c is not None for c in caches), "a finished sequence was stepped"
        for chunk, cache in zip(ids, caches):
            if "POISON" in self.tokenizer.decode(list(chunk)):
                self.poisoned.add(cache)
        for seq in list(self.engine._active):
            if len(seq.decoding.new_token_ids) == 3:
                seq.cancel()  # lands between the engine's read of the flags and the sampling
        wanted = [b for b, r in enumerate(rows) for _ in range(r)]  # the engine asks by rows
        out = self.model.forward_batch(ids, caches, rows=rows)
        for row, b in enumerate(wanted):
            if caches[b] in self.poisoned:
                out[row] = np.nan
        return out


def test_cancel_race_and_failing_sequence_leave_the_engine_serving(model, tokenizer):
    racing = RacingModel(model, tokenizer)
    engine = BatchEngine(racing, parallel=4, max_queue=4)
    racing.engine = engine
    server = RunningServer(create_app(engine, tokenizer, ServerSettings("tiny", ctx=512)))
    try:
        client = server.client()

        def run(prompt):
            try:
                return client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
            except openai.APIStatusError as e:
                return e.status_code

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(run, ["POISON here", "A normal one", "Another normal"]))
        assert results[0] == 500  # its own sampling failed: an error to its client only
        assert all(not isinstance(r, int) for r in results[1:])
        # a streamed request whose step fails ends with an error event and [DONE]
        body = {"model": "tiny", "prompt": "POISON again", "max_tokens": 12, "stream": True}
        with httpx.stream("POST", server.base + "/v1/completions", json=body, timeout=30) as response:
            lines = [line for line in response.iter_lines() if line]
        assert '"error"' in lines[-2] and lines[-1] == "data: [DONE]"
        assert engine.healthy and httpx.get(server.base + "/health").status_code == 200
        after = client.completions.create(model="tiny", prompt="Served normally", max_tokens=5, temperature=0)
        assert after.choices[0].text
        deadline = time.time() + 5  # the engine drops finished sequences at its next turn
        while engine.load != (0, 0):
            assert time.time() < deadline, engine.load
            time.sleep(0.02)
    finally:
        server.stop()


def test_a_failed_engine_says_so(model, tokenizer):
    failures = []
    engine = BatchEngine(model, parallel=1, max_queue=1, on_failure=failures.append)
    engine._loop = lambda: (_ for _ in ()).throw(RuntimeError("engine bug"))  # the loop itself breaks
    server = RunningServer(create_app(engine, tokenizer, ServerSettings("tiny", ctx=512)))
    try:
        deadline = time.time() + 5
        while not failures:
            assert time.time() < deadline
            time.sleep(0.02)
        health = httpx.get(server.base + "/health")
        assert health.status_code == 503 and "engine bug" in health.json()["error"]
        assert _error(_post(server, "/v1/completions", {"model": "tiny", "prompt": "x"}, key=None), 503)
    finally:
        server.stop()


MALFORMED = [
    (b"[" * 20000 + b"]" * 20000, "body"),
    (b'{"model": "tiny", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}", "body"),
    ({"prompt": "x", "max_tokens": 10**40}, "max_tokens"),
    ({"prompt": "x", "temperature": 1e-300}, None),  # valid: greedy in effect
    ({"prompt": "x", "seed": -5}, None),  # valid: taken modulo 2**64
    ({"prompt": "x", "seed": 2**80}, "seed"),
    ({"prompt": "x", "top_k": 10**30}, "top_k"),
    ({"prompt": "\ud800 lone surrogate"}, "prompt"),
    ({"prompt": "x", "stop": ["s" * 5000]}, "stop"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "x", "temperature": float("nan")}, "temperature"),
    ({"prompt": "x", "n": 2}, "n"),
    ({"prompt": "x", "logit_bias": {"1": float("inf")}}, "logit_bias"),
    ({"prompt": ["a", ""]}, "prompt[1]"),
    ({"prompt": ["a"] * 65}, "prompt"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
]


@pytest.mark.parametrize("body,param", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_requests_get_a_4xx(served, body, param):
    if isinstance(body, bytes):
        response = _post(served, "/v1/completions", None, raw=body)
    else:
        payload = json.dumps({"model": "tiny", "max_tokens": 2, **body}, allow_nan=True).encode("utf-8", "surrogatepass")
        response = _post(served, "/v1/completions", None, raw=payload)
    if param is None:
        assert response.status_code == 200, response.text
        return
    err = _error(response, 400)
    if param != "body":
        assert err["param"] == param


@pytest.mark.parametrize("kwargs,param", [
    ({"chat_template": "{{ 'ab ' * 4000000 }}"}, "chat_template_kwargs.chat_template"),
    ({"return_dict": True}, "chat_template_kwargs.return_dict"),
    ({"enable_thinking": "yes"}, "chat_template_kwargs.enable_thinking"),
])
def test_chat_template_kwargs_pass_only_template_variables(served, kwargs, param):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "chat_template_kwargs": kwargs}
    assert _error(_post(served, "/v1/chat/completions", body), 400)["param"] == param
    ok = {**body, "chat_template_kwargs": {"enable_thinking": True, "skip_think": False}}
    assert _post(served, "/v1/chat/completions", ok).status_code == 200


REQUEST_WEIRD = [None, True, False, "", "x" * 300, -1, 0, 1, 2, 10**30, 1.5, -0.5, 1e308, [], [1, "a"], {}, {"a": 1},
                 [[[[]]]], "\ud800", {"type": "function"}, [{"role": "user"}], [{"role": "user", "content": 5}]]


def _mutated_request(rng):
    chat = rng.random() < 0.5
    body = {"model": "tiny", "max_tokens": 3, "temperature": 0}
    if chat:
        body["messages"] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
        if rng.random() < 0.3:
            body["tools"] = [WEATHER_TOOL]
    else:
        body["prompt"] = "Hello there"
    fields = ["model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stream",
              "stream_options", "logprobs", "top_logprobs", "logit_bias", "n", "presence_penalty",
              "repetition_penalty", "tools", "tool_choice", "chat_template_kwargs", "messages", "prompt",
              "response_format", "json_schema", "grammar", "unknown_field"]
    for _ in range(rng.randint(1, 3)):
        field = rng.choice(fields)
        if field == "messages" and chat and rng.random() < 0.5:
            msg = rng.choice(body["messages"])
            msg[rng.choice(["role", "content", "tool_calls", "name"])] = rng.choice(REQUEST_WEIRD)
        else:
            body[field] = rng.choice(REQUEST_WEIRD)
    return ("/v1/chat/completions" if chat else "/v1/completions"), body


def test_mutated_requests_never_get_a_5xx(served):
    """A bounded request-schema fuzz (fixed seed): every mutated body is answered 2xx or 4xx."""
    import random as _random

    rng = _random.Random(1206)
    statuses = []
    for _ in range(250):
        path, body = _mutated_request(rng)
        raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
        response = _post(served, path, None, raw=raw)
        statuses.append(response.status_code)
        assert response.status_code < 500, (body, response.text[:300])
        if response.status_code >= 400:
            assert response.json()["error"]["message"]
    assert 200 in statuses and 400 in statuses
    assert httpx.get(served.base + "/health").json()["status"] == "ok"


def test_serve_exits_non_zero_when_the_engine_fails(model_dir, monkeypatch):
    import argparse

    from exaone_cpu.commands import serve

    def broken(self):
        raise RuntimeError("engine bug")

    monkeypatch.setattr(BatchEngine, "_loop", broken)
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = parser.parse_args([str(model_dir), "--port", str(port), "--log-level", "error"])
    assert serve.run(args) == 1  # the server stopped by itself: a supervisor restarts it


def test_model_tokenize_detokenize_and_developer_role(served, tokenizer):
    client = served.client()
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    text = "Hello 안녕 <think> 🦙"
    r = _post(served, "/tokenize", {"content": text})
    assert r.status_code == 200 and r.json()["tokens"] == tokenizer.encode(text, add_special_tokens=False)
    ids = r.json()["tokens"]
    pieces = _post(served, "/tokenize", {"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == ids
    joined = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces)
    assert joined.decode("utf-8") == text  # whole UTF-8 pieces as text, split characters as bytes
    assert _post(served, "/detokenize", {"tokens": ids}).json()["content"] == text
    assert _error(_post(served, "/detokenize", {"tokens": [1, -5]}), 400)["param"] == "tokens[1]"
    assert _error(_post(served, "/detokenize", {"tokens": [10**9]}), 400)["param"] == "tokens[0]"
    assert _error(_post(served, "/tokenize", {"content": 5}), 400)["param"] == "content"
    assert _error(_post(served, "/tokenize", {"content": "x", "with_pieces": "yes"}), 400)["param"] == "with_pieces"
    _error(_post(served, "/tokenize", {"content": "x"}, key="wrong"), 401)
    # the developer role is the system role, as OpenAI's newer models name it
    as_dev = client.chat.completions.create(model="tiny", max_tokens=4, temperature=0, messages=[
        {"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Hi"}])
    as_sys = client.chat.completions.create(model="tiny", max_tokens=4, temperature=0, messages=[
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}])
    assert as_dev.choices[0].message.content == as_sys.choices[0].message.content


def test_cors_is_off_by_default_and_allows_the_origins_given(served, model, tokenizer):
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    off = httpx.options(served.base + "/v1/chat/completions", headers=preflight)
    assert off.status_code == 405 and "access-control-allow-origin" not in off.headers
    engine = BatchEngine(model, parallel=1, max_queue=2)
    app = create_app(engine, tokenizer, ServerSettings("tiny", ctx=256, api_key=API_KEY,
                                                       cors_origins=("http://localhost:3000",)))
    server = RunningServer(app)
    try:
        ok = httpx.options(server.base + "/v1/chat/completions", headers=preflight)
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = httpx.options(server.base + "/v1/chat/completions", headers={**preflight, "Origin": "http://evil.test"})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        r = httpx.get(server.base + "/v1/models", headers={"Origin": "http://localhost:3000",
                                                           "Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    finally:
        server.stop()


def test_completions_take_token_id_prompts(served, model, tokenizer):
    client = served.client()
    text = "The capital of France is"
    ids = tokenizer.encode(text, add_special_tokens=False)
    by_text = client.completions.create(model="tiny", prompt=text, max_tokens=6, temperature=0)
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0)
    by_list = client.completions.create(model="tiny", prompt=[ids], max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text == by_list.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids)
    body = {"model": "tiny", "max_tokens": 2}
    assert _error(_post(served, "/v1/completions", {**body, "prompt": [1, 10**9]}), 400)["param"] == "prompt[1]"
    assert _error(_post(served, "/v1/completions", {**body, "prompt": [[1, 2], [3, 10**9]]}), 400)["param"] == \
        "prompt[1][1]"
    assert _error(_post(served, "/v1/completions", {**body, "prompt": ["a", 5]}), 400)["param"] == "prompt[1]"
    assert _error(_post(served, "/v1/completions", {**body, "prompt": []}), 400)["param"] == "prompt"
    assert _error(_post(served, "/v1/completions", {**body, "prompt": [1, True]}), 400)["param"] == "prompt[1]"


def test_completions_with_several_prompts_answer_each_in_its_choice(served, model, tokenizer):
    client = served.client()
    texts = ["One small step", "안녕하세요 여러분", "def main():"]
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    expected = [greedy_text(model, tokenizer, i, 5) for i in ids]
    for prompt in (texts, ids, [texts[0], ids[1], texts[2]]):
        out = client.completions.create(model="tiny", prompt=prompt, max_tokens=5, temperature=0, logprobs=1)
        assert [c.index for c in out.choices] == [0, 1, 2]
        assert [c.text for c in out.choices] == expected
        assert all(len(c.logprobs.tokens) == len(c.logprobs.token_logprobs) for c in out.choices)
        assert out.usage.prompt_tokens == sum(len(i) for i in ids)
        assert out.usage.completion_tokens == out.usage.total_tokens - out.usage.prompt_tokens >= 3
    text, finish, usage = {0: "", 1: "", 2: ""}, {}, None
    for chunk in client.completions.create(model="tiny", prompt=texts, max_tokens=5, temperature=0, stream=True,
                                           stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text[c.index] += c.text
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert [text[i] for i in range(3)] == expected and sorted(finish) == [0, 1, 2]
    assert usage.prompt_tokens == sum(len(i) for i in ids)


def test_one_log_line_per_request_with_its_token_counts(served, tokenizer, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="exaone_cpu.server")
    prompt = "Count to three"
    out = served.client().completions.create(model="tiny", prompt=prompt, max_tokens=5, temperature=0)
    lines = [r.getMessage() for r in caplog.records if "/v1/completions 200" in r.getMessage()]
    assert len(lines) == 1, lines
    n = len(tokenizer.encode(prompt, add_special_tokens=False))
    cached = out.usage.prompt_tokens_details.cached_tokens
    assert f"prompt_tokens={n} cached_tokens={cached} completion_tokens={out.usage.completion_tokens}" in lines[0]
    assert "ttft=" in lines[0] and "tok/s" in lines[0] and "nan" not in lines[0].split("ttft=")[1].split()[0]


# ---- structured output: response_format, llama-server's json_schema / grammar, tool_choice ---------------

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "kind": {"enum": ["cat", "dog"]}},
          "required": ["name", "age", "kind"], "additionalProperties": False}
ADD_TOOL = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                                                   "b": {"type": "integer", "minimum": 0, "maximum": 99}},
                                  "required": ["a", "b"], "additionalProperties": False}}}
BOUNDED_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                                          "required": ["city"], "additionalProperties": False}}}


def test_response_format_json_schema_and_json_object(served):
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("llguidance")
    client = served.client()
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for seed in range(8):
        out = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "A pet, as JSON"}],
                                             response_format=fmt, temperature=1.0, seed=seed, max_tokens=200)
        assert out.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(out.choices[0].message.content), PERSON)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "A pet"}], response_format=fmt, temperature=1.0, seed=3,
        max_tokens=200, stream=True) if c.choices)
    jsonschema.validate(json.loads(streamed), PERSON)
    out = client.completions.create(model="tiny", prompt="JSON:", max_tokens=60, temperature=0,
                                    extra_body={"response_format": {"type": "json_object"}})
    assert out.choices[0].text.startswith("{")
    # llama-server's fields: a JSON schema, a GBNF grammar
    out = client.completions.create(model="tiny", prompt="JSON:", max_tokens=200, temperature=1.0, seed=1,
                                    extra_body={"json_schema": PERSON})
    jsonschema.validate(json.loads(out.choices[0].text), PERSON)
    out = client.completions.create(model="tiny", prompt="Answer:", max_tokens=20, temperature=1.0, seed=1,
                                    extra_body={"grammar": 'root ::= ("yes" | "no") "!"'})
    assert out.choices[0].text in ("yes!", "no!") and out.choices[0].finish_reason == "stop"


def test_response_format_after_reasoning(served):
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("llguidance")
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    out = served.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Think, then JSON"}], response_format=fmt,
        temperature=1.0, seed=5, max_tokens=200, logit_bias={"355": 11},  # ends the random model's reasoning soon
        extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    message = out.choices[0].message
    assert out.choices[0].finish_reason == "stop" and message.model_extra["reasoning_content"] is not None
    jsonschema.validate(json.loads(message.content), PERSON)


def test_tool_choice_is_enforced(served):
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("llguidance")
    client = served.client()
    messages = [{"role": "user", "content": "Add 2 and 3, or get the weather"}]
    tools = [ADD_TOOL, BOUNDED_WEATHER]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    for seed in range(6):
        out = client.chat.completions.create(model="tiny", messages=messages, tools=tools, tool_choice="required",
                                             parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=120)
        choice = out.choices[0]
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
        call = choice.message.tool_calls[0].function
        jsonschema.validate(json.loads(call.arguments), schemas[call.name])
    named = {"type": "function", "function": {"name": "add"}}
    out = client.chat.completions.create(model="tiny", messages=messages, tools=tools, tool_choice=named,
                                         temperature=1.0, seed=9, max_tokens=120)
    assert [c.function.name for c in out.choices[0].message.tool_calls] == ["add"]


def test_streamed_tool_calls_equal_the_whole_ones(served):
    pytest.importorskip("llguidance")
    client = served.client()
    request = dict(model="tiny", messages=[{"role": "user", "content": "Weather?"}], tools=[ADD_TOOL, BOUNDED_WEATHER],
                   tool_choice="required", temperature=1.0, max_tokens=120)
    most, pieces = 0, 0
    for seed in range(4):
        whole = client.chat.completions.create(seed=seed, **request).choices[0]
        # the official client's own reassembly of the streamed chunks
        with client.chat.completions.stream(seed=seed, **request) as stream:
            for event in stream:
                pieces += event.type == "tool_calls.function.arguments.delta"
            try:
                final = stream.get_final_completion().choices[0]
            except openai.LengthFinishReasonError as e:  # it refuses to parse, but holds what it built
                final = e.completion.choices[0]
        assert final.finish_reason == whole.finish_reason  # parallel calls: the random model may reach the budget
        streamed = [(c.id, c.function.name, c.function.arguments) for c in final.message.tool_calls or []]
        assert [s[1:] for s in streamed] == [(c.function.name, c.function.arguments)
                                             for c in whole.message.tool_calls or []]
        assert all(s[0] for s in streamed) and len({s[0] for s in streamed}) == len(streamed)
        most = max(most, len(streamed))
    assert most >= 2 and pieces > 4 * most  # several calls, their arguments in many pieces


@pytest.mark.parametrize("extra,param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}},
     "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}},
     "response_format.json_schema"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"grammar": "root ::= ("}, "grammar"),
    ({"grammar": "start: nope"}, "grammar"),
    ({"json_schema": {"type": "object"}, "grammar": 'root ::= "a"'}, "grammar"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [ADD_TOOL], "tool_choice": {"type": "function", "function": {"name": "mul"}}}, "tool_choice"),
    ({"tools": [ADD_TOOL], "tool_choice": {"type": "function"}}, "tool_choice"),
])
def test_invalid_structured_output_requests_are_400s(served, extra, param):
    pytest.importorskip("llguidance")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
    error = _error(_post(served, "/v1/chat/completions", body), 400)
    assert error["param"] == param, error
