"""`osstune` with no command: the Textual wizard. Textual and the engine helpers load lazily."""

from __future__ import annotations

import sys
from pathlib import Path


def open_wizard(hardware_file: str | None = None) -> None:
    """Open the wizard, planning for this machine or for the profile in `hardware_file`."""
    from osstune.engine.plan.hardware import HardwareProfileError, load_profile, probe
    from osstune.tui.output import fail, is_terminal

    if hardware_file is not None:
        path = Path(hardware_file)
        try:
            load_profile(path)  # fail before the screen opens: a bad file is a one-line error
        except HardwareProfileError as e:
            fail(str(e))

        def hardware_source():  # noqa: ANN202 - HardwareProfile, imported lazily
            return load_profile(path)
    else:

        def hardware_source():  # noqa: ANN202
            return probe()

    if not is_terminal(sys.stdin) or not is_terminal(sys.stdout):
        fail("the wizard needs a terminal; use `osstune run PRESET` for headless runs")

    from osstune.engine.session.run_session import EngineLauncher
    from osstune.tui.app import OsstuneApp

    OsstuneApp(hardware_source, EngineLauncher(),
               profile_is_this_machine=hardware_file is None).run()
