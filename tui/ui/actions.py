"""The one action registry: every key the console offers, in one table per screen area.

Each :class:`UiAction` names its binding id (remappable in the config's ``keymap``), its default
key, its footer label, the Textual action it runs, its help text and its palette title. From the
registry come the bindings (:func:`bindings`), the help screen (:func:`help_groups`), the palette
(:func:`palette_entries`) and the keymap check (:func:`known_ids`). Mutating actions are marked
once here; a read-only screen hides and refuses them through :func:`refuses`.

Adding an operation means one entry here (and the ops function it ends in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from textual.binding import Binding


@dataclass(frozen=True, slots=True)
class UiAction:
    """One thing the operator can do with a key (and usually the palette)."""

    id: str  #: binding id, e.g. ``bitmap.clear`` (the config's keymap names these)
    key: str  #: default key(s), Textual's names, comma-separated
    label: str  #: footer label
    action: str  #: Textual action run on the screen, e.g. ``bitmap('clear')``
    help: str  #: what it does, one line (the palette's help text)
    palette: str = ""  #: palette title (``bitmap: Clear``); empty: not in the palette
    mutating: bool = False  #: changes a VM: hidden and refused in read-only mode
    show: bool = True  #: shown in the footer
    priority: bool = False  #: a priority binding (works whatever has focus)
    #: ``offered(screen)``: whether the palette offers it now (the selection allows it)
    offered: Callable[[Any], bool] | None = None
    #: place in the footer, lower first (the most used keys stay visible at 80 columns)
    rank: int = 50

    @property
    def name(self) -> str:
        """The action's method name without parameters (``bitmap`` for ``bitmap('clear')``)."""
        return self.action.split("(", 1)[0]


@dataclass(frozen=True, slots=True)
class ActionGroup:
    """The actions of one area (a table, a screen), under one help heading."""

    title: str
    actions: tuple[UiAction, ...]
    #: ``route`` set: the bindings live on a widget but run on the dashboard, through the app's
    #: ``action_dashboard`` (the app checks read-only, whatever screen is on top)
    route: bool = False

    def __iter__(self) -> Any:
        return iter(self.actions)


_GROUPS: dict[str, ActionGroup] = {}


def register(key: str, title: str, actions: Iterable[UiAction], *,
             route: bool = False) -> ActionGroup:
    """Add a group to the registry (once per key; ids must be unique across groups)."""
    group = ActionGroup(title, tuple(actions), route)
    taken = {a.id for k, g in _GROUPS.items() if k != key for a in g}
    clash = taken & {a.id for a in group}
    if clash:
        raise ValueError(f"binding ids used twice: {sorted(clash)}")
    _GROUPS[key] = group
    return group


def group(key: str) -> ActionGroup:
    return _GROUPS[key]


BindingList = list[Binding | tuple[str, str] | tuple[str, str, str]]


def bindings(group: ActionGroup) -> BindingList:
    """Textual bindings for a group. A routed group's widget bindings run on the dashboard via
    ``app.dashboard(...)``: one generic route instead of a forwarding method per action."""
    return [Binding(a.key, routed(a.action) if group.route else a.action, a.label, show=a.show,
                    id=a.id, priority=a.priority) for a in group]


def footer_rank(binding_id: str | None) -> int:
    """The footer place of a binding id (unknown ids last)."""
    for g in _GROUPS.values():
        for a in g:
            if a.id == binding_id:
                return a.rank
    return 100


def routed(action: str) -> str:
    """The app action that runs ``action`` on the dashboard."""
    return f"app.dashboard({action!r})"


def known_ids() -> set[str]:
    """Every binding id of the registry (for checking the config's keymap)."""
    return {a.id for g in _GROUPS.values() for a in g}


def mutating_names() -> frozenset[str]:
    """Method names of every mutating action (``check_action`` receives these)."""
    return frozenset(a.name for g in _GROUPS.values() for a in g if a.mutating)


def refuses(action_name: str, read_only: bool) -> bool:
    """Whether a read-only screen must hide and refuse ``action_name``."""
    return read_only and action_name in mutating_names()


