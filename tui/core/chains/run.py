"""Run a policy: reconcile, plan, create targets, send, wait, record.

Every step is written to the ledger before it is done in QEMU, so a run killed at any point is
resolved by :func:`tui.core.chains.reconcile.reconcile` on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tui.core.base.errors import BitmapTuiError, ConfigError, QMPCommandError
from tui.core.chains.freeze import FreezeFailed, FreezeOutcome, frozen_guest, thaw_leftovers
from tui.core.chains.identity import (
    backup_guard_actions,
    check_chains,
    fill_canaries,
    judge_backup_guard,
    remove_bitmaps,
)
from tui.core.chains.lock import run_lock_async
from tui.core.chains.plan import DrivePlan, Plan, chain_state, make_plan
from tui.core.chains.policy import Policy, render_name
from tui.core.chains.reconcile import finish_job, reconcile
from tui.core.chains.send import Sender, TransactionRefused, send_transaction
from tui.core.chains.verify import compare_images
from tui.core.chains.watch import current_bitmaps, observe_bitmap, record_breaks
from tui.core.ledger.names import companion_bitmaps, with_companions
from tui.core.ledger.repository import Ledger
from tui.core.ledger.rows import ImageState, JobState
from tui.core.model.state import JobResult
from tui.core.txn.targets import (
    QMPConn,
    Target,
    TargetError,
    create_target,
    file_identity,
    is_local,
    release_target,
)

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
    bitmap: str | None = None
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
        DriveOutcome(d.drive, d.node, d.kind, d.reason, base=d.base.path if d.base else None,
                     bitmap=d.bitmap or None, error=d.error)
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
    (:func:`tui.core.txn.verdict.what_if`): lines for a confirmation dialog or ``backup --plan``."""
    from tui.core.txn.model import Action, Transaction
    from tui.core.txn.verdict import describe, what_if

    plan = make_plan(ledger, model, policy)
    if plan.errors:
        return plan, [f"refused: {e}" for e in plan.errors]
    txn_id = plan.txn_id
    actions: list[Action] = []
    lines: list[str] = []
    for i, d in enumerate(plan.drives):
        path = image_path(ledger, model.name, policy, d, txn_id)
        base = f" on {os.path.basename(d.base.path)}" if d.base else ""
        lines.append(f"{d.drive}: {d.kind}{base} → {os.path.basename(path)} ({d.reason})")
        if not plan.split:
            actions += [Action(a["type"], a["data"]) for a in d.bitmap_actions]
        actions.append(Action(**_backup_action(d, policy, path, ledger.job_id(txn_id, i))))
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
        data["bitmap"] = d.bitmap
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
    wait: float = 0.0,
) -> RunResult:
    """Run ``policy`` once on ``conn``; the result says per drive what happened and what is next.

    ``guest_agent`` (``unix:/path``) is the connection's guest agent, for ``freeze: true``.
    The run holds the connection's run lock (:mod:`tui.core.chains.lock`): while another backup,
    prune or restore holds it, this one waits up to ``wait`` seconds, then is refused.

    While it runs, its transactions belong to this process (reconcile leaves them alone); when it
    returns, whatever is still open is left to :func:`tui.core.chains.reconcile.reconcile`.
    """
    async with run_lock_async(ledger, policy.connection, "backed up", f"policy {policy.name}",
                              wait=wait, on_note=on_step):
        return await _locked_run(conn, ledger, policy, timeout=timeout, on_step=on_step,
                                 guest_agent=guest_agent)


