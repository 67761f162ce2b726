"""The chat process's mechanics with a scripted model (channels on stdout, history, sampling)
and its refusals; the end-to-end run on a trained tiny model is in test_features_run.py."""

from __future__ import annotations

import argparse
import types

import pytest
import torch

from osstune.engine.data.chat import Chat, ChatMessage
from osstune.engine.data.harmony import RenderSettings
from osstune.engine.data.harmony_chat import render_prompt
from osstune.engine.session.chat_target import ChatTargetError, find_chat_target
from osstune.engine.trainer.chat import Session, main, pick_token

REPLY = ("<|channel|>analysis<|message|>User greets.<|end|>"
         "<|start|>assistant<|channel|>final<|message|>Hello there!<|return|>")


class ScriptedModel(torch.nn.Module):
    """Emits a fixed token sequence; records the prompt of every turn."""

    def __init__(self, script: list[int], vocab: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.script, self.vocab, self.prompts, self.at = script, vocab, [], 0

    def forward(self, input_ids, use_cache=False, cache=None):
        if cache is None:
            self.prompts.append(input_ids[0].tolist())
            self.at = 0
        logits = torch.full((1, input_ids.shape[1], self.vocab), -1e9)
        logits[0, -1, self.script[self.at]] = 0.0
        self.at += 1
        return types.SimpleNamespace(logits=logits, cache=object())


def _args(**kw):
    base = dict(temperature=0.0, top_p=1.0, max_new_tokens=64, seed=0)
    return argparse.Namespace(**{**base, **kw})


def test_turns_stream_channels_and_keep_the_final_answer_as_history(tokenizer, capsys):
    script = tokenizer.encode(REPLY, add_special_tokens=False)
    model = ScriptedModel(script, len(tokenizer))
    settings = RenderSettings(reasoning_effort="high")
    session = Session(model, tokenizer, settings, "Be brief.", _args())
    assert session.turn("hi") == "Hello there!"
    assert capsys.readouterr().out == "[analysis] User greets.\n[final] Hello there!\n"
    session.turn("again")
    expected = Chat([ChatMessage("developer", "Be brief.", index=0),
                     ChatMessage("user", "hi", index=1),
                     ChatMessage("assistant", "Hello there!", index=2),
                     ChatMessage("user", "again", index=3)])
    assert model.prompts[1] == render_prompt(tokenizer, expected, settings)


def test_token_limit_closes_the_open_message(tokenizer, capsys):
    script = tokenizer.encode("<|channel|>final<|message|>one two three four five six",
                              add_special_tokens=False)
    session = Session(ScriptedModel(script, len(tokenizer)), tokenizer, RenderSettings(), None,
                      _args(max_new_tokens=5))
    session.turn("x")
    out = capsys.readouterr().out
    assert out.startswith("[final] ") and out.endswith("\n") and "six" not in out


def test_pick_token_greedy_and_sampled():
    logits = torch.tensor([0.0, 5.0, 4.9, -3.0])
    gen = torch.Generator().manual_seed(0)
    assert pick_token(logits, 0.0, 1.0, gen) == 1
    # top_p keeps the smallest set reaching p: only token 1 for a tiny p
    assert {pick_token(logits, 1.0, 0.01, gen) for _ in range(20)} == {1}
    sampled = {pick_token(logits, 1.0, 1.0, gen) for _ in range(200)}
    assert {1, 2} <= sampled and 3 not in sampled


def test_chat_targets(tmp_path):
    with pytest.raises(ChatTargetError, match="no such run folder"):
        find_chat_target(tmp_path / "missing")
    with pytest.raises(ChatTargetError, match=r"not a run folder \(no config.yaml\)"):
        find_chat_target(tmp_path)
    (tmp_path / "config.yaml").write_text("name: x\n")
    with pytest.raises(ChatTargetError, match="nothing to chat with yet"):
        find_chat_target(tmp_path)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert find_chat_target(tmp_path).kind == "adapter"
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "config.json").write_text("{}")
    assert find_chat_target(tmp_path).kind == "export"


def test_chat_process_refuses_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err == f"osstune: error: {tmp_path / 'nope'}: no such run folder\n"


def test_stdin_loop_reset_and_exit(tokenizer, capsys):
    import io

    script = tokenizer.encode(REPLY, add_special_tokens=False)
    model = ScriptedModel(script, len(tokenizer))
    session = Session(model, tokenizer, RenderSettings(), None, _args())
    session.loop(io.StringIO("hi\n/reset\n\nagain\n/exit\nnever read\n"))
    assert len(model.prompts) == 2
    fresh = Chat([ChatMessage("user", "again", index=0)])
    assert model.prompts[1] == render_prompt(tokenizer, fresh, RenderSettings())
    assert capsys.readouterr().out.count("[final] Hello there!\n") == 2
