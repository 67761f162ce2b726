"""Random rows in every layout: each is either an example or a counted skip, never a crash."""

from __future__ import annotations

import random

import pytest

from osstune.engine.data.dataset import PipelineSettings, prepare_rows
from osstune.engine.data.dataset_formats import REASONS
from osstune.engine.plan.config import load_config

KEYS = ["role", "content", "thinking", "tool_calls", "tool_call_id", "name", "train", "weight",
        "function", "arguments", "id", "type", "from", "value", "reasoning_content", "text",
        "messages", "conversations", "tools", "system", "instruction", "input", "output",
        "history", "reasoning_effort", "parameters", "description"]
ROLES = ["user", "assistant", "tool", "system", "developer", "human", "gpt", "function_call",
         "observation", "narrator"]
LEAVES = [None, True, 0, 1, 2, -1, 1.5, float("nan"), "", "x", "{}", "[]", '{"name": "f"}',
          "\x00\x1b", "low", "<|end|>", *ROLES]


def _value(rnd: random.Random, depth: int = 0) -> object:
    r = rnd.random()
    if depth > 4 or r < 0.3:
        return rnd.choice(LEAVES)
    if r < 0.6:
        return [_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    return {rnd.choice(KEYS): _value(rnd, depth + 1) for _ in range(rnd.randint(0, 5))}


def _message(rnd: random.Random) -> dict:
    m = {"role": rnd.choice(ROLES), "content": rnd.choice(["hi", None, "", _value(rnd)])}
    for key in rnd.sample(KEYS, 2):
        m[key] = _value(rnd)
    return m


def random_rows(seed: int, n: int) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        kind = rnd.random()
        if kind < 0.4:
            row = {"messages": [_message(rnd) for _ in range(rnd.randint(0, 5))]}
        elif kind < 0.7:
            row = {"conversations": [{"from": rnd.choice(ROLES), "value": rnd.choice(
                ["q", _value(rnd)])} for _ in range(rnd.randint(0, 4))],
                "system": rnd.choice([None, "s", _value(rnd)])}
        else:
            row = {key: _value(rnd) for key in rnd.sample(KEYS, 4)}
        if rnd.random() < 0.3:
            row["tools"] = _value(rnd)
        rows.append(row)
    return rows


@pytest.mark.parametrize("fmt", ["messages", "sharegpt", "alpaca"])
def test_random_rows_are_examples_or_counted_skips(tokenizer, fmt):
    rows = random_rows(seed=7, n=600)
    settings = PipelineSettings.from_config(load_config("tiny-cpu-demo"))
    examples, stats = prepare_rows(rows, fmt, settings, tokenizer)
    assert set(stats.rows_skipped) <= set(REASONS)
    assert len({e.row for e in examples}) + sum(stats.rows_skipped.values()) == len(rows)
    assert all(1 <= e.row <= len(rows) for e in examples)
