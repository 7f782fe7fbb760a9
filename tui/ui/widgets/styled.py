"""Words with colours from the theme: every state is shown as a word AND a colour.

Colours come from component classes styled in ``app.tcss`` with theme variables, so a theme can
change them and nothing here names a colour.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

# Component classes shared by the tables (each maps to a theme variable in app.tcss).
STATE_CLASSES = set(
    {
        "state--active", "state--disabled", "state--frozen", "state--inconsistent",
        "link--connected", "link--connecting", "link--disconnected", "link--failed",
        "job--running", "job--paused", "job--waiting", "job--completed", "job--failed",
        "job--cancelled", "job--lost", "progress--bar", "progress--empty",
        "row--node", "row--anonymous", "text--error", "text--muted",
    }
)


def styled(widget: Widget, text: str, component: str) -> Text:
    """``text`` in the colour of ``component`` (a component class of ``widget``)."""
    try:
        style = widget.get_component_rich_style(component, partial=True)
    except Exception:  # not mounted yet (no styles): plain text is still correct
        return Text(text)
    return Text(text, style=style)
