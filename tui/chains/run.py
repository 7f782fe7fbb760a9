"""Run a policy: reconcile, plan, create targets, send, wait, record.

Every step is written to the ledger before it is done in QEMU, so a run killed at any point is
resolved by :func:`tui.chains.reconcile.reconcile` on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tui.chains.freeze import FreezeFailed, FreezeOutcome, frozen_guest, thaw_leftovers
from tui.chains.ledger import ImageState, JobState, Ledger
from tui.chains.plan import DrivePlan, Plan, chain_state, make_plan
from tui.chains.policy import Policy, render_name
from tui.chains.reconcile import finish_job, reconcile
from tui.chains.send import Sender, TransactionRefused, send_transaction
from tui.chains.targets import QMPConn, Target, TargetError, create_target, release_target
from tui.errors import BitmapTuiError, ConfigError, QMPCommandError
from tui.model.state import JobResult

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


@dataclass
class DriveOutcome:
    drive: str
    node: str | None
    kind: str
    reason: str
    path: str | None = None
    base: str | None = None
    job_id: str | None = None
    state: str = "planned"  # an ImageState value once known
    error: str | None = None


@dataclass
class RunResult:
    policy: str
    connection: str
    mode: str
    txn_ids: list[int] = field(default_factory=list)
    refused: str | None = None
    drives: list[DriveOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    next: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.refused:
            return EXIT_REFUSED
        return EXIT_OK if all(d.state == ImageState.VALID for d in self.drives) else EXIT_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "connection": self.connection,
            "completion_mode": self.mode,
            "transactions": self.txn_ids,
            "refused": self.refused,
            "drives": [vars(d) for d in self.drives],
            "notes": self.notes,
            "next": self.next,
        }


def _outcomes(plan: Plan) -> list[DriveOutcome]:
    return [
        DriveOutcome(d.drive, d.node, d.kind, d.reason, base=d.base.path if d.base else None, error=d.error)
        for d in plan.drives
    ]


def next_steps(ledger: Ledger, policy: Policy) -> list[str]:
    """One line per drive: what its next backup will be based on."""
    lines = []
    for drive in policy.drives:
        cs = chain_state(ledger, policy.connection, drive)
        if cs.base is not None:
            lines.append(f"{drive}: next incremental is based on {os.path.basename(cs.base.path)}")
        else:
            lines.append(f"{drive}: next backup is a full one ({cs.reason})")
    return lines


def image_path(ledger: Ledger, connection: str, policy: Policy, d: DrivePlan, txn_id: int) -> str:
    """Where a drive's new image goes. ``{n}`` is the drive's image number in the ledger
    (1, 2, ...), so names stay unique per drive."""
    n = len(ledger.images(connection=connection, drive=d.drive)) + 1
    name = render_name(
        policy.pattern, drive=_UNSAFE.sub("_", d.drive), node=d.node, n=n,
        kind="full" if d.kind == "full" else "incr", txn=txn_id, bitmap=policy.bitmap,
        policy=policy.name, connection=_UNSAFE.sub("_", connection),
    )
    return os.path.join(policy.target_dir, name)


def preview(ledger: Ledger, model: Any, policy: Policy, *, compact: bool = False) -> tuple[Plan, list[str]]:
    """The plan and, for the transaction it would send, the what-if of each job failing
    (:func:`tui.txn.verdict.what_if`): lines for a confirmation dialog or ``backup --plan``."""
    from tui.txn.model import Action, Transaction
    from tui.txn.verdict import describe, what_if

    plan = make_plan(ledger, model, policy)
    if plan.errors:
        return plan, [f"refused: {e}" for e in plan.errors]
    txn_id = ledger.next_txn_id()
    actions: list[Action] = []
    lines: list[str] = []
    for i, d in enumerate(plan.drives):
        path = image_path(ledger, model.name, policy, d, txn_id)
        base = f" on {os.path.basename(d.base.path)}" if d.base else ""
        lines.append(f"{d.drive}: {d.kind}{base} → {os.path.basename(path)} ({d.reason})")
        if not plan.split:
            actions += [Action(a["type"], a["data"]) for a in d.bitmap_actions]
        actions.append(Action(**_backup_action(d, policy, path, f"bt{txn_id}-{i}")))
    lines += plan.notes
    txn = Transaction(tuple(actions), plan.mode)
    for sc in what_if(txn, model)[1:]:
        if compact:  # one line per assumed failure (for a dialog)
            keep = [os.path.basename(i.path) for i in sc.verdict.images if i.verdict == "valid"]
            lines.append(f"if {sc.title}: valid {', '.join(keep) or 'none'}")
            continue
        lines.append(f"if {sc.title}:")
        lines += [f"  {text}" for text in describe(sc.verdict) if text.startswith(("image", "next"))]
    return plan, lines


def _backup_action(d: DrivePlan, policy: Policy, target: str, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "job-id": job_id,
        "device": d.node,
        "target": target,
        "sync": "full" if d.kind == "full" else "incremental",
        # Kept until the outcome is in the ledger, so a killed app can still read it (reconcile).
        "auto-dismiss": False,
    }
    if d.kind == "incremental":
        data["bitmap"] = policy.bitmap
    if policy.speed:
        data["speed"] = policy.speed
    return {"type": "blockdev-backup", "data": data}


async def run_policy(
    conn: QMPConn,
    ledger: Ledger,
    policy: Policy,
    *,
    timeout: float | None = None,
    on_step: Callable[[str], None] | None = None,
    guest_agent: str | None = None,
) -> RunResult:
    """Run ``policy`` once on ``conn``; the result says per drive what happened and what is next.

    ``guest_agent`` (``unix:/path``) is the connection's guest agent, for ``freeze: true``.

    While it runs, its transactions belong to this process (reconcile leaves them alone); when it
    returns, whatever is still open is left to :func:`tui.chains.reconcile.reconcile`.
    """
    await reconcile(conn, ledger)
    owned: list[int] = []
    try:
        result = await _run(conn, ledger, policy, owned, timeout=timeout, on_step=on_step,
                            guest_agent=guest_agent)
    finally:
        ledger.release(owned)
    if any(d.state == ImageState.PENDING for d in result.drives) and conn.model.state.value == "connected":
        # A job vanished without an outcome (someone dismissed it): resolve what QEMU can tell.
        await reconcile(conn, ledger)
        for txn_id in result.txn_ids:
            by_job = {im.job_id: im for im in ledger.images(txn_id=txn_id)}
            for d in result.drives:
                im = by_job.get(d.job_id)
                if im is not None:
                    d.state, d.error = im.state, im.error or d.error
        result.next = next_steps(ledger, policy)
    return result


async def _run(
    conn: QMPConn,
    ledger: Ledger,
    policy: Policy,
    owned: list[int],
    *,
    timeout: float | None,
    on_step: Callable[[str], None] | None,
    guest_agent: str | None = None,
) -> RunResult:
    step = on_step or (lambda _text: None)
    plan = make_plan(ledger, conn.model, policy)
    result = RunResult(policy.name, conn.name, plan.mode, drives=_outcomes(plan), notes=list(plan.notes))
    if plan.errors:
        result.refused = "; ".join(plan.errors)
        return result
    if policy.freeze:
        why = await _freeze_ready(ledger, conn.name, guest_agent)
        if why:
            result.refused = why
            return result
    txn_id = ledger.new_txn(conn.name, policy.name, plan.mode)
    owned.append(txn_id)
    result.txn_ids.append(txn_id)
    image_ids: dict[str, int] = {}
    targets: dict[str, Target] = {}
    actions: list[dict[str, Any]] = []
    bitmap_actions: list[dict[str, Any]] = []
    job_nodes: dict[str, str] = {}
    fulls: list[int] = []

    async def refuse(error: str, keep_reset: list[int] | None = None) -> RunResult:
        for t in targets.values():
            with contextlib.suppress(BitmapTuiError):
                await release_target(conn, t.node, t.file_node)
        ledger.mark_refused(txn_id, error, keep_reset=keep_reset)
        result.refused = error
        for o in result.drives:
            o.state = ImageState.INVALID
        result.next = next_steps(ledger, policy)
        return result

    try:
        for i, (d, out) in enumerate(zip(plan.drives, result.drives, strict=True)):
            path = image_path(ledger, conn.name, policy, d, txn_id)
            if ledger.path_known(path):
                return await refuse(f"{path} is already in the ledger; change the policy's pattern")
            local = getattr(getattr(conn, "address", None), "kind", "") == "unix"
            if local and await asyncio.to_thread(os.path.lexists, path):
                # A local QEMU: blockdev-create would overwrite an existing file. (A remote
                # QEMU's file system cannot be checked from here; the ledger check above holds.)
                return await refuse(f"{path} already exists and is not overwritten; move it away "
                                    "or change the policy's pattern")
            job_id = f"bt{txn_id}-{i}"
            out.path, out.job_id = path, job_id
            image_ids[d.drive] = ledger.add_image(
                txn_id=txn_id, connection=conn.name, policy=policy.name, drive=d.drive,
                node=d.node or "", bitmap=policy.bitmap, path=path, kind=d.kind,
                parent_id=d.base.id if d.base else None, job_id=job_id,
                source_file=d.source_file, source_size=d.size,
            )
            if d.kind == "full":
                fulls.append(image_ids[d.drive])
        for i, (d, out) in enumerate(zip(plan.drives, result.drives, strict=True)):
            step(f"creating {out.path}")
            node = f"bt{txn_id}n{i}"
            ledger.set_image_nodes(image_ids[d.drive], f"{node}-f", node)
            targets[d.drive] = await create_target(
                conn, out.path or "", d.size, node=node, backing=d.base.path if d.base else None
            )
            actions.extend(d.bitmap_actions if not plan.split else ())
            bitmap_actions.extend(d.bitmap_actions if plan.split else ())
            actions.append(_backup_action(d, policy, node, out.job_id or ""))
            job_nodes[out.job_id or ""] = d.node or ""
    except QMPCommandError as exc:
        return await refuse(exc.desc)
    except (TargetError, ConfigError, BitmapTuiError) as exc:
        # Nothing was sent yet (also when the connection dropped): the run is refused.
        return await refuse(str(exc))
    ledger.set_actions(txn_id, actions)

    # Inconsistent bitmaps can only be removed, and not in the same transaction as their re-add.
    removes = [d for d in plan.drives if d.pre_remove]
    if removes:
        ledger.mark_bitmap_reset([image_ids[d.drive] for d in removes])
        for d in removes:
            try:
                await conn.execute("block-dirty-bitmap-remove", {"node": d.node, "name": policy.bitmap})
            except QMPCommandError as exc:
                return await refuse(f"removing inconsistent bitmap of {d.drive}: {exc.desc}",
                                    keep_reset=[image_ids[x.drive] for x in removes])
    already_reset = [image_ids[d.drive] for d in removes]

    if plan.split:
        step("starting the new chains' bitmaps (individual transaction)")
        bt = ledger.new_txn(conn.name, policy.name, "individual", bitmap_actions)
        owned.append(bt)
        result.txn_ids.insert(0, bt)
        ledger.mark_sending(bt, fulls)
        try:
            await send_transaction(conn, bitmap_actions, "individual")
        except TransactionRefused as exc:
            ledger.mark_refused(bt, str(exc))
            return await refuse(f"bitmap step refused: {exc}", keep_reset=already_reset)
        except BitmapTuiError as exc:
            # Unknown whether the bitmaps changed: the fulls stay marked as resetting them.
            ledger.settle(bt)
            return await refuse(f"bitmap step: {exc}", keep_reset=fulls)
        ledger.mark_sent(bt)
        ledger.settle(bt)
        already_reset = sorted(set(already_reset) | set(fulls))

    sender = Sender(conn, actions, plan.mode)
    frozen: FreezeOutcome | None = None
    try:
        # freeze: true → the guest is frozen for exactly this (tui.chains.freeze).
        async with _frozen(ledger, txn_id, policy, guest_agent, step) as frozen:
            step(f"sending the transaction ({plan.mode})")
            ledger.mark_sending(txn_id, fulls)
            await sender.send()
    except FreezeFailed as exc:
        return await refuse(str(exc), keep_reset=already_reset)
    except TransactionRefused as exc:
        return await refuse(str(exc), keep_reset=already_reset)
    except BitmapTuiError as exc:
        # Lost or timed out: it may or may not have started. Leave it to reconcile.
        result.refused = None
        for o in result.drives:
            o.state, o.error = ImageState.PENDING, str(exc)
        result.notes.append(f"outcome not known yet ({exc}); it is resolved on the next start")
        return result
    ledger.mark_sent(txn_id)
    if frozen is not None and not frozen.thawed:
        result.notes.append(f"the guest may still be frozen: {frozen.detail} (thaw it with "
                            "guest-fsfreeze-thaw; the next frozen backup retries)")

    step("waiting for the jobs")
    jobs = await sender.wait(timeout)
    for job_id in job_nodes:
        res, error = jobs.get(job_id, (None, None))
        if res is None or res is JobResult.LOST:
            # Not seen to end (connection lost, timed out, vanished): left PENDING for
            # reconcile, which asks QEMU (the job is kept until dismissed).
            continue
        state = {
            JobResult.COMPLETED: JobState.COMPLETED,
            JobResult.FAILED: JobState.FAILED,
            JobResult.CANCELLED: JobState.CANCELLED,
        }[res]
        ledger.record_job(conn.name, job_id, state, error)
    if any(jobs.get(j, (None, None))[0] in (None, JobResult.LOST) for j in job_nodes):
        result.notes.append("some jobs were not seen to end; they are resolved from QEMU "
                            "(now if it answers, else on the next start)")
    if conn.model.state.value == "connected":
        for job_id in job_nodes:
            with contextlib.suppress(BitmapTuiError):
                await finish_job(conn, ledger, txn_id, job_id)
    ledger.settle(txn_id)

    by_job = {im.job_id: im for im in ledger.images(txn_id=txn_id)}
    for o in result.drives:
        im = by_job.get(o.job_id)
        if im is not None:
            o.state, o.error = im.state, im.error
    result.next = next_steps(ledger, policy)
    return result


# ---------------------------------------------------------------------------------------- freeze


def _frozen(ledger: Ledger, txn_id: int, policy: Policy, guest_agent: str | None,
            step: Callable[[str], None]) -> contextlib.AbstractAsyncContextManager[Any]:
    """The guest frozen around the transaction when the policy says ``freeze: true``."""
    if not policy.freeze or guest_agent is None:
        return contextlib.nullcontext()
    return frozen_guest(ledger, txn_id, guest_agent, step=step)


async def _freeze_ready(ledger: Ledger, connection: str, guest_agent: str | None) -> str | None:
    """Why a frozen backup cannot start (no agent, an earlier freeze not thawed), or None."""
    if guest_agent is None:
        return (f"policy has freeze: true but connection {connection} has no guest_agent "
                "(add guest_agent: unix:/path/to/qga.sock to the connection)")
    try:
        await thaw_leftovers(ledger, connection, guest_agent)
    except FreezeFailed as exc:
        return str(exc)
    return None
