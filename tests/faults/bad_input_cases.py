"""The bad-input corpus's cases (tests/faults/test_bad_input_corpus.py runs them): bad rows in
each chat format, bad datasets, bad configs and `--set` values, bad hardware profiles; each with
the files it needs, the command line, and the one error line it must give."""

from __future__ import annotations

import json
from dataclasses import dataclass

DEEP = 100_000
GOOD_ROW = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
GOOD_PROFILE = {"gpus": [{"name": "RTX 4090", "memory_total_gib": 24}], "ram_gib": 64,
                "cpu_count": 8, "disk_free_gib": 500}


def U(text="q"):
    return {"role": "user", "content": text}


def A(text="a", **extra):
    return {"role": "assistant", "content": text, **extra}


def call(name="f", arguments="{}", **extra):
    return {"type": "function", "function": {"name": name, "arguments": arguments}, **extra}


# --------------------------------------------------------------------------- the corpus

# One bad row after a good one: the error names the file, row 2 and what is wrong.
BAD_ROWS: dict[str, tuple[object, str]] = {
    "not JSON": ("{oops", "not valid JSON"),
    "JSON array": ("[1, 2]", "a JSON array, not an object"),
    "JSON string": ('"text"', "a JSON string, not an object"),
    "JSON null": ("null", "a JSON null, not an object"),
    "truncated line": (json.dumps(GOOD_ROW)[:-9], "not valid JSON"),
    "nested 100,000 deep": ('{"messages": ' + "[" * DEEP + "]" * DEEP + "}",
                            "not valid JSON: nested too deeply"),
    "unknown role": ({"messages": [{"role": "narrator", "content": "x"}, A()]},
                     "unknown role 'narrator'"),
    "role with escape codes": ({"messages": [{"role": "\x1b[31mred\x00", "content": "x"}, A()]},
                               "unknown role '\\x1b[31mred\\x00'"),
    "missing role": ({"messages": [{"content": "x"}, A()]}, "unknown role None"),
    "role a number": ({"messages": [{"role": 3, "content": "x"}, A()]}, "unknown role 3"),
    "content a number": ({"messages": [U(12), A()]}, "content must be a string, got int"),
    "content an object": ({"messages": [U({"text": "x"}), A()]},
                          "content must be a string, got dict"),
    "content an image part": ({"messages": [U([{"type": "image_url", "image_url": "x"}]), A()]},
                              "content must be a string, got list"),
    "thinking a number": ({"messages": [U(), A("a", thinking=5)]},
                          "thinking must be a string, got int"),
    "tool result without a call": ({"messages": [U(), {"role": "tool", "content": "y"}, A()]},
                                   "tool result without a preceding tool call"),
    "tool_call_id unknown": ({"messages": [U(), A(None, tool_calls=[call(id="a")]),
                                           {"role": "tool", "tool_call_id": "b", "content": "x"},
                                           A()]}, "no earlier call has that id"),
    "no assistant message": ({"messages": [U()]}, "no assistant message"),
    "messages empty": ({"messages": []}, "no messages in 'messages'"),
    "messages an object": ({"messages": {"role": "user"}},
                           "messages must be a list of messages, got dict"),
    "messages a broken JSON string": ({"messages": "[{"}, "messages is a string that is not JSON"),
    "message a string": ({"messages": ["hi", A()]}, "message 0: must be an object, got str"),
    "tool_calls an object": ({"messages": [U(), A(None, tool_calls={"name": "f"})]},
                             "tool_calls must be a list, got dict"),
    "tool call without a name": ({"messages": [U(), A(None, tool_calls=[{"function": {}}])]},
                                 "tool call 0 has no function name"),
    "arguments not JSON": ({"messages": [U(), A(None, tool_calls=[call(arguments="{x")])]},
                           "arguments are not JSON"),
    "arguments a number": ({"messages": [U(), A(None, tool_calls=[call(arguments=7)])]},
                           "arguments must be an object or a JSON string, got int"),
    "tools not JSON": ({**GOOD_ROW, "tools": "[{"}, "tools are not valid JSON"),
    "tools an object": ({**GOOD_ROW, "tools": {"name": "f"}}, "tools must be a list, got dict"),
    "tool without a name": ({**GOOD_ROW, "tools": [{"description": "x"}]}, "tool 0 has no name"),
    "reasoning effort unknown": ({**GOOD_ROW, "reasoning_effort": "extreme"},
                                 "reasoning_effort 'extreme' is not low, medium or high"),
    "train flag a string": ({"messages": [U(), A("a", train="yes")]},
                            "train must be true or false, got str"),
    "weight 2": ({"messages": [U(), A("a", weight=2)]}, "weight must be 0 or 1, got 2"),
    "longer than sequence_len": ({"messages": [U("word " * 3000), A()]},
                                 "tokens, longer than sequence_len"),
}
# ShareGPT rows need a ShareGPT first row, Alpaca rows an Alpaca one (the layout is detected
# from the columns).
GOOD_SHAREGPT = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
BAD_SHAREGPT_ROWS: dict[str, tuple[object, str]] = {
    "function_call not JSON": ({"conversations": [{"from": "human", "value": "q"},
                                                  {"from": "function_call", "value": "{x"}]},
                               "message 1 (function_call): not JSON"),
    "sharegpt system a list": ({**GOOD_SHAREGPT, "system": ["x"]},
                               "system must be a string, got list"),
    "sharegpt role unknown": ({"conversations": [{"from": "alien", "value": "q"}]},
                              "unknown role 'alien'"),
}
BAD_ALPACA_ROWS: dict[str, tuple[object, str]] = {
    "alpaca instruction a number": ({"instruction": 3, "output": "a"},
                                    "instruction must be a string, got int"),
    "alpaca without output": ({"instruction": "q", "output": None}, "no output"),
    "alpaca history malformed": ({"instruction": "q", "output": "a", "history": [["x"]]},
                                 "history must be a list of [instruction, response] pairs"),
}


