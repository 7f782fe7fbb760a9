"""Command palette (ctrl+p): context commands for the current selection, plus registered sources.

Screens offer commands through a ``context_commands()`` method; other modules (a transaction
composer, a chain view, ...) add theirs with :func:`register_commands`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True, slots=True)
class PaletteCommand:
    """One palette entry, named ``area: Verb`` (``bitmap: Clear``, ``job: Cancel``)."""

    title: str
    help: str
    callback: Callable[[], Any]


CommandSource = Callable[[Any], Iterable[PaletteCommand]]
_SOURCES: list[CommandSource] = []


def register_commands(source: CommandSource) -> CommandSource:
    """Add a source of palette commands: ``source(app)`` → commands (may depend on app state)."""
    if source not in _SOURCES:
        _SOURCES.append(source)
    return source


@runtime_checkable
class OffersCommands(Protocol):
    """A screen with palette commands for its current selection."""

    def context_commands(self) -> list[PaletteCommand]: ...


def commands_for(app: Any, screen: Any) -> list[PaletteCommand]:
    """Everything the palette offers now: the screen's context commands, then registered ones."""
    out: list[PaletteCommand] = []
    if isinstance(screen, OffersCommands):
        out.extend(screen.context_commands())
    for source in _SOURCES:
        out.extend(source(app))
    return out


class ContextCommands(Provider):
    """Palette provider over :func:`commands_for`."""

    def _commands(self) -> list[PaletteCommand]:
        return commands_for(self.app, self.screen)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for cmd in self._commands():
            score = matcher.match(cmd.title)
            if score > 0:
                yield Hit(score, matcher.highlight(cmd.title), cmd.callback, text=cmd.title,
                          help=cmd.help)

    async def discover(self) -> Hits:
        for cmd in self._commands():
            yield DiscoveryHit(cmd.title, cmd.callback, text=cmd.title, help=cmd.help)
