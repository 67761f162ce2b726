"""The wizard on this machine's real probe, headless at 120x36: Hardware and Preset screens as SVG.

    python bench/wizard_dump.py OUT_DIR

Used on GPU machines to check what a user sees there (bench/results/*real-probe*).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from osstune.engine.plan.hardware import probe
from osstune.engine.session.run_session import EngineLauncher
from osstune.tui.app import OsstuneApp


async def dump(out: Path) -> list[str]:
    app = OsstuneApp(probe, EngineLauncher(), settings_path=out / "settings.json")
    async with app.run_test(size=(120, 36)) as pilot:
        for _ in range(100):  # the probe answers in the background
            await pilot.pause(0.1)
            if type(app.screen).__name__ == "HardwareScreen":
                break
        await pilot.pause(2.0)
        (out / "hardware.svg").write_text(app.export_screenshot())
        await pilot.press("enter")
        await pilot.pause(3.0)
        (out / "preset.svg").write_text(app.export_screenshot())
        return [type(s).__name__ for s in app.screen_stack]


if __name__ == "__main__":
    print("screens:", asyncio.run(dump(Path(sys.argv[1]))))