@dataclass
class Case:
    """Files to create (name -> text or bytes), CLI arguments with {name} placeholders, and
    the text the one stderr line must contain ({name} placeholders too)."""

    files: dict[str, str | bytes]
    args: list[str]
    expect: str
    out_run: bool = False  # an output folder `out` that already holds a run (must stay as is)
    where: str = ""  # the line must also start (after "osstune: error: ") with this


def _jsonl(*rows: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _inspect_fail(name: str) -> list[str]:
    return ["inspect", "{" + name + "}", "--set", "dataset.invalid_rows=fail"]


def _row_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for kind, (row, expect) in BAD_ROWS.items():
        cases[f"row: {kind}"] = Case({"d.jsonl": _jsonl(GOOD_ROW, row)}, _inspect_fail("d.jsonl"),
                                     expect, where="{d.jsonl}: row 2: ")
    for kind, (row, expect) in BAD_SHAREGPT_ROWS.items():
        cases[f"row: {kind}"] = Case({"d.jsonl": _jsonl(GOOD_SHAREGPT, row)},
                                     _inspect_fail("d.jsonl"), expect, where="{d.jsonl}: row 2: ")
    for kind, (row, expect) in BAD_ALPACA_ROWS.items():
        good = {"instruction": "q", "input": "", "output": "a"}
        cases[f"row: {kind}"] = Case({"d.jsonl": _jsonl(good, row)}, _inspect_fail("d.jsonl"),
                                     expect, where="{d.jsonl}: row 2: ")
    return cases


def _dataset_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    parquet_dir = {"mix/a.jsonl": _jsonl(GOOD_ROW), "mix/b.parquet": b"PAR1"}
    datasets: dict[str, tuple[dict[str, str | bytes], str, str]] = {
        "missing file": ({}, "{dir}/none.jsonl", "{dir}/none.jsonl: no such file or folder"),
        "empty file": ({"e.jsonl": ""}, "{e.jsonl}", "{e.jsonl}: no rows (the dataset is empty)"),
        "only blank lines": ({"e.jsonl": "\n \n\r\n"}, "{e.jsonl}", "{e.jsonl}: no rows"),
        "every line invalid": ({"e.jsonl": "{x\n{y\n"}, "{e.jsonl}",
                               "{e.jsonl}: no row is a JSON object; row 1: not valid JSON"),
        "every row skipped": ({"e.jsonl": _jsonl({"messages": [U()]})}, "{e.jsonl}",
                              "{e.jsonl}: no usable examples (1 row read; skipped by reason: "
                              "no assistant message: 1)"),
        "folder without data": ({"empty/notes.txt": "x"}, "{dir}/empty",
                                "{dir}/empty: folder has no .jsonl, .json or .parquet files"),
        "folder mixing kinds": (parquet_dir, "{dir}/mix", "{dir}/mix: folder mixes Parquet"),
        ".json a number": ({"d.json": "42"}, "{d.json}",
                           "{d.json}: expected a list of rows, got a JSON number"),
        ".json broken": ({"d.json": "[{"}, "{d.json}", "{d.json}: not valid JSON"),
        ".json not UTF-8": ({"d.json": b"\xff\xfe[]"}, "{d.json}", "{d.json}: not UTF-8 text"),
        ".json nested deep": ({"d.json": "[" * DEEP}, "{d.json}", "{d.json}: not valid JSON"),
        "corrupt parquet": ({"d.parquet": b"PAR1 not really"}, "{d.parquet}",
                            "{d.parquet}: unreadable Parquet file"),
        "no messages column": ({"d.jsonl": _jsonl({"text": "x"})}, "{d.jsonl}",
                               "{d.jsonl}: no 'messages' or 'conversations' column"),
        "unknown builtin": ({}, "builtin:nothing", "builtin:nothing: unknown builtin dataset"),
        "a device that never ends": ({}, "/dev/zero", "/dev/zero: not a regular file"),
        "column names with control characters": (
            {"d.jsonl": _jsonl({"a\nb": 1, "\x1bc": 2})}, "{d.jsonl}",
            "(columns: 'a\\nb', '\\x1bc')"),
        "thousands of columns": ({"d.jsonl": _jsonl({f"c{i}": i for i in range(5000)})},
                                 "{d.jsonl}", "c19 and 4980 more)"),
    }
    for kind, (files, target, expect) in datasets.items():
        cases[f"dataset: {kind}"] = Case(files, ["inspect", target], expect)
    for kind in ("missing file", "empty file", "folder without data", "unknown builtin",
                 "a device that never ends"):
        files, target, expect = datasets[kind]
        cases[f"run dataset: {kind}"] = Case(
            files, ["run", "tiny-cpu-demo", "--dataset", target, "--output", "{dir}/out"], expect,
            out_run=True)
    return cases


def _config_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    configs: dict[str, tuple[dict[str, str | bytes], list[str], str]] = {
        "--set unclosed list": ({}, ["--set", "max_steps=[1"],
                                "--set 'max_steps=[1': the value for max_steps is not valid YAML"),
        "--set without =": ({}, ["--set", "max_steps"], "--set 'max_steps': expected KEY=VALUE"),
        "--set nested deep": ({}, ["--set", "lr=" + "[" * DEEP],
                              "the value for lr is nested too deeply"),
        "--set unknown key": ({}, ["--set", "training.nope=1"], "training.nope: unknown key"),
        "--set not a number": ({}, ["--set", "lr=abc"], "training.learning_rate: Input should be"),
        "--set unknown format": ({}, ["--set", "dataset.format=xml"], "dataset.format: Input"),
        "--set below a value": ({}, ["--set", "training.seed.x=1"], "training.seed"),
        "--set negative steps": ({}, ["--set", "max_steps=-3"], "training.max_steps: Input"),
        "--set packed experts with full fine-tuning": (
            {}, ["--set", "method=full", "--set", "model.experts=mxfp4"],
            "model.experts: mxfp4 keeps the experts packed and frozen, full fine-tuning"),
        "--set unknown experts format": ({}, ["--set", "model.experts=nf4"], "model.experts"),
        "--set a 400-digit number": ({}, ["--set", "max_steps=" + "9" * 400],
                                     "training.max_steps: a whole number too large"),
        "--set a 5000-digit number": ({}, ["--set", "max_steps=" + "9" * 5000],
                                      "the value for max_steps is not a usable number"),
        "--set infinity": ({}, ["--set", "training.weight_decay=.inf"],
                           "training.weight_decay: must be a finite number, got inf"),
        "--set a huge wrong value": ({}, ["--set", "training.optimizer=" + "x" * 100_000],
                                     "training.optimizer: Input should be"),
    }
    for kind, (files, extra, expect) in configs.items():
        cases[f"config: {kind} (inspect)"] = Case(
            files, ["inspect", "builtin:osstune-sample", *extra], expect)
        cases[f"config: {kind} (run)"] = Case(
            files, ["run", "tiny-cpu-demo", *extra, "--output", "{dir}/out"], expect, out_run=True)
    yaml_files = {
        "YAML broken": ("model: {id: [x\n", "{c.yaml}: not valid YAML at line"),
        "YAML a list": ("- 1\n- 2\n", "{c.yaml}: expected a mapping at the top level, got list"),
        "YAML nested deep": ("a: " + "[" * DEEP + "\n", "{c.yaml}: not a run config"),
        "YAML unknown key": ("model: {id: x}\nbogus: 1\n", "{c.yaml}: bogus: unknown key"),
        "YAML not UTF-8": (b"model: \xff\n", "{c.yaml}: not UTF-8 text (byte 7)"),
        "YAML a 5000-digit number": ("training: {max_steps: " + "9" * 5000 + "}\n",
                                     "{c.yaml}: not a run config: not a usable number"),
    }
    for kind, (text, expect) in yaml_files.items():
        cases[f"config: {kind} (run)"] = Case({"c.yaml": text}, ["run", "{c.yaml}", "--output",
                                                                 "{dir}/out"], expect, out_run=True)
        cases[f"config: {kind} (inspect)"] = Case({"c.yaml": text}, ["inspect", "--config",
                                                                     "{c.yaml}"], expect)
        cases[f"config: {kind} (presets)"] = Case({"c.yaml": text}, ["presets", "{c.yaml}"],
                                                  expect)
    cases["config: missing file (run)"] = Case({}, ["run", "{dir}/none.yaml"],
                                               "{dir}/none.yaml: no such config file")
    cases["config: unknown preset (run)"] = Case({}, ["run", "gpt-oss-7b"],
                                                 "unknown preset 'gpt-oss-7b'")
    return cases


def _profile(**change: object) -> str:
    data = {**GOOD_PROFILE, **change}
    return json.dumps({k: v for k, v in data.items() if v is not None})


def _profile_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    profile = _profile
    profiles: dict[str, tuple[str | bytes, str]] = {
        "NaN RAM": (profile(ram_gib=float("nan")), "ram_gib: must be a finite number, got nan"),
        "infinite disk": (profile(disk_free_gib=float("inf")), "disk_free_gib: must be a finite"),
        "NaN GPU memory": (profile(gpus=[{"memory_total_gib": float("nan")}]),
                           "gpus[0].memory_total_gib: must be a finite number"),
        "negative RAM": (profile(ram_gib=-1), "ram_gib: must be greater than 0, got -1"),
        "zero CPUs": (profile(cpu_count=0), "cpu_count: expected a whole number >= 1, got 0"),
        "no gpus key": (profile(gpus=None), "gpus: missing"),
        "GPU memory a string": (profile(gpus=[{"memory_total_gib": "80GB"}]),
                                "gpus[0].memory_total_gib: expected a number, got '80GB'"),
        "not JSON": ("{gpus: []}", "not valid JSON (line 1, column 2"),
        "a list": ("[]", "expected a JSON object at the top level"),
        "nested deep": ("[" * DEEP, "not a hardware profile (nested too deeply)"),
        "binary": (b"\xff\xfe\x00\x01", "not a text file"),
        "RAM beyond any machine": (profile(ram_gib=1e308),
                                   "ram_gib: must be at most 1073741824, got 1e+308"),
        "a 400-digit CPU count": (profile(cpu_count=10 ** 400),
                                  "cpu_count: must be at most 1048576, got 1000"),
        "a huge negative CPU count": (profile(cpu_count=-10 ** 400),
                                      "cpu_count: expected a whole number >= 1, got -1000"),
        "a 5000-digit number": (profile(cpu_count="N").replace('"N"', "9" * 5000),
                                "not a hardware profile (Exceeds the limit (4300 digits)"),
        "gpus a huge object": (profile(gpus={"x" * 5000: 1}), "gpus: expected a list, got {'xx"),
    }
    for kind, (text, expect) in profiles.items():
        for command in (["presets", "--hardware", "{hw.json}"], ["doctor", "--hardware",
                                                                 "{hw.json}"],
                        ["--hardware", "{hw.json}", "run", "tiny-cpu-demo", "--output",
                         "{dir}/out"]):
            cases[f"profile: {kind} ({command[0] if command[0] != '--hardware' else 'run'})"] = \
                Case({"hw.json": text}, command, "{hw.json}: " + expect, out_run=True)
    for command in (["presets", "--hardware", "/dev/zero"],
                    ["--hardware", "/dev/zero", "run", "tiny-cpu-demo", "--output", "{dir}/out"]):
        cases[f"profile: a device ({command[0].strip('-')})"] = Case(
            {}, command, "/dev/zero: cannot read: not a regular file", out_run=True)
    cases["config: a folder named .yaml (run)"] = Case(
        {"c.yaml/x": "x"}, ["run", "{dir}/c.yaml", "--output", "{dir}/out"],
        "{dir}/c.yaml: not a regular file", out_run=True)
    cases["profile: missing file (presets)"] = Case(
        {}, ["presets", "--hardware", "{dir}/none.json"], "{dir}/none.json: cannot read")
    return cases


def _cases() -> dict[str, Case]:
    return {**_row_cases(), **_dataset_cases(), **_config_cases(), **_profile_cases()}


CASES = _cases()
