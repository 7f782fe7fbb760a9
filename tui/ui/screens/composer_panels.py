"""What the composer's panels say: its title, the JSON preview, the checks, the what-if, one row
per job and the verdict, as Rich markup from the transaction's data (no widget here)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from rich.markup import escape

from tui.core.model.state import ConnectionModel
from tui.core.txn import JobView, Prepared, Transaction, Verdict, describe, what_if
from tui.core.txn.incremental import PlannedTarget, Skipped, describe_targets
from tui.core.txn.verdict import bitmap_line, image_line

NOT_SENT = "Not sent yet: press s to send."
# The columns of the jobs table: (key, label).
JOB_COLUMNS = (("job", "Job"), ("drive", "Drive"), ("status", "Status"),
               ("progress", "Progress"), ("result", "Result"))


def title_text(model: ConnectionModel, txn: Transaction, prepared: Prepared) -> str:
    p = prepared
    return escape(f"Transaction on {model.name} ({model.state.value}) · {len(txn.actions)} "
                  f"action(s) · {len(p.errors)} error(s), {len(p.warnings)} warning(s)"
                  + (f", {len(p.notices)} notice(s)" if p.notices else ""))


def mode_text(mode: str) -> str:
    return f"completion-mode: [b]{mode}[/b]  (m toggles)"


def preview_text(prepared: Prepared) -> str:
    """The transaction's arguments, exactly as sent (shown without markup)."""
    return ("transaction arguments, exactly as they will be sent:\n"
            + json.dumps(prepared.transaction.to_qmp(), indent=2))


def checks_text(prepared: Prepared, targets: Iterable[PlannedTarget],
                skipped: Iterable[Skipped], target_risks: Iterable[str]) -> str:
    """The targets created before sending, the drives left out, then every finding and its fix."""
    lines = [escape(line) for line in describe_targets(targets)]
    lines += [f"[$warning]{escape(str(sk))}[/]" for sk in skipped]
    lines += [f"[$warning]warning: {escape(w)}[/]" for w in target_risks]
    for f in prepared.findings:
        style = {"error": "$error", "warning": "$warning"}.get(f.level, "$text-muted")
        lines.append(f"[{style}]{escape(str(f))}[/]")
        if f.fix is not None:
            lines.append(f"  fix (f on that action): {escape(f.fix.summary())}")
    return "\n".join(lines) or "No problem found: ready to send."


def whatif_text(transaction: Transaction, model: ConnectionModel, mode: str) -> str:
    """What each outcome of the transaction leaves behind."""
    wlines = [f"completion-mode {mode}: what each outcome leaves behind"]
    for sc in what_if(transaction, model):
        wlines.append(f"\n[b]if {escape(sc.title)}:[/b]")
        v = sc.verdict
        wlines += [f"  {escape(image_line(img))}" for img in v.images]
        wlines += [f"  {escape(bitmap_line(bm))}" for bm in v.bitmaps]
        for n in v.next:
            wlines.append(f"  → {escape(n)}")
    return "\n".join(wlines)


def job_cells(view: JobView) -> dict[str, str]:
    """One job's row, by column key."""
    return {
        # QEMU's "null" (the job is gone) means nothing to an operator
        "job": view.job_id, "drive": view.label,
        "status": "ended" if view.result else view.status,
        "progress": f"{view.progress:4.0%}", "result": (view.result or "").upper(),
    }


def verdict_text(verdict: Verdict) -> str:
    body = "\n".join(escape(line) for line in describe(verdict))
    if verdict.accepted is None:
        head = "OUTCOME UNKNOWN (the reply was lost: QEMU may be running the jobs)"
    else:
        head = "VERDICT" if verdict.accepted else "REFUSED (no job started)"
    return f"[b]{head}[/b]\n{body}"
