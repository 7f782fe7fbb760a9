"""The footer: the screen's most used keys first, so the narrowest terminal still shows them.

Textual's footer lists the keys in binding order (the focused widget's first, the app's last), so
at 80 columns ``?`` and ``q`` fell off the end. This one orders them by the registry's
:attr:`~tui.ui.actions.UiAction.rank` (lower first; ties keep binding order).

Textual's footer also rebuilds all its key widgets (about 13 ms) every time the screen says its
bindings may have changed, which it does on every cursor move, and queues one rebuild per call:
a burst of calls (start-up, a table filling with rows) left a train of rebuilds that ran during
the next frames. This one rebuilds only when the keys it would show differ from those it shows,
and at most once per refresh however many calls came.
"""

from __future__ import annotations

from typing import NamedTuple

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey  # private to Textual: textual<9 is pinned

from tui.ui.actions import footer_rank


class ShownKey(NamedTuple):
    key: str
    display: str
    description: str
    action: str
    enabled: bool
    tooltip: str


class RankedFooter(Footer):
    """A footer whose keys are ordered by the action registry's ranks."""

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[ShownKey, ...] | None = None
        self._update_pending = False

    def keys(self) -> tuple[ShownKey, ...]:
        """The keys the footer shows for the screen's bindings now, in order."""
        seen: dict[str, tuple[int, int, ShownKey]] = {}
        for _node, binding, enabled, tooltip in self.screen.active_bindings.values():
            if binding.show and binding.action not in seen:
                shown = ShownKey(binding.key, self.app.get_key_display(binding), binding.description,
                                 binding.action, enabled, tooltip)
                seen[binding.action] = (footer_rank(binding.id), len(seen), shown)
        return tuple(item[2] for item in sorted(seen.values()))

    def compose(self) -> ComposeResult:
        # _bindings_ready is Textual's own guard (private; textual<9 is pinned in pyproject)
        if not self._bindings_ready:
            return
        self._shown = self.keys()
        self.styles.grid_size_columns = len(self._shown)
        for shown in self._shown:
            yield FooterKey(shown.key, shown.display, shown.description, shown.action,
                            disabled=not shown.enabled,
                            tooltip=shown.tooltip).data_bind(compact=Footer.compact)

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen:
            return
        if not self._update_pending:
            self._update_pending = True
            self.call_after_refresh(self._update_keys)

    async def _update_keys(self) -> None:
        self._update_pending = False
        if self.is_attached and self.keys() != self._shown:
            await self.recompose()