async def _locked_run(conn: QMPConn, ledger: Ledger, policy: Policy, *, timeout: float | None,
                      on_step: Callable[[str], None] | None, guest_agent: str | None) -> RunResult:
    """:func:`run_policy` once it holds the run lock."""
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
    """Plan, record, create the targets, send, wait, settle: one policy run, step by step."""
    run = _PolicyRun(conn, ledger, policy, owned, on_step or (lambda _text: None), guest_agent)
    # What the live state shows first (its reasons are the more precise), then bitmaps that lost
    # writes or a resized disk, seen against the intact chains' companions (recorded as breaks:
    # the plan takes a full backup with the reason).
    note_breaks(ledger, conn.model, policy)
    await check_chains(conn, ledger, policy)
    refused = run.plan_it()
    if refused is not None:
        return refused
    refused = await run.freeze_ready()
    if refused is not None:
        return refused
    try:
        refused = await run.record_images()
        if refused is None:
            await run.create_targets()
            await run.fill_canaries()
    except QMPCommandError as exc:
        refused = await run.refuse(exc.desc)
    except (TargetError, ConfigError, BitmapTuiError) as exc:
        # Nothing was sent yet (also when the connection dropped): the run is refused.
        refused = await run.refuse(str(exc))
    if refused is not None:
        return refused
    ledger.set_actions(run.txn_id, run.actions)
    if run.plan.split:
        refused = await run.send_bitmap_step()
        if refused is not None:
            return refused
    # verify: after is only meaningful when nothing but us writes the disk (a paused guest).
    quiet = await _guest_paused(conn) if policy.verify == "after" else False
    stopped = await run.send()
    if stopped is not None:
        return stopped
    await run.collect(timeout)
    if conn.model.state.value == "connected":
        await _after_jobs(conn, ledger, policy, run.plan, run.txn_id, run.result, quiet)
    return run.finish()


