"""The retention, freeze and guest-agent keys in the config file."""

from __future__ import annotations

import pytest

from tui.core.base.errors import ConfigError
from tui.core.chains.policy import Keep
from tui.core.config import load_config

BASE = "connections:\n  vm0: {address: unix:/tmp/q.sock%s}\npolicies:\n  p: {connection: vm0, " \
       "drives: [drive0], bitmap: bm, target_dir: /b%s}\n"


def config(tmp_path, conn="", pol=""):
    path = tmp_path / "c.yaml"
    path.write_text(BASE % (conn, pol))
    return load_config(path)


def test_keys_parse(tmp_path):
    cfg = config(tmp_path, ", guest_agent: unix:/run/qga.sock",
                 ", keep: {last: 2, monthly: 3}, full_every: 7, prune: auto, freeze: true")
    pol = cfg.policies["p"]
    assert pol.keep == Keep(last=2, monthly=3) and pol.full_every == 7
    assert pol.prune == "auto" and pol.freeze is True
    assert cfg.connections[0].guest_agent == "unix:/run/qga.sock"
    assert config(tmp_path).policies["p"].keep is None


@pytest.mark.parametrize(("conn", "pol", "message"), [
    ("", ", keep: {lst: 2}", "c.yaml:4: policies.p: 'keep' has unknown rule 'lst'"),
    ("", ", keep: {last: -1}", "'keep.last' must be a non-negative integer"),
    ("", ", full_every: 0", "'full_every' must be a positive integer"),
    ("", ", prune: auto", "'prune: auto' needs 'keep'"),
    ("", ", freeze: yes please", "'freeze' must be true or false"),
    (", guest_agent: qga.sock", "", "connections.vm0.guest_agent: guest agent address 'qga.sock'"),
])
def test_bad_values_name_the_line(tmp_path, conn, pol, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config(tmp_path, conn, pol)


