"""The composer's commands in the command palette."""

from __future__ import annotations

from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (palette name, action, help) offered by the command palette on the composer.
PALETTE = (
    ("transaction: Send", "send", "check, confirm warnings, send and follow the jobs"),
    ("transaction: Toggle completion mode", "toggle_mode", "individual ↔ grouped"),
    ("transaction: Add action", "add", "add a backup action (type is editable)"),
    ("transaction: Delete action", "delete", "remove the selected action"),
    ("transaction: Use blockdev-backup", "use_fix", "replace a deprecated drive-backup"),
    ("transaction: Save", "save", "write the transaction as YAML"),
    ("transaction: Show what-if", "view('tab-whatif')", "what each failure leaves behind"),
    ("transaction: Show JSON", "view('tab-json')", "exactly what will be sent"),
)


class ComposerCommands(Provider):
    """Context commands of the composer for the command palette."""

    def _commands(self) -> list[tuple[str, Any, str]]:
        screen = self.screen
        # Only on the screen that offers them (the composer lists this provider in COMMANDS).
        if ComposerCommands not in screen.COMMANDS:
            return []
        return [(name, partial(self.app.call_next, screen.run_action, action), help_)
                for name, action, help_ in PALETTE]

    async def discover(self) -> Hits:
        for name, callback, help_ in self._commands():
            yield DiscoveryHit(name, callback, help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_ in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_)
