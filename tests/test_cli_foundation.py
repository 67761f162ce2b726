"""`osstune --version`, `doctor`, `presets` and the shared console helpers (tui/output.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from osstune.tui import output
from osstune.tui.cli import app, package_version

PROFILES = Path(__file__).parent / "profiles"
ROOT = Path(__file__).parent.parent
runner = CliRunner()

EXPECTED_8XH100_1TB = {
    "gpt-oss-20b-lora-1gpu": "fits",
    "gpt-oss-20b-lora-mxfp4": "fits",
    "gpt-oss-120b-lora-mxfp4": "fits",
    "gpt-oss-20b-fft-fsdp2-offload": "fits",
    "gpt-oss-20b-fft-fsdp2": "fits",
    "gpt-oss-120b-fft-fsdp2-offload": "does-not-fit",
    "tiny-cpu-demo": "fits",
}


def invoke(*args: str, env: dict[str, str] | None = None):  # noqa: ANN201 - click Result
    return runner.invoke(app, list(args), env=env)


def osstune_command() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script = Path(sys.executable).parent / "osstune"
    return [str(script)] if script.exists() else [sys.executable, "-m", "osstune.tui.cli"]


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"osstune {package_version()}\n"
    assert package_version() == "0.1.0"


def test_help_lists_commands_and_completion() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for word in ("doctor", "presets", "--hardware", "--install-completion"):
        assert word in result.stdout


def test_shell_completion_script() -> None:
    # The real command in its own process, through click's completion variable (what the installed
    # script calls): `--show-completion` guesses the shell from the parent process, which under CI's
    # `make` is sh and unsupported.
    env = {**os.environ, "_OSSTUNE_COMPLETE": "source_bash"}
    proc = subprocess.run(osstune_command(), capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "_osstune_completion" in proc.stdout and "complete " in proc.stdout
    env.update(_OSSTUNE_COMPLETE="complete_bash", COMP_WORDS="osstune pre", COMP_CWORD="1")
    proc = subprocess.run(osstune_command(), capture_output=True, text=True, timeout=60, env=env)
    assert proc.stdout.split() == ["presets"], proc.stderr


# --- presets ---------------------------------------------------------------------------------


def test_presets_json_for_a_profile() -> None:
    result = invoke("presets", "--hardware", str(PROFILES / "8xh100-80gb-1tb.json"), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {d["name"]: d["verdict"] for d in data} == EXPECTED_8XH100_1TB
    assert [d["name"] for d in data if d["recommended"]] == ["gpt-oss-20b-fft-fsdp2"]
    for d in data:
        assert set(d) >= {"name", "verdict", "reasons", "recommended", "description",
                          "requirements"}
        assert isinstance(d["reasons"], list) and all(isinstance(r, str) for r in d["reasons"])
        assert isinstance(d["recommended"], bool)
    big = next(d for d in data if d["name"] == "gpt-oss-120b-fft-fsdp2-offload")
    assert big["reasons"][0] == "needs ~2.2 TiB free at ./outputs; 931 GiB free"
    assert round(big["requirements"]["disk_gib"]) == 2237  # estimated, not the preset's block
    assert big["estimate"]["disk_terms"]["checkpoints (3 x weights + AdamW)"] > 1900


def test_global_hardware_option_works_too() -> None:
    profile = str(PROFILES / "8xh100-80gb-1tb.json")
    local = invoke("presets", "--hardware", profile, "--json")
    global_ = invoke("--hardware", profile, "presets", "--json")
    assert global_.exit_code == 0
    assert json.loads(global_.stdout) == json.loads(local.stdout)


def test_presets_table_is_plain_when_piped() -> None:
    result = invoke("presets", "--hardware", str(PROFILES / "4xa100-80gb.json"))
    assert result.exit_code == 0
    out = result.stdout
    assert "\x1b[" not in out and "┃" not in out and "│" not in out
    assert out.startswith("Hardware: 4x NVIDIA A100-SXM4-80GB (80 GiB), 1008 GiB RAM, 64 CPUs")
    lines = out.splitlines()
    row = next(i for i, line in enumerate(lines)
               if line.startswith("gpt-oss-20b-fft-fsdp2 "))
    assert lines[row].split()[1] == "fits" and lines[row + 1].split()[0] == "recommended"
    assert "gpt-oss-20b-fft-fsdp2 is the most capable preset that fits" in out


def test_presets_for_one_preset_and_for_a_config_file(tmp_path: Path) -> None:
    profile = str(PROFILES / "1xrtx-a6000-48gb.json")
    data = json.loads(invoke("presets", "gpt-oss-20b-lora-1gpu", "--hardware", profile,
                             "--json").stdout)
    assert [(d["name"], d["verdict"], d["recommended"]) for d in data] == [
        ("gpt-oss-20b-lora-1gpu", "fits", True)]
    config = tmp_path / "mine.yaml"
    config.write_text("name: mine\nmodel: {id: openai/gpt-oss-20b}\ndistributed: {gpus: 1}\n"
                      "requirements: {gpus: 1, peak_mem_gib_per_gpu: 30, min_gpu_mem_gib: 32, "
                      "host_ram_gib: 16, disk_gib: 40}\n")
    data = json.loads(invoke("presets", str(config), "--hardware", profile, "--json").stdout)
    assert [(d["name"], d["verdict"]) for d in data] == [("mine", "fits")]


def test_presets_on_this_machine(tmp_path: Path) -> None:
    result = invoke("presets", "--json", "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [d["name"] for d in data][-1] == "tiny-cpu-demo"
    assert sum(d["recommended"] for d in data) <= 1


# --- bad input: one line on stderr, non-zero exit, no traceback ------------------------------


def test_unknown_preset_lists_valid_names() -> None:
    result = invoke("presets", "gpt-oss-7b")
    assert result.exit_code == output.EXIT_USAGE
    assert result.stdout == ""
    assert result.stderr == ("osstune: error: unknown preset 'gpt-oss-7b'; valid presets: "
                             "gpt-oss-20b-lora-1gpu, gpt-oss-20b-lora-mxfp4, "
                             "gpt-oss-120b-lora-mxfp4, gpt-oss-20b-fft-fsdp2-offload, "
                             "gpt-oss-20b-fft-fsdp2, gpt-oss-120b-fft-fsdp2-offload, "
                             "tiny-cpu-demo\n")


@pytest.mark.parametrize("command", ["presets", "doctor"])
def test_bad_hardware_file_names_file_and_field(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "rig.json"
    bad.write_text('{"gpus": [{"name": "RTX 4090"}], "ram_gib": 64, "cpu_count": 8, '
                   '"disk_free_gib": 100}')
    result = invoke(command, "--hardware", str(bad))
    assert result.exit_code == output.EXIT_USAGE
    assert result.stderr == (f"osstune: error: {bad}: gpus[0].memory_total_gib: missing "
                             "(a number is required)\n")
    result = invoke("--hardware", str(tmp_path / "none.json"), command)
    assert result.exit_code == output.EXIT_USAGE
    assert "none.json: cannot read: No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_global_bad_hardware_is_refused_for_every_command(tmp_path: Path) -> None:
    """`osstune --hardware BAD.json run ...` refuses the profile that `presets` refuses."""
    bad = tmp_path / "rig.json"
    bad.write_text('{"gpus": [], "ram_gib": NaN, "cpu_count": 8, "disk_free_gib": 100}')
    out = tmp_path / "out"
    for args in (["run", "tiny-cpu-demo", "--output", str(out)], ["inspect", "x.jsonl"],
                 ["presets"], ["doctor"]):
        result = invoke("--hardware", str(bad), *args)
        assert result.exit_code == output.EXIT_USAGE, args
        assert result.stderr == (f"osstune: error: {bad}: ram_gib: must be a finite number, "
                                 "got nan\n")
    assert not out.exists()


def test_unusable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a directory")
    result = invoke("presets", "--output-dir", str(blocker / "run"))
    assert result.exit_code == output.EXIT_USAGE
    assert result.stderr == (f"osstune: error: output directory {blocker / 'run'} cannot be "
                             f"created: {blocker} is not a directory\n")
    # doctor still shows the machine, then reports the problem and exits non-zero.
    result = invoke("doctor", "--output-dir", str(blocker))
    assert result.exit_code == output.EXIT_PROBLEM
    assert "Machine" in result.stdout
    assert result.stderr == (f"osstune: error: output directory {blocker} exists and is not a "
                             "directory\n")


# --- doctor ----------------------------------------------------------------------------------


def test_doctor_json_on_this_machine_loads_back(tmp_path: Path) -> None:
    result = invoke("doctor", "--json", "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == "probe" and data["output_dir"] == str(tmp_path / "out")
    assert data["ram_gib"] > 0 and data["cpu_count"] >= 1 and data["disk_free_gib"] > 0
    assert data["output_dir_problem"] is None
    assert isinstance(data["gpus"], list)
    if not data["gpus"]:
        assert data["gpu_error"]  # no driver here: the reason is given
    saved = tmp_path / "me.json"
    saved.write_text(result.stdout)
    again = invoke("presets", "--hardware", str(saved), "--json")
    assert again.exit_code == 0, again.stderr


def test_doctor_table_for_a_profile_is_plain() -> None:
    result = invoke("doctor", "--hardware", str(PROFILES / "4xa100-80gb.json"))
    assert result.exit_code == 0
    out = result.stdout
    assert "\x1b[" not in out and "┃" not in out
    gpu_rows = [line for line in out.splitlines() if "NVIDIA A100-SXM4-80GB" in line]
    assert len(gpu_rows) == 4
    assert gpu_rows[0].split()[0] == "0" and "80 GiB" in gpu_rows[0] and "yes" in gpu_rows[0]
    assert "RAM               1008 GiB" in out  # one size format everywhere (fmt_gib)
    assert f"Source            {PROFILES / '4xa100-80gb.json'}" in out


def test_doctor_without_gpus_says_why() -> None:
    result = invoke("doctor", "--hardware", str(PROFILES / "cpu-only.json"))
    assert result.exit_code == 0
    assert result.stdout.startswith(
        "GPUs: none (NVIDIA driver not available: NVML Shared Library Not Found)\n")


def test_real_subprocess_presets_json() -> None:
    profile = PROFILES / "8xh100-80gb-1tb.json"
    proc = subprocess.run([*osstune_command(), "presets", "--hardware", str(profile), "--json"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    data = json.loads(proc.stdout)
    assert {d["name"]: d["verdict"] for d in data} == EXPECTED_8XH100_1TB
    bad = subprocess.run([*osstune_command(), "presets", "--hardware", "missing.json"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == output.EXIT_USAGE and bad.stdout == ""
    assert bad.stderr == "osstune: error: missing.json: cannot read: No such file or directory\n"


# --- tui/output.py ---------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_color_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert output.use_color(FakeTerminal()) is True
    assert output.use_color(io.StringIO()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert output.use_color(FakeTerminal()) is False
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert output.use_color(FakeTerminal()) is False


def test_terminal_table_honours_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    for no_color, expect_green in (("", True), ("1", False)):
        monkeypatch.setenv("NO_COLOR", no_color)
        term = FakeTerminal()
        monkeypatch.setattr(sys, "stdout", term)
        output.print_table(["Preset", "Verdict"], [["tiny-cpu-demo", ("fits", "bold green")]])
        text = term.getvalue()
        assert "tiny-cpu-demo" in text and "┃" in text  # a Rich table on a terminal
        # Colour (green: SGR 32) goes; bold may stay, NO_COLOR is about colour.
        assert ("\x1b[1;32m" in text) is expect_green


def test_fail_writes_one_line_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as e:
        output.fail("bad thing")
    assert e.value.exit_code == output.EXIT_USAGE
    assert capsys.readouterr().err == "osstune: error: bad thing\n"
    with pytest.raises(typer.Exit) as e:
        output.fail("found a problem", output.EXIT_PROBLEM)
    assert e.value.exit_code == 1


def test_plain_table_aligns_multiline_cells() -> None:
    text = output.plain_table(["A", "Verdict", "Why"],
                              [["x", ("fits", "green"), "one\ntwo"], ["long-name", "no", ""]])
    assert text.splitlines() == [
        "A          Verdict  Why",
        "x          fits     one",
        "                    two",
        "long-name  no",
    ]


def test_names_from_a_profile_never_drive_the_terminal(tmp_path: Path) -> None:
    rig = tmp_path / "rig.json"
    rig.write_text(json.dumps({"gpus": [{"name": "A100\u001b[2J\u0000", "memory_total_gib": 80}],
                               "ram_gib": 64, "cpu_count": 8, "disk_free_gib": 100,
                               "driver_version": "5\u009b31m"}))
    for command in ("doctor", "presets"):
        result = invoke(command, "--hardware", str(rig))
        assert result.exit_code == 0, result.stderr
        assert "A100\\x1b[2J\\x00" in result.stdout
        assert "\x1b" not in result.stdout and "\x00" not in result.stdout
    assert "5\\x9b31m" in invoke("doctor", "--hardware", str(rig)).stdout


def test_global_hardware_with_run_says_run_uses_this_machine(tmp_path: Path) -> None:
    profile = PROFILES / "1xh100-80gb.json"
    result = invoke("--hardware", str(profile), "run", "tiny-cpu-demo", "--set", "lr=[1",
                    "--output", str(tmp_path / "out"))
    assert result.exit_code == output.EXIT_USAGE
    assert result.stderr.splitlines() == [
        f"osstune: warning: --hardware {profile} is for planning; `run` trains on this machine "
        "(its pre-flight checks this machine)",
        "osstune: error: --set 'lr=[1': the value for lr is not valid YAML: expected ',' or ']', "
        "but got '<stream end>'"]


# --- plan and the effective config ---------------------------------------------------------


def test_presets_judge_the_effective_config() -> None:
    profile = str(PROFILES / "1xrtx-a6000-48gb.json")
    plain = json.loads(invoke("presets", "gpt-oss-20b-lora-1gpu", "--hardware", profile,
                              "--json").stdout)
    assert plain[0]["verdict"] == "fits"
    long = json.loads(invoke("presets", "gpt-oss-20b-lora-1gpu", "--hardware", profile, "--json",
                             "--set", "sequence_len=32768").stdout)
    assert long[0]["verdict"] == "does-not-fit"
    assert long[0]["requirements"]["peak_mem_gib_per_gpu"] > 48.0  # the card


def test_plan_json_has_the_documented_keys() -> None:
    result = invoke("plan", "gpt-oss-20b-lora-1gpu", "--hardware",
                    str(PROFILES / "1xh100-80gb.json"), "--json", "--set", "sequence_len=8192")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= {"verdict", "peak_mem_gib_per_gpu", "min_peak_mem_gib_per_gpu",
                         "host_ram_gib", "disk_gib", "tokens_per_s", "terms", "suggestions"}
    assert data["verdict"] == "fits" and data["suggestions"] == []
    # unchecked_layers: auto fills the card; the floor is every layer checkpointed
    assert data["min_peak_mem_gib_per_gpu"] < data["peak_mem_gib_per_gpu"] <= 79.65
    assert sum(data["terms"].values()) == pytest.approx(data["peak_mem_gib_per_gpu"], abs=0.02)


def test_plan_suggests_the_nearest_changes_that_fit() -> None:
    result = invoke("plan", "gpt-oss-20b-lora-1gpu", "--hardware",
                    str(PROFILES / "1xrtx-a6000-48gb.json"), "--json",
                    "--set", "sequence_len=32768")
    data = json.loads(result.stdout)
    assert data["verdict"] == "does-not-fit"
    first = data["suggestions"][0]
    assert first["changes"] == ["training.sequence_len=16384"] or \
        first["changes"][0].startswith("training.sequence_len=")
    assert first["verdict"] in ("fits", "tight") and first["peak_mem_gib_per_gpu"] < 47.99
    text = invoke("plan", "gpt-oss-20b-fft-fsdp2", "--hardware",
                  str(PROFILES / "2xrtx4090-24gb.json"), "--set", "gpus=2").stdout
    assert "does-not-fit" in text and "GPU memory per GPU" in text and "sharded parameters" in text


def test_plan_says_when_it_cannot_estimate() -> None:
    result = invoke("plan", "gpt-oss-20b-lora-1gpu", "--json",
                    "--set", "model.architecture.moe_things=3")
    assert json.loads(result.stdout)["verdict"].startswith(
        "no estimate: model.architecture.moe_things: unknown GPT-OSS config key")
    result = invoke("plan", "gpt-oss-20b-lora-1gpu", "--set", "model.architecture.moe_things=3")
    assert result.exit_code == output.EXIT_PROBLEM
    assert result.stderr.count("\n") == 1 and "no estimate" in result.stderr


def test_plan_answers_fast_without_torch() -> None:
    code = ("import sys, time; t = time.perf_counter(); from osstune.tui.cli import app\n"
            "from typer.testing import CliRunner\n"
            f"r = CliRunner().invoke(app, ['plan', 'gpt-oss-120b-fft-fsdp2-offload', '--json', "
            f"'--hardware', {str(PROFILES / '8xh100-80gb-4tb.json')!r}])\n"
            "assert r.exit_code == 0, r.output\n"
            "assert 'torch' not in sys.modules\nprint(time.process_time())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # CPU seconds of the whole process (imports included): wall time depends on the machine's load
    assert float(out.stdout) < 1.0
