"""The service's settings and the messages that need no QEMU: ``schedule`` (a cron expression,
read by croniter), ``jitter``, the notification keys, each bad value one line with file:line:key;
where a policy's messages go; missed/skipped runs; a VM unreachable for too long."""

from __future__ import annotations

import pytest

from tests.kit.common import one_policy_config
from tui.core.base.errors import ConfigError
from tui.core.config import ServiceConfig
from tui.service.notify import UnreachableWatch, schedule_message, target_for

config = one_policy_config


def test_settings_parse_and_route(tmp_path):
    cfg = config(tmp_path, "    notify: ['ntfy://host/topic']\n    notify_command: [mail, ops]\n"
                 "service:\n  notify: ['json://127.0.0.1:9/x']\n  notify_command: [logger]\n"
                 "  unreachable_after: 120\n")
    assert cfg.service == ServiceConfig(notify=("json://127.0.0.1:9/x",), notify_command=("logger",),
                                        unreachable_after=120)
    pol = cfg.policies["p"]
    assert (pol.notify, pol.notify_command) == (("ntfy://host/topic",), ("mail", "ops"))
    target = target_for(cfg.service, pol)
    assert target.urls == ("json://127.0.0.1:9/x", "ntfy://host/topic")
    assert target.command == ("mail", "ops")
    assert target_for(cfg.service, None).command == ("logger",)
    assert not target_for(ServiceConfig(), config(tmp_path, "").policies["p"])


def test_schedule_and_jitter_parse(tmp_path):
    pol = config(tmp_path, "    schedule: '0 2 * * *'\n    jitter: 300\n").policies["p"]
    assert (pol.schedule, pol.jitter) == ("0 2 * * *", 300)
    seconds = config(tmp_path, "    schedule: '* * * * * */5'\n").policies["p"]
    assert seconds.schedule == "* * * * * */5" and seconds.jitter == 0
    assert config(tmp_path, "").policies["p"].schedule is None


@pytest.mark.parametrize(("extra", "message"), [
    ("    schedule: '61 2 * * *'\n", "c.yaml:8: policies.p.schedule: not a valid cron expression"),
    ("    schedule: 'nightly'\n", "c.yaml:8: policies.p.schedule: must be a cron expression of 5 "
                                  "fields, or 6 with seconds last"),
    ("    schedule: 5\n", "c.yaml:8: policies.p.schedule: must be a cron expression"),
    ("    schedule: '0 2 * * *'\n    jitter: -1\n", "c.yaml:9: policies.p.jitter: must be between"),
    ("    notify: [ops@example.com]\n", "c.yaml:8: policies.p.notify: 'ops@example.com' is not"),
    ("    notify_command: []\n", "c.yaml:8: policies.p.notify_command: needs the command"),
    ("service:\n  unreachable_after: 0\n", "c.yaml:9: service.unreachable_after: "),
    ("service:\n  notfy: []\n", "c.yaml:9: service.notfy: unknown key"),
])
def test_bad_settings_name_file_line_and_key(tmp_path, extra, message):
    with pytest.raises(ConfigError) as bad:
        config(tmp_path, extra)
    assert message in str(bad.value), str(bad.value)


def test_schedule_message_names_vm_policy_and_next_step():
    title, body = schedule_message("vm1", "nightly", "skipped: the run before was still going")
    assert title == "bitmap-tui: vm1 policy nightly: scheduled run skipped"
    assert body.startswith("VM vm1, policy nightly: skipped: the run before was still going\n")
    assert "next: " in body


def test_unreachable_is_told_once_after_the_bound():
    watch = UnreachableWatch(after=300)
    assert watch.update("vm1", False, "connection refused", now=1000) is None
    assert watch.update("vm1", False, "connection refused", now=1299) is None
    title, body = watch.update("vm1", False, "connection refused", now=1300)
    assert title == "bitmap-tui: vm1 unreachable"
    assert body.startswith("VM vm1 has been unreachable for 300 s: connection refused\nnext: ")
    assert watch.update("vm1", False, "connection refused", now=2000) is None  # told already
    assert watch.update("vm1", True, "", now=2001) is None
    assert watch.update("vm1", False, "gone", now=2002) is None  # a new outage starts now
    assert watch.update("vm1", False, "gone", now=2302) is not None
