"""The OpenAI-compatible HTTP API over a BatchEngine (Starlette; run by uvicorn).

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /v1/models/{id},
POST /tokenize, POST /detokenize (llama-server's), GET /metrics (Prometheus), GET /health.
Text work (detokenising, reasoning split, stop strings, tool-call parsing) happens per request on the
event loop; the engine thread only turns token ids into token ids.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..constraints import ConstraintError, TokenConstraint, guide_vocabulary, llguidance_available, make_constraint
from ..parsing import REASONING, TOOL_CALL, TOOL_CALL_ARGUMENTS, TOOL_CALL_BEGIN
from ..decoding import FINISH_ERROR, Decoding, TokenLogprob, eos_token_ids
from ..sampling import GenerationDefaults
from ..streaming import TextPipeline
from ..tokenizer import Tokenizer
from . import metrics, protocol
from .engine import FINISH_CANCELLED, BatchEngine, EngineFailed, QueueFull, Sequence
from .protocol import APIError, CompletionParams

log = logging.getLogger("exaone_cpu.server")


@dataclass
class ServerSettings:
    model_name: str
    ctx: int
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    # browser origins allowed to call the API (CORS); none by default ("*": any)
    cors_origins: tuple[str, ...] = ()
    # sampling for what a request does not set: generation_config.json and serve's options, merged as
    # the library merges them (greedy unless it says do_sample or gives a temperature)
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)


class Server:
    def __init__(self, engine: BatchEngine, tokenizer: Tokenizer, settings: ServerSettings):
        self.engine = engine
        self.tokenizer = tokenizer
        self.settings = settings
        self.eos_ids = eos_token_ids(engine.model.config, settings.defaults, tokenizer)
        self._tokens: dict[int, tuple[str, list[int]]] = {}  # token id -> (text, bytes), for logprobs
        self.counters = metrics.RequestCounters(ROUTES)
        if llguidance_available():  # llguidance's token trie, built once (~0.6 s) before the first request
            guide_vocabulary(tokenizer, engine.model.config.vocab_size)

    # ---- plumbing -------------------------------------------------------------------------------

    def check_auth(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise APIError(401, "Incorrect or missing API key", code="invalid_api_key")

    async def read_json(self, request: Request) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise APIError(413, f"request body exceeds the limit of {limit} bytes")
        try:
            return json.loads(body)
        except RecursionError:
            raise APIError(400, "invalid JSON body: nested too deeply") from None
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
            raise APIError(400, f"invalid JSON body: {e}") from None

    @staticmethod
    def headers(request: Request, params: CompletionParams) -> dict[str, str]:
        """A Warning header (and a log line) naming the request's fields this server does not know:
        they change nothing, and the client should hear it rather than guess."""
        if not params.ignored:
            return {}
        names = ", ".join(params.ignored[:20]) + (", ..." if len(params.ignored) > 20 else "")
        log.warning("%s %s: ignored unknown fields: %s", request.method, request.url.path, names)
        return {"Warning": f'299 exaone-cpu "unknown fields ignored: {names}"'}

    def budget(self, prompt_tokens: int, params: CompletionParams) -> int:
        ctx = self.settings.ctx
        room = ctx - prompt_tokens
        if room < 1:
            raise APIError(400, f"prompt of {prompt_tokens} tokens leaves no room in the context of {ctx}",
                           param="messages", code="context_length_exceeded")
        if params.max_tokens is None:
            return room
        if params.max_tokens > room:
            raise APIError(400, f"prompt ({prompt_tokens} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                           f"context of {ctx} tokens", param="max_tokens", code="context_length_exceeded")
        return params.max_tokens

    def constraint(self, params: CompletionParams, stop_token_ids: tuple[int, ...], *, thinking: bool = False,
                   tools: list[dict] | None = None) -> TokenConstraint | None:
        """The request's structured-output constraint (response_format, tool_choice), or None; a 400
        naming the field when it is invalid."""
        try:
            return make_constraint(self.tokenizer, self.engine.model.config.vocab_size, params.output_format,
                                   thinking=thinking, tools=tools, tool_choice=params.tool_choice,
                                   parallel_tool_calls=params.parallel_tool_calls, stop_token_ids=stop_token_ids)
        except ConstraintError as e:
            param = params.format_param or "tools"
            raise APIError(400, f"{param}: {e}", param=param) from None

    def start(self, prompt_ids: list[int], params: CompletionParams, *, thinking: bool = False,
              tools: list[dict] | None = None) -> tuple[Sequence, asyncio.Queue]:
        """Queues a sequence; its tokens and finish reason arrive on the returned queue. thinking and
        tools: what the prompt opened and offers, for the constraint."""
        max_tokens = self.budget(len(prompt_ids), params)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stops = () if params.ignore_eos else self.eos_ids
        constraint = self.constraint(params, stops, thinking=thinking, tools=tools)
        try:
            decoding = Decoding(
                np.asarray(prompt_ids, np.int64), self.engine.model.config.vocab_size, max_new_tokens=max_tokens,
                sampling=self.settings.defaults.sampling_params(**params.sampling),
                stop_token_ids=stops, logprobs=params.logprobs, constraint=constraint)
        except ValueError as e:  # e.g. a logit_bias id outside the vocabulary
            name = next((k for k in params.sampling if k in str(e)), None)
            raise APIError(400, str(e), param=name) from None
        seq = Sequence(
            decoding=decoding,
            on_token=lambda t: loop.call_soon_threadsafe(events.put_nowait, ("token", t)),
            on_finish=lambda r: loop.call_soon_threadsafe(events.put_nowait, ("finish", r)),
        )
        try:
            self.engine.submit(seq)
        except QueueFull as e:
            raise APIError(429, f"server busy: {e}; retry later", code="queue_full") from None
        except EngineFailed as e:
            raise APIError(503, str(e), code="engine_failed") from None
        return seq, events

    async def collect(self, request: Request, seq: Sequence, events: asyncio.Queue, text: TextPipeline) -> None:
        """Runs a non-streaming request to its end; a client that hangs up cancels it (its slot is free
        at the engine's next step)."""
        await self.collect_all(request, [(seq, events, text)])

    async def collect_all(self, request: Request, runs: list[tuple[Sequence, asyncio.Queue, TextPipeline]]) -> None:
        """collect() for the sequences of one request (several prompts), run together."""

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            for seq, _, _ in runs:
                seq.cancel()

        async def drain(seq: Sequence, events: asyncio.Queue, text: TextPipeline) -> None:
            async for _ in self.run(seq, events, text):
                pass

        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.gather(*(drain(*run) for run in runs))
        finally:
            watcher.cancel()
            for seq, _, _ in runs:
                seq.cancel()

    async def run(self, seq: Sequence, events: asyncio.Queue, text: TextPipeline) -> AsyncIterator[str]:
        """Yields the raw text pieces until the sequence ends (the parsed deltas wait in `text`); returns
        with the finish reason in seq.finish_reason."""
        while True:
            kind, value = await events.get()
            if kind == "finish":
                seq.finish_reason = value
                yield text.finish()
                return
            seq.passed += 1
            yield text.add(value)
            if text.stopped:
                seq.cancel()  # the engine drops it at its next step; later tokens are ignored
                seq.finish_reason = "stop"
                seq.stopped_by_text = True
                yield text.finish()
                return

    # ---- log-probabilities ------------------------------------------------------------------------

    def _token(self, token_id: int) -> tuple[str, list[int]]:
        entry = self._tokens.get(token_id)
        if entry is None:
            raw = self.tokenizer.token_bytes(token_id)
            entry = self._tokens[token_id] = (raw.decode("utf-8", errors="replace"), list(raw))
        return entry

    def chat_logprobs(self, items: list[TokenLogprob]) -> list[dict[str, Any]]:
        """OpenAI's chat `logprobs.content` entries."""
        out = []
        for item in items:
            token, raw = self._token(item.token)
            top = [{"token": t, "logprob": lp, "bytes": b}
                   for (t, b), lp in ((self._token(i), lp) for i, lp in item.top)]
            out.append({"token": token, "logprob": item.logprob, "bytes": raw, "top_logprobs": top})
        return out

    def completion_logprobs(self, items: list[TokenLogprob], offset: int, want_top: bool) -> dict[str, Any]:
        """OpenAI's legacy completions `logprobs` object; offsets count characters from `offset`."""
        tokens, offsets = [], []
        for item in items:
            offsets.append(offset)
            token = self._token(item.token)[0]
            tokens.append(token)
            offset += len(token)
        return {"tokens": tokens, "token_logprobs": [i.logprob for i in items],
                "top_logprobs": [{self._token(t)[0]: lp for t, lp in i.top} for i in items] if want_top else None,
                "text_offset": offsets}

    @staticmethod
    def new_logprobs(seq: Sequence, start: int) -> list[TokenLogprob]:
        """The log-probabilities of the tokens the consumer took since `start`."""
        items = seq.decoding.logprobs
        return [] if items is None else items[start : seq.passed]

    # ---- routes ---------------------------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        self.check_auth(request)
        text = metrics.render(self.engine, self.counters, self.settings.model_name)
        return PlainTextResponse(text, media_type=metrics.CONTENT_TYPE)

    async def health(self, request: Request) -> Response:
        active, waiting = self.engine.load
        if not self.engine.healthy:
            return JSONResponse({"status": "error", "error": f"the engine stopped: {self.engine.failure!r}"},
                                status_code=503)
        return JSONResponse({"status": "ok", "active": active, "waiting": waiting})

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.settings.model_name, "object": "model", "created": 0, "owned_by": "exaone_cpu"}

    async def models(self, request: Request) -> Response:
        self.check_auth(request)
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        self.check_auth(request)
        name = request.path_params["model_id"]
        if name != self.settings.model_name:
            raise protocol.APIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return JSONResponse(self._model_card())

    async def tokenize(self, request: Request) -> Response:
        self.check_auth(request)
        content, add_special, with_pieces = protocol.parse_tokenize(await self.read_json(request))
        ids = self.tokenizer.encode(content, add_special_tokens=add_special)
        if not with_pieces:
            return JSONResponse({"tokens": ids})
        pieces = []
        for i in ids:  # as llama-server: the piece's text, or its bytes when they are not whole UTF-8
            raw = self.tokenizer.token_bytes(i)
            try:
                pieces.append({"id": i, "piece": raw.decode("utf-8")})
            except UnicodeDecodeError:
                pieces.append({"id": i, "piece": list(raw)})
        return JSONResponse({"tokens": pieces})

    async def detokenize(self, request: Request) -> Response:
        self.check_auth(request)
        ids = protocol.parse_detokenize(await self.read_json(request), len(self.tokenizer))
        return JSONResponse({"content": self.tokenizer.decode(ids)})

    async def chat(self, request: Request) -> Response:
        self.check_auth(request)
        req = protocol.parse_chat(await self.read_json(request), self.settings.model_name)
        try:
            prompt = self.tokenizer.apply_chat_template(
                req.messages, tools=req.tools, add_generation_prompt=True, tokenize=True,
                enable_thinking=req.enable_thinking, **req.template_kwargs)
        except Exception as e:  # the template's raise_exception and friends
            raise APIError(400, f"messages could not be rendered with the chat template: {e}",
                           param="messages") from None
        seq, events = self.start(prompt, req.params, thinking=req.enable_thinking, tools=req.tools)
        tools = req.tools is not None
        # calls a grammar keeps well-formed stream as they are written (OpenAI's argument deltas)
        text = TextPipeline(self.tokenizer, stop_strings=req.params.stop, skip_special_tokens=True,
                            thinking=req.enable_thinking, tools=tools,
                            stream_calls=tools and seq.decoding.constraint is not None)
        ident, created = protocol.new_id("chatcmpl"), protocol.now()
        started = time.perf_counter()
        calls = 0  # tool calls streamed so far
        streaming: set[str] = set()  # ids of the calls sent piece by piece

        def delta_of(kind: str, value: Any) -> dict[str, Any] | None:
            nonlocal calls
            if kind == TOOL_CALL_BEGIN:
                calls += 1
                streaming.add(value["id"])
                return {"tool_calls": [{"index": calls - 1, "id": value["id"], "type": "function",
                                        "function": {"name": value["name"], "arguments": ""}}]}
            if kind == TOOL_CALL_ARGUMENTS:
                return {"tool_calls": [{"index": calls - 1, "function": {"arguments": value}}]}
            if kind == TOOL_CALL:
                if value["id"] in streaming:  # already sent
                    return None
                calls += 1
                return {"tool_calls": [dict(value, index=calls - 1)]}
            return {"reasoning_content" if kind == REASONING else "content": value}

        def final_message() -> tuple[dict[str, Any], str]:
            # the parser's output: exactly what the streamed deltas add up to
            parsed = text.output
            message: dict[str, Any] = {"role": "assistant",
                                       "content": parsed.content if parsed.content or not parsed.tool_calls else None}
            if parsed.reasoning is not None:
                message["reasoning_content"] = parsed.reasoning
            reason = seq.finish_reason
            if parsed.tool_calls:
                message["tool_calls"] = parsed.tool_calls
                if reason == "stop":
                    reason = "tool_calls"
            return message, reason

        def logprobs_of(start: int) -> dict[str, Any] | None:
            if req.params.logprobs is None:
                return None
            return {"content": self.chat_logprobs(self.new_logprobs(seq, start))}

        def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: dict | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            if logprobs is not None:
                choice["logprobs"] = logprobs
            return "data: " + json.dumps({
                "id": ident, "object": "chat.completion.chunk", "created": created, "model": req.params.model,
                "choices": [choice]}, ensure_ascii=False) + "\n\n"

        if not req.params.stream:
            await self.collect(request, seq, events, text)
            if seq.finish_reason == FINISH_ERROR:
                raise APIError(500, "generation failed")
            message, reason = final_message()
            self._log(request, 200, seq, started)
            return JSONResponse({
                "id": ident, "object": "chat.completion", "created": created, "model": req.params.model,
                "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": logprobs_of(0)}],
                "usage": self._usage(seq)}, headers=self.headers(request, req.params))

        async def sse() -> AsyncIterator[str]:
            try:
                yield chunk({"role": "assistant", "content": ""})
                sent = 0  # tokens whose logprobs went out: with the first delta after them
                async for _ in self.run(seq, events, text):
                    for kind, value in text.take_deltas():
                        delta = delta_of(kind, value)
                        if delta is not None:
                            yield chunk(delta, logprobs=logprobs_of(sent))
                            sent = seq.passed
                if seq.finish_reason == FINISH_ERROR:
                    yield self._error_event()
                    return
                _, reason = final_message()
                yield chunk({}, reason, logprobs_of(sent) if sent < seq.passed else None)
                if req.params.include_usage:
                    yield "data: " + json.dumps({
                        "id": ident, "object": "chat.completion.chunk", "created": created,
                        "model": req.params.model, "choices": [],
                        "usage": self._usage(seq)}) + "\n\n"
                yield "data: [DONE]\n\n"
            finally:
                seq.cancel()  # a client that disconnects frees its slot at once
                self._log(request, 200, seq, started)

        return StreamingResponse(sse(), media_type="text/event-stream", headers=self.headers(request, req.params))

    async def completions(self, request: Request) -> Response:
        self.check_auth(request)
        params, given = protocol.parse_completion(await self.read_json(request), self.settings.model_name,
                                                  self.engine.model.config.vocab_size)
        prompts = []
        for i, one in enumerate(given):  # one choice per prompt, as OpenAI's API
            name = "prompt" if len(given) == 1 else f"prompt[{i}]"
            if isinstance(one, list):  # token ids, checked against the vocabulary
                ids = one
            else:
                try:
                    ids = self.tokenizer.encode(one, add_special_tokens=False)
                except Exception as e:  # noqa: BLE001 - e.g. a lone surrogate
                    raise APIError(400, f"{name}: cannot be tokenized: {e}", param=name) from None
            if not ids:
                raise APIError(400, f"{name}: encodes to no tokens", param=name)
            prompts.append(ids)
        runs: list[tuple[Sequence, asyncio.Queue, TextPipeline]] = []
        try:
            for ids in prompts:
                seq, events = self.start(ids, params)
                runs.append((seq, events, TextPipeline(self.tokenizer, stop_strings=params.stop,
                                                       skip_special_tokens=True, parse=False)))
        except APIError:
            for seq, _, _ in runs:  # all of the request or none of it
                seq.cancel()
            raise
        seqs = [seq for seq, _, _ in runs]
        ident, created = protocol.new_id("cmpl"), protocol.now()
        started = time.perf_counter()

        def body(index: int, choice_text: str, finish: str | None, logprobs: dict | None = None) -> dict[str, Any]:
            return {"id": ident, "object": "text_completion", "created": created, "model": params.model,
                    "choices": [{"index": index, "text": choice_text, "logprobs": logprobs, "finish_reason": finish}]}

        def logprobs_of(seq: Sequence, start: int, offset: int) -> dict[str, Any] | None:
            if params.logprobs is None:
                return None
            return self.completion_logprobs(self.new_logprobs(seq, start), offset, params.logprobs > 0)

        if not params.stream:
            await self.collect_all(request, runs)
            if any(seq.finish_reason == FINISH_ERROR for seq in seqs):
                raise APIError(500, "generation failed")
            self._log(request, 200, seqs, started)
            choices = [body(i, text.text, seq.finish_reason, logprobs_of(seq, 0, 0))["choices"][0]
                       for i, (seq, _, text) in enumerate(runs)]
            out = {**body(0, "", None), "choices": choices, "usage": self._usage(seqs)}
            return JSONResponse(out, headers=self.headers(request, params))

        async def pieces(index: int, seq: Sequence, events: asyncio.Queue, text: TextPipeline,
                         out: asyncio.Queue) -> None:
            """One choice's chunks onto the request's stream, then None."""
            try:
                sent, offset = 0, 0
                async for piece in self.run(seq, events, text):
                    if piece:
                        await out.put(body(index, piece, None, logprobs_of(seq, sent, offset)))
                        sent, offset = seq.passed, offset + len(piece)
                if seq.finish_reason != FINISH_ERROR:
                    rest = logprobs_of(seq, sent, offset) if sent < seq.passed else None
                    await out.put(body(index, "", seq.finish_reason, rest))
            finally:
                await out.put(None)

        async def sse() -> AsyncIterator[str]:
            out: asyncio.Queue = asyncio.Queue()
            tasks = [asyncio.ensure_future(pieces(i, *run, out)) for i, run in enumerate(runs)]
            try:
                running = len(tasks)
                while running:
                    chunk = await out.get()
                    if chunk is None:
                        running -= 1
                        continue
                    yield "data: " + json.dumps(chunk, ensure_ascii=False) + "\n\n"
                if any(seq.finish_reason == FINISH_ERROR for seq in seqs):
                    yield self._error_event()
                    return
                if params.include_usage:
                    yield "data: " + json.dumps({**body(0, "", None), "choices": [], "usage": self._usage(seqs)}) + "\n\n"
                yield "data: [DONE]\n\n"
            finally:
                for task in tasks:
                    task.cancel()
                for seq in seqs:
                    seq.cancel()
                self._log(request, 200, seqs, started)

        return StreamingResponse(sse(), media_type="text/event-stream", headers=self.headers(request, params))

    @staticmethod
    def _error_event() -> str:
        """A generation that failed after the stream started: an error event, then the end."""
        return "data: " + json.dumps(APIError(500, "generation failed").body()) + "\n\ndata: [DONE]\n\n"

    @classmethod
    def _usage(cls, seqs: Sequence | list[Sequence]) -> dict[str, Any]:
        seqs = seqs if isinstance(seqs, list) else [seqs]
        specs = [s.speculator for s in seqs if s.speculator is not None]
        predictions = None
        if specs:
            kept = sum(x.accepted for x in specs)
            predictions = (kept, sum(x.drafted for x in specs) - kept)
        return protocol.usage(sum(s.decoding.prompt_tokens for s in seqs), sum(cls._completion_tokens(s) for s in seqs),
                              sum(s.cached_tokens for s in seqs), predictions)

    @staticmethod
    def _completion_tokens(seq: Sequence) -> int:
        # as the library counts them (and vLLM): a final stop token included; after a stop string, the
        # tokens up to it (the engine may have picked more before it saw the cancel: a speculative
        # round picks several at once)
        return seq.passed if seq.stopped_by_text else seq.decoding.completion_tokens

    def _log(self, request: Request, status: int, seqs: Sequence | list[Sequence] | None, started: float) -> None:
        """One line per request: prompt, cached and completion tokens, time to first token, decode tok/s
        (summed over the request's prompts; the first token of any of them)."""
        end = time.perf_counter()
        if seqs is None:
            log.info("%s %s %d time=%.3fs", request.method, request.url.path, status, end - started)
            return
        seqs = seqs if isinstance(seqs, list) else [seqs]
        for seq in seqs:
            first = seq.first_token_at
            self.counters.finished(seq.decoding.prompt_tokens, seq.cached_tokens,
                                   None if first is None else first - started)
        tokens = sum(self._completion_tokens(s) for s in seqs)
        firsts = [s.first_token_at for s in seqs if s.first_token_at is not None]
        first = min(firsts) if firsts else None
        ttft = (first - started) if first is not None else float("nan")
        rate = (tokens - len(firsts)) / (end - first) if first is not None and tokens > len(firsts) and end > first \
            else float("nan")
        specs = [s.speculator for s in seqs if s.speculator is not None]
        guesses = (f" drafted={sum(x.drafted for x in specs)} accepted={sum(x.accepted for x in specs)}"
                   if specs else "")
        log.info("%s %s %d prompt_tokens=%d cached_tokens=%d completion_tokens=%d ttft=%.3fs decode=%.1f tok/s%s "
                 "time=%.3fs", request.method, request.url.path, status, sum(s.decoding.prompt_tokens for s in seqs),
                 sum(s.cached_tokens for s in seqs), tokens, ttft, rate, guesses, end - started)