def help_groups(keys: Iterable[str], *, read_only: bool, key_of: Callable[[UiAction], str],
                allowed: Callable[[UiAction], bool] = lambda a: True,
                ) -> list[tuple[str, list[tuple[str, str]]]]:
    """``(heading, [(keys, help)])`` for the named groups, as remapped by ``key_of``; a heading
    whose every key is hidden (read-only) is left out."""
    out = []
    for k in keys:
        g = _GROUPS[k]
        rows = [(key_of(a), a.label) for a in g
                if not (read_only and a.mutating) and allowed(a)]
        if rows:
            out.append((g.title, rows))
    return out


def palette_entries(keys: Iterable[str], screen: Any, *, read_only: bool) -> list[UiAction]:
    """The actions of the named groups the palette offers now on ``screen``."""
    return [a for k in keys for a in _GROUPS[k]
            if a.palette and not (read_only and a.mutating)
            and (a.offered is None or a.offered(screen))]


# ---------------------------------------------------------------------------- the table

def _bitmap_entry(verb: str, key: str, label: str, palette: str, help_text: str) -> UiAction:
    return UiAction(f"bitmap.{verb}", key, label, f"bitmap({verb!r})", help_text,
                    palette=f"bitmap: {palette}", mutating=True,
                    offered=lambda s: s.bitmap_allows(verb))


def _job_entry(verb: str, key: str, label: str, help_text: str) -> UiAction:
    return UiAction(f"job.{verb}", key, label, f"job({verb!r})", help_text,
                    palette=f"job: {verb.capitalize()}", mutating=True,
                    offered=lambda s: s.job_allows(verb))


NODES = register("nodes", "Bitmaps (nodes table)", [
    UiAction("bitmap.add", "n", "Add", "bitmap_add", "add a bitmap to the selected node",
             palette="bitmap: Add", mutating=True, offered=lambda s: s.selected_node() is not None),
    _bitmap_entry("clear", "x", "Clear…", "Clear", "clear the bitmap (asks first)"),
    _bitmap_entry("enable", "e", "Enable", "Enable", "start recording writes"),
    _bitmap_entry("disable", "d", "Disable", "Disable", "stop recording writes"),
    UiAction("bitmap.merge", "m", "Merge…", "bitmap_merge",
             "merge other bitmaps into this one (asks first)", palette="bitmap: Merge into",
             mutating=True, offered=lambda s: s.bitmap_allows("merge")),
    _bitmap_entry("remove", "r", "Remove…", "Remove", "remove the bitmap (asks first)"),
], route=True)

JOBS = register("jobs", "Jobs (jobs table)", [
    _job_entry("pause", "p", "Pause", "pause the selected job"),
    _job_entry("resume", "u", "Resume", "resume a paused job"),
    _job_entry("cancel", "c", "Cancel…", "cancel the job (asks first)"),
    UiAction("job.speed", "s", "Speed", "job_speed", "set the job's speed limit",
             palette="job: Set speed", mutating=True, offered=lambda s: s.job_allows("set-speed")),
    _job_entry("finalize", "F", "Finalize", "finalize a pending job"),
    _job_entry("dismiss", "D", "Dismiss", "dismiss a concluded job"),
], route=True)

DASHBOARD = register("dashboard", "Dashboard", [
    UiAction("dashboard.filter", "slash", "Filter", "filter", "filter the focused table or the log",
             palette="view: Filter"),
    UiAction("events.follow", "f", "Follow/pause", "follow",
             "pause or resume following the event log", palette="events: Follow / pause"),
    UiAction("dashboard.all", "a", "All conns", "toggle_all",
             "show nodes and jobs of every connection", palette="view: All connections",
             show=False),
    UiAction("nodes.anonymous", "i", "Internal", "toggle_anonymous",
             "show or hide internal (anonymous) bitmaps", palette="view: Internal bitmaps",
             show=False),
    UiAction("txn.compose", "t", "Txn", "compose",
             "open the transaction composer (an unsent one comes back)",
             palette="transaction: Compose", rank=5),
    UiAction("txn.backup", "b", "Backup", "backup('selected')",
             "an incremental backup of the selected drive (composer)",
             palette="transaction: Incremental backup of this drive", rank=3),
    UiAction("txn.backup_all", "B", "All", "backup('all')",
             "an incremental backup of every drive (a VM-wide point; grouped)",
             palette="transaction: Incremental backup of every drive", rank=4),
])

