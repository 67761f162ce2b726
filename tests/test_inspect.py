"""`osstune inspect`: per-token mask view, --json, options, summary and one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import osstune.engine.data.dataset_cache as cache_mod
from osstune.tui.cli import app
from osstune.tui.render import tokens as token_render

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch, tokenizer):
    monkeypatch.setattr(cache_mod, "cache_dir", lambda: tmp_path / "dataset-cache")


def invoke(*args):
    return runner.invoke(app, ["inspect", *args])


def test_default_view_and_summary():
    result = invoke("builtin:osstune-sample")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith("── example 0 · row 1 · ")
    assert out.count("── example ") == 3
    # prompt plain, trained run bracketed: from the channel header to <|return|>
    assert ("<|start|>user<|message|>What is the boiling point of water at sea level?<|end|>"
            "<|start|>assistant⟦<|channel|>final<|message|>100 °C (212 °F) at standard "
            "atmospheric pressure.<|return|>⟧") in out
    for line in ("rows read: 36", "rows skipped: 0", "examples: 36", "length buckets: <=128: ",
                 "packing: "):
        assert line in out
    assert "trained (" in out and "% filled" in out


def test_index_count_show_ids():
    result = invoke("builtin:osstune-sample", "--index", "5", "--count", "2", "--show-ids")
    assert result.exit_code == 0, result.stderr
    assert "── example 5 · row 6" in result.stdout and "── example 6 · row 7" in result.stdout
    assert "── example 7" not in result.stdout
    assert "<|start|>⟨200006⟩" in result.stdout and "<|return|>⟨200002⟩" in result.stdout


def test_json_lines():
    result = invoke("builtin:osstune-sample", "--json")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 36
    first = lines[0]
    assert set(first) == {"row", "input_ids", "labels", "text"}
    assert first["row"] == 1 and len(first["input_ids"]) == len(first["labels"])
    assert first["text"].startswith("<|start|>system<|message|>You are ChatGPT")
    assert all(lbl in (-100, tid) for lbl, tid in zip(first["labels"], first["input_ids"],
                                                      strict=True))
    some = invoke("builtin:osstune-sample", "--json", "--index", "3", "--count", "2")
    assert [json.loads(line)["row"] for line in some.stdout.splitlines()] == [4, 5]


def test_settings_from_set_preset_and_config(tmp_path):
    expand = invoke("builtin:osstune-sample", "--json", "--set", "dataset.train_turns=expand")
    assert expand.exit_code == 0, expand.stderr
    assert len(expand.stdout.splitlines()) > 36
    preset = invoke("--preset", "tiny-cpu-demo", "--count", "1")
    assert preset.exit_code == 0, preset.stderr
    assert "packing: " in preset.stdout and "rows of 512 tokens" in preset.stdout
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n"
                    + json.dumps({"messages": [{"role": "narrator", "content": "q"}]}) + "\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model:\n  id: openai/gpt-oss-20b\ndataset:\n  path: {data}\n"
                   "  packing: false\n  roles_to_train: [user, assistant]\n")
    result = invoke("--config", str(cfg))
    assert result.exit_code == 0, result.stderr
    assert "⟦user<|message|>q<|end|>⟧" in result.stdout
    assert "rows skipped: 1 (unknown role: 1)" in result.stdout
    assert "packing: off" in result.stdout
    assert "skipped row 2: message 0: unknown role 'narrator'" in result.stdout


@pytest.mark.parametrize("args, message, code", [
    (["nope.jsonl"], "osstune: error: nope.jsonl: no such file or folder\n", 2),
    ([], "osstune: error: give a DATASET (file, folder, hub id or builtin:osstune-sample) or "
         "--config/--preset\n", 2),
    (["builtin:osstune-sample", "--index", "99"],
     "osstune: error: --index 99: the dataset has 36 examples (0-35)\n", 2),
    (["builtin:osstune-sample", "--tokenizer", "someone/other-model"],
     "osstune: error: tokenizer someone/other-model: not in the local cache and the hub is "
     "unreachable (offline); give a local folder\n", 2),
    (["builtin:nothing"], "osstune: error: builtin:nothing: unknown builtin dataset (available: "
                          "builtin:osstune-sample)\n", 2),
    (["--preset", "nope"], None, 2),
])
def test_bad_input_one_line(args, message, code):
    result = invoke(*args)
    assert result.exit_code == code
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.splitlines()) == 1
    if message is not None:
        assert result.stderr == message


def test_colour_styles(tokenizer):
    from osstune.engine.data.dataset_formats import FormatOptions, row_to_chat
    from osstune.engine.data.harmony import HarmonyRenderer
    from osstune.engine.data.token_view import token_view

    chat = row_to_chat({"messages": [{"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "yo"}]},
                       "messages", FormatOptions())
    [ex] = HarmonyRenderer(tokenizer).render(chat)
    views = token_view(tokenizer, ex)
    text = token_render.render_colour(views, show_ids=False)
    styles = {str(span.style) for span in text.spans}
    assert styles == {token_render.STYLE_TRAINED, token_render.STYLE_MASKED,
                      token_render.STYLE_SPECIAL_TRAINED, token_render.STYLE_SPECIAL_MASKED}
    trained = "".join(text.plain[s.start:s.end] for s in text.spans
                      if str(s.style) in (token_render.STYLE_TRAINED,
                                          token_render.STYLE_SPECIAL_TRAINED))
    assert trained == "<|channel|>final<|message|>yo<|return|>"


def _rows(path, *rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _chat(user, answer, **assistant):
    return {"messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": answer, **assistant}]}


def test_control_characters_from_data_are_escaped(tmp_path):
    data = _rows(tmp_path / "d.jsonl", _chat("bell\x07 nul\x00 esc\x1b[2J", "csi\x9b1m rlo\u202e"))
    result = invoke(data, "--count", "1")
    assert result.exit_code == 0, result.stderr
    assert "esc\\x1b[2J" in result.stdout and "nul\\x00" in result.stdout
    assert "csi\\x9b1m rlo\\u202e" in result.stdout
    for raw in ("\x1b", "\x00", "\x07", "\x9b", "\u202e"):
        assert raw not in result.stdout + result.stderr
    as_json = invoke(data, "--json")
    assert "\x9b" not in as_json.stdout and "\\u009b" in as_json.stdout
    assert json.loads(as_json.stdout)["text"].count("\x1b") == 1  # the data survives in JSON


def test_skipped_rows_are_reported_on_stderr_also_with_json(tmp_path):
    data = _rows(tmp_path / "d.jsonl", _chat("q", "a"), "{bad", _chat("q", "a"),
                 {"messages": [{"role": "narrator", "content": "x"}]})
    expected = (f"osstune: warning: {data}: 2 of 4 rows skipped (row not valid JSON: 1, unknown "
                "role: 1); first (rows count from 1): row 2: not valid JSON: Expecting property "
                "name enclosed in double quotes: line 1 column 2 (char 1)\n")
    for args in ([], ["--json"]):
        result = invoke(data, *args)
        assert result.exit_code == 0, result.stderr
        assert result.stderr == expected
    rows = [json.loads(line)["row"] for line in invoke(data, "--json").stdout.splitlines()]
    assert rows == [1, 3]
    clean = invoke(_rows(tmp_path / "ok.jsonl", _chat("q", "a")))
    assert clean.stderr == "" and "packing: 1 row of " in clean.stdout


def test_empty_answers_counted_in_the_summary(tmp_path):
    data = _rows(tmp_path / "d.jsonl", _chat("q", "", thinking="t"), _chat("q", "a"))
    result = invoke(data)
    assert result.exit_code == 0, result.stderr
    assert ("reasoning with an empty answer: 1 row (trained as analysis + an empty final answer"
            in result.stdout)


@pytest.mark.parametrize("make, message", [
    (lambda p: _rows(p, ""), "no rows (the dataset is empty)"),
    (lambda p: _rows(p, "{x", "[1]"), "no row is a JSON object; row 1: not valid JSON: "),
    (lambda p: _rows(p, _chat("q", "a"), {"messages": [{"role": "user", "content": "q"}]}),
     "row 2: no assistant message"),
])
def test_bad_datasets_exit_2(tmp_path, make, message):
    data = make(tmp_path / "d.jsonl")
    result = invoke(data, "--set", "dataset.invalid_rows=fail")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"osstune: error: {data}: {message}")
    assert len(result.stderr.splitlines()) == 1


def test_skipped_rows_of_a_folder_name_the_file(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    _rows(folder / "a.jsonl", _chat("q", "a"))
    _rows(folder / "b.jsonl", _chat("q", "a"), {"messages": [{"role": "robot", "content": "x"}]})
    result = invoke(str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(f"osstune: warning: {folder}: 1 of 3 rows skipped (unknown "
                                    "role: 1); first (rows count from 1): row 3 (b.jsonl line 2):")
    assert [json.loads(line)["row"] for line in result.stdout.splitlines()] == [1, 2]
