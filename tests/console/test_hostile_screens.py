"""The console's screens (dashboard, chains, composer) with hostile bitmap names created on a
real QEMU: no raw control character reaches the screen, and Rich markup in a name is shown as
text, not applied."""

from __future__ import annotations

from tests.kit.common import make_policy, requires_qemu, wait_for
from tests.kit.dashboard import make_app, screen_text, watch
from tests.kit.hostile import HOSTILE, raw_controls
from tui.core.chains.run import run_policy
from tui.core.ledger.repository import Ledger
from tui.ui.screens.chains import ChainsScreen
from tui.ui.screens.composer import ComposerScreen

pytestmark = requires_qemu


async def test_screens_show_hostile_names_escaped(make_sandbox, fleet_for, tmp_path):
    sb = await make_sandbox(drives=1)
    for name in HOSTILE:
        await sb.add_bitmap(0, name)
    fleet = await fleet_for(sb)
    ledger = Ledger(tmp_path / "l.sqlite")
    pol = make_policy("nightly", {"connection": "vm0", "drives": ["drive0"],
                                  "bitmap": HOSTILE[1], "target_dir": str(sb.dir)})
    await run_policy(fleet["vm0"], ledger, pol, timeout=60)
    app = make_app(fleet, ledger, pol)
    seen: dict[str, str] = {}
    async with watch(app, size=(160, 50)) as pilot:
        await wait_for(lambda: "PWNED" in screen_text(app), timeout=20, what="the bitmaps")
        seen["dashboard"] = screen_text(app)
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, ChainsScreen)
        seen["chains"] = screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, ComposerScreen)
        await pilot.press("a")
        await pilot.pause()
        seen["composer"] = screen_text(app)
    found = {what: raw_controls(text) for what, text in seen.items() if raw_controls(text)}
    assert not found, found
    # The bitmap column is narrow: the names are cut there, escaped and unstyled.
    assert "\\x1b]0;PWNED\\" in seen["dashboard"]
    assert "[bold red]x[/" in seen["dashboard"]
