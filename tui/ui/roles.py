"""What a screen may offer the parts around it, as typed roles: a widget or the app asks
``isinstance(screen, Role)`` instead of looking an attribute up by name. (A screen's palette
commands are :class:`tui.ui.palette.OffersCommands`.)"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable


@runtime_checkable
class DeclaresActions(Protocol):
    """A screen whose keys come from registry groups (its help and palette, in this order)."""

    ACTION_GROUPS: ClassVar[tuple[str, ...]]


@runtime_checkable
class RendersState(Protocol):
    """A screen that redraws its tables from the store (a widget whose layout changed asks)."""

    def render_state(self) -> None: ...


@runtime_checkable
class FollowsJobs(Protocol):
    """A screen that reports some jobs itself (the dashboard does not toast them)."""

    def follows_job(self, connection: str, job_id: str) -> bool: ...


def action_groups(screen: object) -> tuple[str, ...]:
    """The registry groups ``screen`` declares (none for a screen that declares none)."""
    return screen.ACTION_GROUPS if isinstance(screen, DeclaresActions) else ()