class _PolicyRun:
    """The state of one run between its steps (see :func:`_run`)."""

    def __init__(self, conn: QMPConn, ledger: Ledger, policy: Policy, owned: list[int],
                 step: Callable[[str], None], guest_agent: str | None) -> None:
        self.conn, self.ledger, self.policy, self.owned, self.step = conn, ledger, policy, owned, step
        self.guest_agent = guest_agent
        self.txn_id = 0
        self.image_ids: dict[str, int] = {}
        self.targets: dict[str, Target] = {}
        self.actions: list[dict[str, Any]] = []
        self.bitmap_actions: list[dict[str, Any]] = []
        self.job_nodes: dict[str, str] = {}
        self.fulls: list[int] = []
        self.already_reset: list[int] = []

    def plan_it(self) -> RunResult | None:
        """Record what the live state shows, plan, and take a transaction number."""
        conn, ledger, policy = self.conn, self.ledger, self.policy
        note_breaks(ledger, conn.model, policy)
        self.plan = make_plan(ledger, conn.model, policy)
        self.result = RunResult(policy.name, conn.name, self.plan.mode,
                                drives=_outcomes(self.plan), notes=list(self.plan.notes))
        if self.plan.errors:
            self.result.refused = "; ".join(self.plan.errors)
            return self.result
        self.txn_id = ledger.new_txn(conn.name, policy.name, self.plan.mode)
        self.owned.append(self.txn_id)
        self.result.txn_ids.append(self.txn_id)
        if self.txn_id != self.plan.txn_id:
            # another run took the planned number: name the bitmaps after ours
            self.plan = make_plan(ledger, conn.model, policy, self.txn_id)
            self.result.drives = _outcomes(self.plan)
            if self.plan.errors:
                ledger.mark_refused(self.txn_id, "; ".join(self.plan.errors))
                self.result.refused = "; ".join(self.plan.errors)
                return self.result
        return None

    async def freeze_ready(self) -> RunResult | None:
        """``freeze: true``: an agent must be there and an earlier freeze thawed (before any
        transaction number is taken)."""
        if not self.policy.freeze:
            return None
        why = await _freeze_ready(self.ledger, self.conn.name, self.guest_agent)
        if why:
            self.result.refused = why
            return self.result
        return None

    async def refuse(self, error: str, keep_reset: list[int] | None = None) -> RunResult:
        """Detach what was created, mark the transaction refused, every image INVALID."""
        for t in self.targets.values():
            with contextlib.suppress(BitmapTuiError):
                await release_target(self.conn, t.node, t.file_node)
        kept = set(keep_reset or ())
        for d in self.plan.drives:  # the size canaries of chains that did not start
            if d.kind == "full" and d.node and self.image_ids.get(d.drive) not in kept:
                await remove_bitmaps(self.conn, d.node, [companion_bitmaps(d.bitmap)[1]])
        self.ledger.mark_refused(self.txn_id, error, keep_reset=keep_reset)
        self.result.refused = error
        for o in self.result.drives:
            o.state = ImageState.INVALID
        self.result.next = next_steps(self.ledger, self.policy)
        return self.result

    async def record_images(self) -> RunResult | None:
        """Each drive's image in the ledger before anything exists (never over a known file)."""
        conn, ledger, policy = self.conn, self.ledger, self.policy
        for i, (d, out) in enumerate(zip(self.plan.drives, self.result.drives, strict=True)):
            path = image_path(ledger, conn.name, policy, d, self.txn_id)
            if ledger.path_known(path):
                return await self.refuse(f"{path} is already in the ledger; change the policy's "
                                         "pattern")
            if is_local(conn) and await asyncio.to_thread(os.path.lexists, path):
                # A local QEMU: blockdev-create would overwrite an existing file. (A remote
                # QEMU's file system cannot be checked from here; the ledger check above holds.)
                return await self.refuse(f"{path} already exists and is not overwritten; move it "
                                         "away or change the policy's pattern")
            job_id = ledger.job_id(self.txn_id, i)
            out.path, out.job_id = path, job_id
            self.image_ids[d.drive] = ledger.add_image(
                txn_id=self.txn_id, connection=conn.name, policy=policy.name, drive=d.drive,
                node=d.node or "", bitmap=d.bitmap, path=path, kind=d.kind,
                parent_id=d.base.id if d.base else None, job_id=job_id,
                source_file=d.source_file, source_size=d.size,
            )
            if d.kind == "full":
                self.fulls.append(self.image_ids[d.drive])
        return None

    async def create_targets(self) -> None:
        """Create and attach each target through QEMU; build the transaction's actions."""
        conn, ledger = self.conn, self.ledger
        for i, (d, out) in enumerate(zip(self.plan.drives, self.result.drives, strict=True)):
            self.step(f"creating {out.path}")
            node = ledger.node_name(self.txn_id, i)
            ledger.set_image_nodes(self.image_ids[d.drive], f"{node}-f", node)
            self.targets[d.drive] = await create_target(
                conn, out.path or "", d.size, node=node, backing=d.base.path if d.base else None
            )
            st = await asyncio.to_thread(file_identity, out.path or "") if is_local(conn) else None
            if st is not None:  # the file this ledger created: the only one it may delete later
                ledger.set_file_identity(self.image_ids[d.drive], st)
            self.actions.extend(d.bitmap_actions if not self.plan.split else ())
            self.bitmap_actions.extend(d.bitmap_actions if self.plan.split else ())
            live = self.conn.model.find_node(d.drive)
            if d.sentinel and self.plan.mode != "grouped" and live is not None:
                # grouped: no bitmap actions there; the sentinel is cleared after success
                self.actions += backup_guard_actions(live, d.bitmap, d.sentinel)
            self.actions.append(_backup_action(d, self.policy, node, out.job_id or ""))
            self.job_nodes[out.job_id or ""] = d.node or ""

    async def fill_canaries(self) -> None:
        """Each new chain's size canary, every bit set, just before its full backup."""
        await fill_canaries(self.conn, self.ledger, self.plan.drives, self.txn_id, self.image_ids,
                            self.step)

    async def send_bitmap_step(self) -> RunResult | None:
        """Grouped runs start their new chains' bitmaps first, in an individual transaction."""
        conn, ledger = self.conn, self.ledger
        self.step("starting the new chains' bitmaps (individual transaction)")
        bt = ledger.new_txn(conn.name, self.policy.name, "individual", self.bitmap_actions)
        self.owned.append(bt)
        self.result.txn_ids.insert(0, bt)
        ledger.mark_sending(bt, self.fulls)
        try:
            await send_transaction(conn, self.bitmap_actions, "individual")
        except TransactionRefused as exc:
            ledger.mark_refused(bt, str(exc))
            return await self.refuse(f"bitmap step refused: {exc}", keep_reset=self.already_reset)
        except BitmapTuiError as exc:
            # Unknown whether the bitmaps changed: the fulls stay marked as resetting them.
            ledger.settle(bt)
            return await self.refuse(f"bitmap step: {exc}", keep_reset=self.fulls)
        ledger.mark_sent(bt)
        ledger.settle(bt)
        self.already_reset = sorted(set(self.already_reset) | set(self.fulls))
        return None

    async def send(self) -> RunResult | None:
        """Send the backup transaction, the guest frozen around it when the policy says so (a
        refusal or an unknown outcome ends the run here)."""
        self.sender = Sender(self.conn, self.actions, self.plan.mode)
        frozen: FreezeOutcome | None = None
        try:
            # freeze: true → the guest is frozen for exactly this (tui.core.chains.freeze).
            async with _frozen(self.ledger, self.txn_id, self.policy, self.guest_agent,
                               self.step) as frozen:
                self.step(f"sending the transaction ({self.plan.mode})")
                self.ledger.mark_sending(self.txn_id, self.fulls)
                await self.sender.send()
        except (FreezeFailed, TransactionRefused) as exc:
            return await self.refuse(str(exc), keep_reset=self.already_reset)
        except BitmapTuiError as exc:
            # Lost or timed out: it may or may not have started. Leave it to reconcile.
            self.result.refused = None
            for o in self.result.drives:
                o.state, o.error = ImageState.PENDING, str(exc)
            self.result.notes.append(f"outcome not known yet ({exc}); it is resolved on the "
                                     "next start")
            return self.result
        self.ledger.mark_sent(self.txn_id)
        if frozen is not None and not frozen.thawed:
            self.result.notes.append(f"the guest may still be frozen: {frozen.detail} (thaw it "
                                     "with guest-fsfreeze-thaw; the next frozen backup retries)")
        return None

    async def collect(self, timeout: float | None) -> None:
        """Wait for the jobs, record their results, finish (detach) them, settle the images."""
        conn, ledger = self.conn, self.ledger
        self.step("waiting for the jobs")
        jobs = await self.sender.wait(timeout)
        for job_id in self.job_nodes:
            res, error = jobs.get(job_id, (None, None))
            if res is None or res is JobResult.LOST:
                # Not seen to end (connection lost, timed out, vanished): left PENDING for
                # reconcile, which asks QEMU (the job is kept until dismissed).
                continue
            ledger.record_job(conn.name, job_id, JobState.of(res), error)
        if any(jobs.get(j, (None, None))[0] in (None, JobResult.LOST) for j in self.job_nodes):
            self.result.notes.append("some jobs were not seen to end; they are resolved from "
                                     "QEMU (now if it answers, else on the next start)")
        if conn.model.state.value == "connected":
            for job_id in self.job_nodes:
                with contextlib.suppress(BitmapTuiError):
                    await finish_job(conn, ledger, self.txn_id, job_id)
        ledger.settle(self.txn_id)

    def finish(self) -> RunResult:
        """Each drive's state as the ledger now has it, and what to do next."""
        by_job = {im.job_id: im for im in self.ledger.images(txn_id=self.txn_id)}
        for o in self.result.drives:
            im = by_job.get(o.job_id)
            if im is not None:
                o.state, o.error = im.state, im.error
        self.result.next = next_steps(self.ledger, self.policy)
        return self.result


