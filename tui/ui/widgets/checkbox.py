"""A checkbox whose state is in its text: ``[x]`` checked, ``[ ]`` not (not colour alone)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Checkbox


class TextCheckbox(Checkbox):
    """:class:`textual.widgets.Checkbox` drawn as ``[x]`` / ``[ ]``."""

    @property
    def _button(self) -> Content:
        # Textual's hook for drawing the box (private; textual<9 is pinned in pyproject)
        style = self.get_visual_style("toggle--label")
        return Content.assemble(("[x]" if self.value else "[ ]", style))
