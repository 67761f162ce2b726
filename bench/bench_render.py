"""Render + mask + tokenize speed: osstune vs openai-harmony's Rust renderer, same conversations.

    python bench/bench_render.py [--conversations 3000] [--repeat 3]

osstune is timed from raw dataset rows (validation, harmony rendering, tokenization, masks and
per-token message index). openai-harmony is timed on ready-made `Conversation` objects (building
them is not counted) and produces ids only, no masks. Both use the same conversations: the bundled
sample plus generated multi-turn, reasoning and tool-call conversations. The ids are checked to be
identical before anything is timed. Runs offline (the verified vocabulary from
engine.data.tokenizer).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

from osstune.engine.data.dataset_formats import FormatOptions, row_to_chat
from osstune.engine.data.dataset_sources import builtin_sample_path, read_local
from osstune.engine.data.harmony import HarmonyRenderer, RenderSettings, plan_examples
from osstune.engine.data.tokenizer import load_offline_tokenizer, offline_tokenizer_dir

TEXT = ("the model reads every token of the conversation and learns to answer with care "
        "über naïve façade 東京 данные 🙂 numbers 12345 6789 code() {x: 1} <|end|>")
WORDS = tuple(TEXT.split())


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def generated_row(rng: random.Random) -> dict:
    tools = [{"type": "function", "function": {
        "name": name, "description": f"The {name} tool.",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string", "description": "What to look up"},
            "limit": {"type": "integer", "default": 5}}, "required": ["query"]}}}
        for name in ("search", "lookup")]
    messages = [{"role": "system", "content": sentence(rng, 12)}]
    call = 0
    for _turn in range(rng.randint(1, 4)):
        messages.append({"role": "user", "content": sentence(rng, rng.randint(5, 60))})
        if rng.random() < 0.4:
            calls = []
            for _ in range(rng.randint(1, 2)):
                call += 1
                calls.append({"id": f"c{call}", "type": "function", "function": {
                    "name": rng.choice(("search", "lookup")),
                    "arguments": {"query": sentence(rng, 4)}}})
            messages.append({"role": "assistant", "content": None, "tool_calls": calls,
                             "thinking": sentence(rng, 20)})
            for c in calls:
                messages.append({"role": "tool", "tool_call_id": c["id"],
                                 "content": sentence(rng, 30)})
        messages.append({"role": "assistant", "content": sentence(rng, rng.randint(10, 120)),
                         "thinking": sentence(rng, rng.randint(0, 60)) or None})
    return {"messages": messages, "tools": tools}


def build_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    sample = [r for r in read_local(builtin_sample_path()).rows if isinstance(r, dict)]
    rows = []
    while len(rows) < n:
        rows.append(sample[len(rows) % len(sample)] if rng.random() < 0.3 else generated_row(rng))
    return rows


def to_harmony(chat, settings, harmony):
    """Our planned messages as openai-harmony objects (ids are compared before timing)."""
    from openai_harmony import (
        Author,
        Conversation,
        DeveloperContent,
        Message,
        Role,
        SystemContent,
        ToolDescription,
    )

    efforts = {"low": harmony.ReasoningEffort.LOW, "medium": harmony.ReasoningEffort.MEDIUM,
               "high": harmony.ReasoningEffort.HIGH}
    [(_turn, planned)] = plan_examples(chat, settings)
    out = []
    for m in planned:
        if m.role == "system":
            sys_content = SystemContent.new().with_reasoning_effort(
                efforts[chat.reasoning_effort or settings.reasoning_effort])
            out.append(Message.from_role_and_content(Role.SYSTEM, sys_content))
        elif m.role == "developer":
            dev = DeveloperContent.new()
            lead = [x.content for x in chat.messages if x.role in ("system", "developer")]
            if lead and chat.messages[0].role in ("system", "developer"):
                dev = dev.with_instructions("\n\n".join(c for c in lead if c))
            if chat.tools:
                dev = dev.with_function_tools([ToolDescription.new(t.name, t.description,
                                                                   parameters=t.parameters)
                                               for t in chat.tools])
            out.append(Message.from_role_and_content(Role.DEVELOPER, dev))
        else:
            tool = m.role == "tool"
            author = Author.new(Role.TOOL, m.author) if tool else Author(role=Role(m.role))
            msg = Message.from_author_and_content(author, m.text)
            if m.channel:
                msg = msg.with_channel(m.channel)
            if m.recipient:
                msg = msg.with_recipient(m.recipient)
            if m.content_type:
                msg = msg.with_content_type(m.content_type)
            out.append(msg)
    return Conversation.from_messages(out)


def best_of(repeat: int, fn) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    os.environ.setdefault("TIKTOKEN_ENCODINGS_BASE", str(offline_tokenizer_dir()))
    import openai_harmony as harmony

    tokenizer = load_offline_tokenizer()
    settings = RenderSettings()
    opts = FormatOptions()
    rows = build_rows(args.conversations, args.seed)
    encoding = harmony.load_harmony_encoding(harmony.HarmonyEncodingName.HARMONY_GPT_OSS)
    config = harmony.RenderConversationConfig(auto_drop_analysis=False)
    conversations = [to_harmony(row_to_chat(r, "messages", opts), settings, harmony)
                     for r in rows]

    def run_osstune() -> list:
        renderer = HarmonyRenderer(tokenizer, settings)
        out = []
        for start in range(0, len(rows), 256):
            batch = [(i, row_to_chat(r, "messages", opts))
                     for i, r in enumerate(rows[start:start + 256], start)]
            out.extend(renderer.render_batch(batch))
        return out

    def run_harmony() -> list:
        return [encoding.render_conversation_for_training(c, config) for c in conversations]

    ours, theirs = run_osstune(), run_harmony()
    mismatches = sum(o[0].input_ids != t for o, t in zip(ours, theirs, strict=True))
    tokens = sum(len(t) for t in theirs)
    ours_best, ours_median = best_of(args.repeat, run_osstune)
    theirs_best, theirs_median = best_of(args.repeat, run_harmony)
    n = len(rows)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"conversations: {n}, tokens: {tokens:,} ({tokens / n:.0f}/conversation), "
          f"id mismatches: {mismatches}")
    print(f"osstune (rows -> ids + labels + message index): {n / ours_best:,.0f} conv/s best, "
          f"{n / ours_median:,.0f} median")
    print(f"openai-harmony (Conversation -> ids):           {n / theirs_best:,.0f} conv/s best, "
          f"{n / theirs_median:,.0f} median")
    print(f"ratio osstune / openai-harmony (best): {theirs_best / ours_best:.2f}x")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