def note_breaks(ledger: Ledger, model: Any, policy: Policy) -> None:
    """Record the breaks the live state shows in the policy's current chains (before planning)."""
    for drive in policy.drives:
        node = model.find_node(drive)
        cs = chain_state(ledger, model.name, drive)
        if node is None or cs.base is None or cs.base.node != node.node_name:
            continue
        if ledger.issued(cs.base.bitmap):
            record_breaks(ledger, model.name, node, cs.base.bitmap)


async def _guest_paused(conn: QMPConn) -> bool:
    """Is the guest paused (so that its disk holds still)? False when QEMU cannot tell."""
    try:
        status = await conn.execute("query-status")
    except BitmapTuiError:
        return False
    return isinstance(status, dict) and status.get("running") is False


async def _after_jobs(conn: QMPConn, ledger: Ledger, policy: Policy, plan: Plan, txn_id: int,
                      result: RunResult, quiet: bool = False) -> None:
    """Once the jobs are settled: observe each chain's bitmap, verify the new chains if the
    policy says so, and remove our bitmaps of chains a VALID full replaced."""
    refresh = getattr(conn, "refresh", None)
    if refresh is not None:
        with contextlib.suppress(BitmapTuiError):
            await refresh()
    images = {im.drive: im for im in ledger.images(txn_id=txn_id)}
    for d in plan.drives:
        node = conn.model.find_node(d.drive)
        im = images.get(d.drive)
        if node is None or im is None or not d.bitmap:
            continue
        if d.sentinel and plan.mode != "grouped":
            im = await judge_backup_guard(conn, ledger, im, d.bitmap)
        observe_bitmap(ledger, conn.name, node, d.bitmap)
        if im.state is not ImageState.VALID:
            continue
        if d.sentinel and plan.mode == "grouped":
            # Not in a grouped transaction (QEMU refuses bitmap actions there): cleared after
            # it, the sentinel is still a subset of the chain's bitmap.
            with contextlib.suppress(BitmapTuiError):
                await conn.execute("block-dirty-bitmap-clear", {"node": node.node_name,
                                                                "name": d.sentinel})
        if policy.verify == "after":
            note = await _verify_after(conn, ledger, im.id, node.file, quiet)
            if note:
                result.notes.append(f"{d.drive}: {note}")
        if d.kind == "full":
            await _retire_old_bitmaps(conn, ledger, policy.name, node, d.bitmap)


