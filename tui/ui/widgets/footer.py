"""The footer: the screen's most used keys first, so the narrowest terminal still shows them.

Textual's footer lists the keys in binding order (the focused widget's first, the app's last), so
at 80 columns ``?`` and ``q`` fell off the end. This one orders them by the registry's
:attr:`~tui.ui.actions.UiAction.rank` (lower first; ties keep binding order).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer
from textual.widgets._footer import FooterKey  # private to Textual: textual<9 is pinned

from tui.ui.actions import footer_rank


class RankedFooter(Footer):
    """A footer whose keys are ordered by the action registry's ranks."""

    def compose(self) -> ComposeResult:
        # _bindings_ready is Textual's own guard (private; textual<9 is pinned in pyproject)
        if not self._bindings_ready:
            return
        active = self.screen.active_bindings
        shown: dict[str, tuple[Binding, bool, str]] = {}
        for _node, binding, enabled, tooltip in active.values():
            if binding.show and binding.action not in shown:
                shown[binding.action] = (binding, enabled, tooltip)
        ordered = sorted(enumerate(shown.values()),
                         key=lambda item: (footer_rank(item[1][0].id), item[0]))
        self.styles.grid_size_columns = len(ordered)
        for _i, (binding, enabled, tooltip) in ordered:
            yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description,
                            binding.action, disabled=not enabled,
                            tooltip=tooltip).data_bind(compact=Footer.compact)