ROUTES = ("/health", "/metrics", "/v1/models", "/v1/models/{model_id}", "/tokenize", "/detokenize",
          "/v1/chat/completions", "/v1/completions")


class CountResponses:
    """ASGI middleware: every HTTP response's status, by route, for /metrics."""

    def __init__(self, app, counters: metrics.RequestCounters):
        self.app = app
        self.counters = counters

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        route = "/v1/models/{model_id}" if path.startswith("/v1/models/") else path

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.counters.response(route, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)


def create_app(engine: BatchEngine, tokenizer: Tokenizer, settings: ServerSettings) -> Starlette:
    server = Server(engine, tokenizer, settings)

    async def api_error(request: Request, exc: APIError) -> Response:
        log.info("%s %s %d (%s)", request.method, request.url.path, exc.status, exc.message)
        return JSONResponse(exc.body(), status_code=exc.status)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s 500", request.method, request.url.path)
        return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}").body(), status_code=500)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return JSONResponse(APIError(status, f"{request.method} {request.url.path}: not found").body(),
                            status_code=status)

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = Starlette(
        routes=[
            Route("/health", server.health, methods=["GET"]),
            Route("/metrics", server.metrics, methods=["GET"]),
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", server.model, methods=["GET"]),
            Route("/tokenize", server.tokenize, methods=["POST"]),
            Route("/detokenize", server.detokenize, methods=["POST"]),
            Route("/v1/chat/completions", server.chat, methods=["POST"]),
            Route("/v1/completions", server.completions, methods=["POST"]),
        ],
        exception_handlers={APIError: api_error, 404: not_found, 405: not_found, Exception: unexpected},
        lifespan=lifespan,
        middleware=[Middleware(CountResponses, counters=server.counters)]
        + ([Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                       allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])]
           if settings.cors_origins else []),
    )
    app.state.server = server
    return app


__all__ = ["FINISH_CANCELLED", "Server", "ServerSettings", "create_app"]
