"""`datasets:` lists (per-source format, mapping, weight) and the validation split."""

from __future__ import annotations

import pytest
import yaml
from mix_fixtures import mixed_datasets, three_layouts

from osstune.engine.data.dataset import DatasetError, Example
from osstune.engine.data.dataset_mix import (
    prepare_training_data,
    split_validation,
    to_rows,
    weighted,
)
from osstune.engine.plan.config import ConfigError, preset_text, validate


def _cfg(**changes):
    data = yaml.safe_load(preset_text("tiny-cpu-demo"))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return validate(data, "test")


def _ex(row: int, n: int = 4) -> Example:
    return Example(row, [1] * n, [1] * n, [0] * n, ["assistant"] * n)


def test_dataset_as_a_list_is_datasets_and_entries_inherit_the_dataset_section():
    cfg = _cfg(dataset=[{"path": "a.jsonl", "format": "sharegpt", "weight": 2},
                        {"path": "b.jsonl"}])
    (a, wa), (b, wb) = cfg.dataset_sources()
    assert (a.path, a.format, wa) == ("a.jsonl", "sharegpt", 2.0)
    assert (b.path, b.format, wb) == ("b.jsonl", "auto", 1.0)
    assert a.reasoning_effort == cfg.dataset.reasoning_effort
    assert _cfg().dataset_sources() == [(_cfg().dataset, 1.0)]


@pytest.mark.parametrize("entry, message", [
    ({"path": "a", "bogus": 1}, "datasets[0].bogus: unknown key"),
    ({"path": "a", "format": "csv"}, "datasets[0].format: Input should be"),
    ({"path": "a", "val_size": 0.1}, "datasets[0]: val_size hold for the whole run"),
    ({"path": "a", "weight": 0}, "datasets.0.weight: Input should be greater than 0"),
])
def test_bad_dataset_entries_are_one_line_naming_the_entry(entry, message):
    with pytest.raises(ConfigError) as info:
        _cfg(datasets=[entry])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("section, message", [
    ({"val_size": 1.5}, "dataset.val_size: must be a fraction below 1"),
    ({"val_size": 0.1, "val_path": "v.jsonl"}, "give one of them"),
    ({"val_size": 0}, "dataset.val_size: Input should be greater than 0"),
])
def test_bad_validation_settings(section, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(dataset=section)


def test_validation_split_keeps_conversations_whole_and_is_seeded():
    parts = [[_ex(0), _ex(0), _ex(1), _ex(2)], [_ex(0), _ex(1), _ex(2), _ex(3)]]
    train, val = split_validation(parts, 0.25, seed=1, source="s")
    assert len(val) + sum(map(len, train)) == 8
    held = {(i, e.row) for i, part in enumerate(parts) for e in part if any(e is v for v in val)}
    assert len(held) == 2  # 25% of 7 conversations
    for i, part in enumerate(train):
        assert not {(i, e.row) for e in part} & held
    again = split_validation(parts, 0.25, seed=1, source="s")[1]
    assert [id(e) for e in again] == [id(e) for e in val]
    assert len(split_validation(parts, 3, seed=1, source="s")[1]) >= 3  # a count


def test_validation_must_leave_training_data():
    with pytest.raises(DatasetError, match="val_size 7 asks for 7 of its 7 usable conversations"):
        split_validation([[_ex(r) for r in range(7)]], 7, seed=0, source="data.jsonl")


def test_weights_repeat_or_subsample():
    import random

    exs = [_ex(r) for r in range(10)]
    assert len(weighted(exs, 2.0, random.Random(0))) == 20
    half = weighted(exs, 0.5, random.Random(0))
    assert len(half) == 5 and len({e.row for e in half}) == 5
    assert len(weighted(exs, 1.5, random.Random(0))) == 15


def test_three_layouts_mix_with_weights_and_per_source_stats(tmp_path, tokenizer):
    files = three_layouts(tmp_path)
    cfg = _cfg(datasets=mixed_datasets(files), dataset={"val_size": 3})
    data = prepare_training_data(cfg, tokenizer, use_cache=False)
    sources = data.stats.sources
    assert [s["format"] for s in sources] == ["messages", "sharegpt", "messages"]
    assert [s["weight"] for s in sources] == [1.0, 0.5, 2.0]
    assert [s["rows_read"] for s in sources] == [12, 12, 12]
    # 3 conversations held out over the three sources, then the weights apply
    assert sum(s["examples"] for s in sources) == 36 - 3
    for s in sources:
        assert s["examples_used"] == round(s["examples"] * s["weight"])
    assert len(data.train) == sum(s["examples_used"] for s in sources)
    assert data.stats.rows_read == 36 and data.stats.format == "mixed"
    assert data.stats.validation == {"source": "val_size 3", "examples": 3,
                                     "tokens_trained": sum(e.trained_tokens
                                                           for e in data.validation)}
    texts = {tokenizer.decode(e.input_ids) for e in data.train}
    assert any("The sum is" in t for t in texts) and any("Answer:" in t for t in texts)
    rows = to_rows(data.train, cfg.training.sequence_len, 0, packing=True)
    assert sum(len(r.example_lengths) for r in rows) >= len(data.train)


def test_val_path_is_prepared_with_the_dataset_settings(tmp_path, tokenizer):
    files = three_layouts(tmp_path)
    cfg = _cfg(dataset={"path": str(files["messages"]), "val_path": str(files["sharegpt"])})
    data = prepare_training_data(cfg, tokenizer, use_cache=False)
    assert len(data.train) == 12 and len(data.validation) == 12
    assert data.stats.validation["source"] == str(files["sharegpt"])
    assert data.stats.sources == []  # one source: the summary is the dataset's own


def test_missing_source_names_its_path(tmp_path, tokenizer):
    files = three_layouts(tmp_path)
    cfg = _cfg(datasets=[{"path": str(files["messages"])}, {"path": str(tmp_path / "no.jsonl")}])
    with pytest.raises(DatasetError, match="no.jsonl: no such file"):
        prepare_training_data(cfg, tokenizer, use_cache=False)


def test_run_refuses_dataset_flag_for_a_mixed_config(tmp_path):
    from typer.testing import CliRunner

    from osstune.tui.cli import app

    data = yaml.safe_load(preset_text("tiny-cpu-demo"))
    data["datasets"] = [{"path": "a.jsonl"}, {"path": "b.jsonl"}]
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(path), "--dataset", "c.jsonl"])
    assert result.exit_code == 2
    assert result.stderr == (f"osstune: error: --dataset: {path} mixes 2 datasets (datasets:); "
                             "edit that list instead\n")


def test_inspect_reports_each_source_and_the_validation_split(tmp_path):
    from typer.testing import CliRunner

    from osstune.tui.cli import app

    data = yaml.safe_load(preset_text("tiny-cpu-demo"))
    data["datasets"] = mixed_datasets(three_layouts(tmp_path))
    data["dataset"] = {"val_size": 0.25}
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["inspect", "--config", str(path), "--count", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "rows read: 36" in lines
    sources = [line for line in lines if line.startswith("  dataset ")]
    assert [line.split(" (")[1].split(",")[0] for line in sources] == [
        "messages", "sharegpt", "messages"]
    assert any(line.startswith("  validation (val_size 0.25): 9 examples") for line in lines)
