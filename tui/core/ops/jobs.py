"""Job operations: pause, resume, cancel, set speed, finalize, dismiss.

Which verb a job accepts depends on its status (QEMU's job verb table: docs/qmp-facts.md); we check it
first so the operator sees why, and fall back to the ``block-job-*`` verbs on QEMUs older than 3.0.
"""

from __future__ import annotations

import re
from typing import Any

from tui.core.model import reducer
from tui.core.model.state import Job, JobResult
from tui.core.ops.common import Check, Outcome, Target, refused, run

# Statuses in which QEMU accepts each verb (7.2 JobVerbTable).
VERB_STATUSES: dict[str, frozenset[str]] = {
    "cancel": frozenset({"created", "running", "paused", "ready", "standby", "waiting", "pending"}),
    "pause": frozenset({"created", "running", "paused", "ready", "standby"}),
    "resume": frozenset({"created", "running", "paused", "ready", "standby"}),
    "set-speed": frozenset({"created", "running", "paused", "ready", "standby"}),
    "finalize": frozenset({"pending"}),
    "dismiss": frozenset({"concluded"}),
}
ACTIONS = ("pause", "resume", "cancel", "set-speed", "finalize", "dismiss")

_RATE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?(?:/s)?\s*$", re.IGNORECASE)


def parse_speed(text: str) -> int:
    """'0' (unlimited), '1048576', '1M', '512K/s' → bytes per second. ValueError if not a rate."""
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"speed '{text.strip()}' is not a rate (e.g. 0, 512K, 10M)")
    return int(m.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2).lower()]


def speed_text(speed: int) -> str:
    """A speed as :func:`parse_speed` reads it, in the largest exact unit: 524288 → '512K'."""
    for suffix, unit in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if speed and speed % unit == 0:
            return f"{speed // unit}{suffix}"
    return str(speed)


def gone(job: Job) -> bool:
    """QEMU no longer knows this job: only the view remembers it."""
    return job.status == "null" or job.result is JobResult.LOST


def check_job(job: Job | None, action: str) -> Check:
    """Is ``action`` possible for this job in its current status?"""
    if job is None:
        return Check(refusal="no such job")
    if action == "dismiss":
        if job.finished or job.status == "concluded":
            return Check()
        return Check(refusal=f"job '{job.id}' is {job.status}: only a finished job can be dismissed")
    if job.finished:
        return Check(refusal=f"job '{job.id}' has already ended ({job.result or job.status})")
    if job.status not in VERB_STATUSES[action]:
        return Check(refusal=f"job '{job.id}' is {job.status}: it cannot {action.replace('-', ' ')} now")
    if action == "pause" and job.paused:
        return Check(refusal=f"job '{job.id}' is already paused")
    if action == "resume" and not job.paused:
        return Check(refusal=f"job '{job.id}' is not paused")
    return Check()


def allowed_actions(job: Job, read_only: bool = False) -> list[str]:
    """The job actions worth offering now (none in read-only mode)."""
    if read_only:
        return []
    return [a for a in ACTIONS if check_job(job, a).ok]


def _verb(target: Target, verb: str, job_id: str) -> tuple[str, dict[str, Any]]:
    # query-jobs and job-* arrived together in 3.0; older QEMUs only have block-job-* by device.
    if "job-pause" in target.model.commands or not target.model.commands:
        return f"job-{verb}", {"id": job_id}
    args: dict[str, Any] = {"device": job_id}
    if verb == "cancel":
        args["force"] = True  # a user-paused job refuses a plain block-job-cancel (docs/qmp-facts.md)
    return f"block-job-{verb}", args


async def act(target: Target, job_id: str, action: str) -> Outcome:
    """pause / resume / cancel / finalize / dismiss one job."""
    if action not in ACTIONS or action == "set-speed":
        return refused(f"unknown job action '{action}'")
    job = target.model.jobs.get(job_id)
    check = check_job(job, action)
    if not check.ok or job is None:
        return refused(check.refusal or "no such job")
    if action == "dismiss" and gone(job):
        # Nothing left in QEMU to dismiss: forget it from view (no command is sent).
        target.store.update(target.name, lambda c: reducer.dismiss_job(c, job_id))
        return Outcome(ok=True, message=f"job '{job_id}' removed from view")
    command, args = _verb(target, action, job_id)
    past = {"pause": "paused", "resume": "resumed", "cancel": "cancel requested",
            "finalize": "finalized", "dismiss": "dismissed"}[action]
    outcome = await run(target, command, args, f"job '{job_id}' {past}")
    if action == "dismiss" and outcome.ok:
        target.store.update(target.name, lambda c: reducer.dismiss_job(c, job_id))
    elif action == "dismiss" and outcome.sent and "not found" in outcome.message.lower():
        # QEMU auto-dismissed it while we were not looking.
        target.store.update(target.name, lambda c: reducer.dismiss_job(c, job_id))
        return Outcome(ok=True, message=f"job '{job_id}' removed from view", sent=True)
    return outcome


async def set_speed(target: Target, job_id: str, speed: int) -> Outcome:
    """``block-job-set-speed`` (0 = unlimited)."""
    if speed < 0:
        return refused("the speed cannot be negative")
    job = target.model.jobs.get(job_id)
    check = check_job(job, "set-speed")
    if not check.ok:
        return refused(check.refusal or "")
    from tui.core.base.format import human_rate

    label = human_rate(speed) if speed else "unlimited"
    return await run(target, "block-job-set-speed", {"device": job_id, "speed": speed},
                     f"job '{job_id}' speed set to {label}")
