"""The operations layer without QEMU: validation rules, argument building, no Textual import."""

from __future__ import annotations

import pytest

from tests.kit.fake_state import jobs, nodes
from tui.core.base.limits import granularity_problem
from tui.core.model.state import ConnectionModel, Job
from tui.core.ops import bitmaps as b
from tui.core.ops import jobs as j
from tui.core.ops.bitmaps import BitmapRef


@pytest.mark.parametrize(("text", "value"), [
    ("65536", 65536), ("64K", 65536), ("64 KiB", 65536), ("1m", 1 << 20), ("2G", 2 << 30),
    ("512", 512),
])
def test_parse_granularity(text, value):
    assert b.parse_granularity(text) == value


@pytest.mark.parametrize("text", ["", "x", "-1", "1.5M", "64KB/s"])
def test_parse_granularity_rejects(text):
    with pytest.raises(ValueError):
        b.parse_granularity(text)


@pytest.mark.parametrize(("g", "ok"), [
    (512, True), (4096, True), (1 << 31, True), (256, False), (1000, False), (0, False),
    (1 << 32, False), (3 << 20, False),
])
def test_granularity_bounds_and_power_of_two(g, ok):
    assert (granularity_problem(g) is None) is ok


def test_check_add_rules():
    n = nodes()
    assert b.check_add(n["disk0"], "").refusal == "the bitmap name cannot be empty"
    assert "already exists on disk0" in (b.check_add(n["disk0"], "nightly").refusal or "")
    assert b.check_add(n["disk1"], "nightly").ok  # names are per node
    assert "1023 bytes" in (b.check_add(n["disk0"], "x" * 1024).refusal or "")
    assert "1023 bytes" in (b.check_add(n["disk0"], "é" * 512).refusal or "")  # bytes, not characters
    assert b.check_add(n["disk0"], "x" * 1023).ok
    assert "power of two" in (b.check_add(n["disk0"], "new", 3000).refusal or "")
    warn = b.check_add(n["scratch"], "p", persistent=True)
    assert warn.ok and warn.warning and "qcow2" in warn.warning
    assert b.check_add(n["disk0"], "p", persistent=True).warning is None


@pytest.mark.parametrize("action", b.ACTIONS)
def test_frozen_allows_nothing(action):
    check = b.check_action(nodes()["disk0"], "backup-in-use", action)
    assert not check.ok and "frozen" in (check.refusal or "")


@pytest.mark.parametrize("action", b.ACTIONS)
def test_inconsistent_allows_only_remove(action):
    check = b.check_action(nodes()["disk0"], "crashed", action)
    assert check.ok is (action == "remove")


def test_allowed_actions_follow_state():
    n = nodes()["disk0"]
    assert b.allowed_actions(n, n.bitmap("nightly")) == ["clear", "disable", "merge", "remove"]
    assert b.allowed_actions(n, n.bitmap("paused")) == ["clear", "enable", "merge", "remove"]
    assert b.allowed_actions(n, n.bitmap("backup-in-use")) == []
    assert b.allowed_actions(n, n.bitmap("crashed")) == ["remove"]
    assert b.allowed_actions(n, n.bitmaps[-1]) == []  # anonymous


def conn() -> ConnectionModel:
    return ConnectionModel("web", "unix:/x", nodes=nodes(), jobs=jobs())


def test_merge_never_empty_and_sources_checked():
    c = conn()
    target = BitmapRef("disk0", "nightly")
    assert "at least one" in (b.check_merge(c, target, []).refusal or "")
    assert "itself" in (b.check_merge(c, target, [target]).refusal or "")
    assert "frozen" in (b.check_merge(c, target, [BitmapRef("disk0", "backup-in-use")]).refusal or "")
    assert "inconsistent" in (b.check_merge(c, target, [BitmapRef("disk0", "crashed")]).refusal or "")
    assert "does not exist" in (b.check_merge(c, target, [BitmapRef("disk9", "x")]).refusal or "")
    assert "frozen" in (b.check_merge(c, BitmapRef("disk0", "backup-in-use"),
                                      [BitmapRef("disk1", "weekly")]).refusal or "")
    assert b.check_merge(c, target, [BitmapRef("disk1", "weekly"), BitmapRef("disk0", "paused")]).ok


