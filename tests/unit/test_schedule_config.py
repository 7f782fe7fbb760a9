"""``policies.NAME.schedule`` (a cron expression, read by croniter) and ``jitter``: parsed, and a
bad one is one config line naming file, line and key."""

from __future__ import annotations

import pytest

from tui.core.base.errors import ConfigError
from tui.core.config import load_config

BASE = ("connections:\n  vm0: unix:/run/q.sock\npolicies:\n  p:\n    connection: vm0\n"
        "    drives: [drive0]\n    target_dir: /b\n%s")


def config(tmp_path, extra: str):
    path = tmp_path / "c.yaml"
    path.write_text(BASE % extra)
    return load_config(path)


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
])
def test_bad_schedules_name_file_line_and_key(tmp_path, extra, message):
    with pytest.raises(ConfigError) as bad:
        config(tmp_path, extra)
    assert message in str(bad.value), str(bad.value)
    assert "\n" not in str(bad.value)
