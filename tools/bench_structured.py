#!/usr/bin/env python3
"""Decode speed with and without a structured-output constraint, through the public `Generator`.

Each round generates, back to back (order alternating between rounds), from the same chat prompt and
sampling settings (temperature 0.6, top_p 0.95, a fixed seed):
  schema   json_schema=SCHEMA (a list of 8 records: names, bounded integers, enums), until the JSON
           is complete;
  tools    tools=TOOLS, tool_choice="required", parallel_tool_calls=False (one call, its arguments
           against the tool's schema);
  free     no constraint, eos ignored, for as many tokens as the schema run made.
Decode tok/s is GenerationResult.decode_tokens_per_second (every token after the first). For the
constrained runs also: the mean time llguidance took per mask (on its worker thread, overlapping the
forward pass) and the mean time the sampling thread waited for it. Medians of --rounds rounds; the
ratio constrained / free is the figure of interest.

    python tools/bench_structured.py MODEL [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics

from exaone_cpu import Generator

SAMPLING = {"temperature": 0.6, "top_p": 0.95, "seed": 7}
MESSAGES = [{"role": "user", "content": "List eight items of a shop's inventory as JSON."}]
SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "minItems": 8, "maxItems": 8, "items": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 24},
                       "qty": {"type": "integer", "minimum": 0, "maximum": 1000},
                       "tags": {"type": "array", "items": {"enum": ["new", "sale", "fragile"]}, "maxItems": 3}},
        "required": ["name", "qty", "tags"], "additionalProperties": False}}},
    "required": ["items"], "additionalProperties": False,
}
TOOLS = [{"type": "function", "function": {"name": "restock", "parameters": {
    "type": "object", "properties": {"items": {"type": "array", "maxItems": 6, "items": {
        "type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                                         "count": {"type": "integer", "minimum": 1, "maximum": 500}},
        "required": ["sku", "count"], "additionalProperties": False}}},
    "required": ["items"], "additionalProperties": False}}}]


def run(gen: Generator, ids: list[int], **options) -> tuple[float, int, float, float]:
    stream = gen.stream(ids, **SAMPLING, **options)
    constraint = stream.tokens.decoding.constraint
    result = stream.until_done()
    if constraint is None:
        return result.decode_tokens_per_second, result.completion_tokens, 0.0, 0.0
    masks = max(constraint.masks, 1)
    return (result.decode_tokens_per_second, result.completion_tokens,
            1000 * constraint.mask_seconds / masks, 1000 * constraint.wait_seconds / masks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    gen = Generator.from_pretrained(args.model, threads=args.threads)
    ids = gen.encode_chat(MESSAGES)
    tool_ids = gen.encode_chat(MESSAGES, tools=TOOLS)
    run(gen, ids, json_schema=SCHEMA, max_new_tokens=8)  # warm up (llguidance's token trie, caches)
    rows: dict[str, list[tuple[float, int, float, float]]] = {"schema": [], "tools": [], "free": []}
    for r in range(args.rounds):
        order = ["schema", "tools", "free"] if r % 2 == 0 else ["free", "tools", "schema"]
        n = rows["schema"][-1][1] if rows["schema"] else 200
        for name in order:
            if name == "schema":
                rows[name].append(run(gen, ids, json_schema=SCHEMA, max_new_tokens=1000))
            elif name == "tools":
                rows[name].append(run(gen, tool_ids, tools=TOOLS, tool_choice="required",
                                        parallel_tool_calls=False, max_new_tokens=1000))
            else:
                rows[name].append(run(gen, ids, max_new_tokens=n, stop_token_ids=()))
    free = statistics.median(x[0] for x in rows["free"])
    report = {"threads": args.threads, "rounds": args.rounds, "free_tok_s": round(free, 2)}
    for name in ("schema", "tools"):
        rate = statistics.median(x[0] for x in rows[name])
        report[name] = {"tok_s": round(rate, 2), "ratio_to_free": round(rate / free, 3),
                        "tokens": statistics.median(x[1] for x in rows[name]),
                        "mask_ms": round(statistics.median(x[2] for x in rows[name]), 3),
                        "wait_ms": round(statistics.median(x[3] for x in rows[name]), 3)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