APP = register("app", "Everywhere", [
    UiAction("app.quit", "q", "Quit", "quit", "quit", rank=2),
    UiAction("app.interrupt", "ctrl+c", "Quit", "quit", "quit", show=False, priority=True),
    UiAction("app.help", "question_mark", "Help", "help", "every key of this screen",
             palette="help: Keys", rank=1),
    UiAction("app.chains", "l", "Chains", "chains", "backup chains (ledger, policies)",
             palette="view: Backup chains", rank=6),
])

COMPOSER = register("composer", "Transaction composer", [
    UiAction("composer.add", "a", "Add", "add", "add an action"),
    UiAction("composer.delete", "x,delete", "Delete", "delete", "delete the selected action"),
    UiAction("composer.up", "shift+up", "Move up", "move(-1)", "move the action up", rank=60),
    UiAction("composer.down", "shift+down", "Move down", "move(1)", "move the action down",
             rank=60),
    UiAction("composer.mode", "m", "Mode", "toggle_mode",
             "completion mode: individual / grouped", rank=0),
    UiAction("composer.mode_any", "f2", "Mode", "toggle_mode",
             "completion mode, also while a field has the focus", show=False, priority=True),
    UiAction("composer.fix", "f", "Use fix", "use_fix",
             "replace the action by its suggested fix", mutating=True, show=False),
    UiAction("composer.send", "s", "Send", "send", "check and send the transaction",
             mutating=True, rank=0),
    UiAction("composer.send_any", "f5", "Send", "send",
             "send, also while a field has the focus", mutating=True, show=False, priority=True),
    UiAction("composer.save", "ctrl+s", "Save", "save", "save the transaction to its file",
             priority=True),
    UiAction("composer.view", "v", "View", "next_view", "next panel", rank=0),
    UiAction("composer.view_any", "f6", "View", "next_view",
             "next panel, also while a field has the focus", show=False, priority=True),
    UiAction("composer.form", "1", "Form", "view('tab-form')", "the action's form", show=False),
    UiAction("composer.json", "2", "JSON", "view('tab-json')", "the QMP JSON", show=False),
    UiAction("composer.checks", "3", "Checks", "view('tab-checks')", "the pre-flight checks",
             show=False),
    UiAction("composer.whatif", "4", "What-if", "view('tab-whatif')",
             "what each outcome would leave behind", show=False),
    UiAction("composer.run", "5", "Run", "view('tab-run')", "the jobs and the verdict",
             show=False),
    UiAction("composer.back", "escape", "Back", "back",
             "from a field: back to the actions; else back to the dashboard (asks when unsent)",
             rank=0),
])

CHAINS = register("chains", "Backup chains", [
    UiAction("chains.back", "escape", "Back", "back", "back to the dashboard", rank=0),
    UiAction("chains.run", "r", "Run policy", "run_policy", "preview and run a backup policy",
             mutating=True),
    UiAction("chains.fix", "x", "Fix problem", "fix", "apply the selected problem's fix",
             mutating=True),
    UiAction("chains.reload", "g", "Reload", "reload", "re-read the ledger and QEMU"),
    UiAction("chains.verify", "v", "Verify", "verify", "qemu-img check every chain"),
    UiAction("chains.restore", "R", "Restore point", "restore_point",
             "restore the selected image's point to a new standalone image (asks first)",
             mutating=True),
])

DIALOG = register("dialog", "Dialogs", [
    UiAction("dialog.cancel", "escape", "Cancel", "cancel", "close without doing anything"),
])

CONFIRM = register("confirm", "Confirmation", [
    UiAction("dialog.no", "n", "No", "no", "no (the other choice, when the dialog offers one)",
             show=False),
    UiAction("dialog.yes", "y", "Yes", "confirm", "yes: do it"),
])

HELP = register("help", "Help", [
    UiAction("help.close", "escape,q,question_mark", "Close", "dismiss_help", "close the help"),
])
