"""`osstune` command line (Typer).

Commands live in tui/commands/; heavy imports (torch, textual, the engine) stay inside them.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from osstune.tui.commands import chat, doctor, inspect, merge, plan, presets, run

app = typer.Typer(
    name="osstune",
    help="Fine-tune GPT-OSS (20b, 120b): pick a recipe that fits, see what is trained, "
    "watch it run.",
    no_args_is_help=False,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None if os.environ.get("NO_COLOR") else "rich",
)


def package_version() -> str:
    try:
        return version("osstune")
    except PackageNotFoundError:
        return "0+unknown"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"osstune {package_version()}")
        raise typer.Exit()


def _check_hardware(path: str, command: str | None) -> None:
    """A bad profile is refused before any command runs, whichever command it is given to."""
    from osstune.engine.plan.hardware import HardwareProfileError, load_profile
    from osstune.tui import output

    try:
        load_profile(path)
    except HardwareProfileError as e:
        output.fail(str(e))
    if command == "run":
        output.warn(f"--hardware {path} is for planning; `run` trains on this machine "
                    "(its pre-flight checks this machine)")


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    hardware: Annotated[
        str | None,
        typer.Option("--hardware", help="Plan for a hardware profile (JSON), not this machine"),
    ] = None,
    version_: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True,
                     help="Show the version"),
    ] = False,
) -> None:
    """With no command, open the wizard. --hardware here applies to every command."""
    if hardware is not None:
        _check_hardware(hardware, ctx.invoked_subcommand)
    ctx.obj = {"hardware": hardware}
    if ctx.invoked_subcommand is None:
        from osstune.tui.commands.wizard import open_wizard

        open_wizard(hardware)


app.command("doctor")(doctor.doctor)
app.command("presets")(presets.presets)
app.command("plan")(plan.plan)
app.command("config")(presets.config)
app.command("run")(run.run)
app.command("attach")(run.attach)
app.command("merge-lora")(merge.merge_lora)
app.command("merge-sharded-fsdp-weights")(merge.merge_sharded_fsdp_weights)
app.command("inspect")(inspect.inspect)
app.command("chat")(chat.chat)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # `osstune presets | head`: the reader left; exit quietly instead of a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