async def _verify_after(conn: QMPConn, ledger: Ledger, image_id: int, disk: str, quiet: bool) -> str:
    """``verify: after``: compare the new chain with the disk (read shared). A difference makes
    the image INVALID and breaks its bitmap (its next backup is a full).

    Only when the guest was paused from before the backup until now (``quiet``): a running
    guest's disk moved on since the backup's point. QMP ``stop`` (the guest stays paused) first
    makes QEMU flush every image, so the file holds what the guest sees.
    """
    im = ledger.image(image_id)
    if im is None:
        return ""
    if not is_local(conn) or not disk or not await asyncio.to_thread(os.path.isfile, disk):
        return f"verify skipped: the disk {disk or '?'} cannot be read from here"
    if not quiet or not await _guest_paused(conn):
        return "verify skipped: the guest was running (its disk moved on since the backup)"
    try:
        await conn.execute("stop")  # already paused: this only flushes
    except BitmapTuiError as exc:
        return f"verify skipped: could not flush the disk ({exc})"
    res = await asyncio.to_thread(compare_images, im.path, disk, force_share=True)
    if res.ok:
        return f"verified: {os.path.basename(im.path)} equals the disk"
    ledger.record_break(conn.name, im.node, im.bitmap, f"verify after: {res.detail}")
    ledger.fail_verification(im.id, f"verify after: the chain differs from the disk ({res.detail})")
    return f"verify FAILED: {res.detail}"


async def _retire_old_bitmaps(conn: QMPConn, ledger: Ledger, policy: str, node: Any,
                              current: str) -> None:
    """Remove bitmaps of ours on ``node`` that belonged to chains before ``current`` (they are
    never read again: a new chain has its own bitmap). Never touches another owner's bitmap."""
    in_use = with_companions(current_bitmaps(ledger, conn.name).get(node.node_name, set()) | {current})
    ours = with_companions({i.bitmap for i in ledger.images(connection=conn.name)
                            if i.node == node.node_name and i.policy == policy})
    for bm in node.named_bitmaps:
        name = bm.name or ""
        if name in ours and name not in in_use and ledger.issued(name) and not bm.busy:
            with contextlib.suppress(BitmapTuiError):
                await conn.execute("block-dirty-bitmap-remove", {"node": node.node_name, "name": name})


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