def test_merge_arguments_use_node_name_pairs_for_other_nodes():
    args = b.merge_arguments(BitmapRef("disk0", "nightly"),
                             [BitmapRef("disk0", "paused"), BitmapRef("disk1", "weekly")])
    assert args == {"node": "disk0", "target": "nightly",
                    "bitmaps": ["paused", {"node": "disk1", "name": "weekly"}]}


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("1M", 1 << 20), ("512K/s", 512 << 10),
                                             ("1048576", 1 << 20)])
def test_parse_speed(text, value):
    assert j.parse_speed(text) == value


@pytest.mark.parametrize("text", ["-5", "fast", ""])
def test_parse_speed_rejects(text):
    with pytest.raises(ValueError):
        j.parse_speed(text)


@pytest.mark.parametrize(("status", "paused", "allowed"), [
    ("running", False, ["pause", "cancel", "set-speed"]),
    ("paused", True, ["resume", "cancel", "set-speed"]),
    ("pending", False, ["cancel", "finalize"]),
    ("waiting", False, ["cancel"]),
    ("concluded", False, ["dismiss"]),
])
def test_job_verbs_follow_qemu_table(status, paused, allowed):
    job = Job("j", "backup", status, paused=paused)
    assert j.allowed_actions(job) == allowed
    assert j.allowed_actions(job, read_only=True) == []


def test_finished_jobs_only_dismiss():
    for job in jobs().values():
        if job.finished:
            assert j.allowed_actions(job) == ["dismiss"]


class RecordingTarget:
    """A connection stand-in that records what would be sent."""

    def __init__(self, model: ConnectionModel, read_only: bool = False) -> None:
        from tui.core.model.store import Store

        self.name = model.name
        self.read_only = read_only
        self.store = Store()
        self.store.add_connection(model.name, model.address)
        self.store.update(model.name, lambda c: model)
        self.sent: list[tuple[str, dict]] = []

    @property
    def model(self) -> ConnectionModel:
        return self.store.connection(self.name)

    async def execute(self, command, arguments=None):
        self.sent.append((command, arguments))
        return {}


async def test_dismissing_a_vanished_job_forgets_it_without_sending():
    target = RecordingTarget(conn())
    out = await j.act(target, "full-2", "dismiss")  # status null: QEMU no longer has it
    assert out.ok and not out.sent and target.sent == []
    assert "full-2" not in target.model.jobs


async def test_dismissing_a_concluded_job_sends_job_dismiss():
    model = conn()
    model = ConnectionModel(model.name, model.address, commands=frozenset({"job-pause"}),
                            nodes=model.nodes, jobs={"c": Job("c", "backup", "concluded")})
    target = RecordingTarget(model)
    out = await j.act(target, "c", "dismiss")
    assert out.ok and target.sent == [("job-dismiss", {"id": "c"})]
    assert "c" not in target.model.jobs


async def test_old_qemu_uses_block_job_verbs():
    model = ConnectionModel("old", "unix:/x", commands=frozenset({"query-block-jobs"}),
                            jobs={"j": Job("j", "backup", "running", paused=True)})
    target = RecordingTarget(model)
    await j.act(target, "j", "cancel")
    assert target.sent == [("block-job-cancel", {"device": "j", "force": True})]


async def test_ops_refuse_in_read_only_without_sending():
    target = RecordingTarget(conn(), read_only=True)
    outs = [await b.act(target, "disk0", "nightly", "clear"),
            await b.add(target, "disk0", "new"),
            await b.merge(target, BitmapRef("disk0", "nightly"), [BitmapRef("disk1", "weekly")]),
            await j.act(target, "inc-0", "cancel"),
            await j.set_speed(target, "inc-0", 0)]
    assert all(not o.ok and not o.sent and "read-only" in o.message for o in outs)
    assert target.sent == []


@pytest.mark.parametrize("speed,text", [(0, "0"), (524288, "512K"), (2**20, "1M"),
                                        (3 * 2**30, "3G"), (1000, "1000")])
def test_speed_text_is_read_back_by_parse_speed(speed, text):
    assert j.speed_text(speed) == text and j.parse_speed(text) == speed
