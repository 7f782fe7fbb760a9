"""The service's pieces without QEMU: the client stream cut into JSON objects, the ``service:``
config section, the rights of a peer, and the system-wide config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tui.core.base import paths
from tui.core.base.errors import ConfigError
from tui.core.config import Principal, load_config
from tui.core.qmp.served import VIEWER, role_in
from tui.service.rights import Peer, Role, role_of
from tui.service.wire import BadInput, JsonStream


def test_stream_of_values_without_newlines_in_any_pieces():
    messages = [{"execute": "query-status", "id": 1},
                {"execute": "x", "arguments": {"s": 'a}"b\\"{[', "n": [1, {"k": []}]}},
                {"execute": "query-name", "id": "\u00e9\\"}]
    data = "".join(json.dumps(m) for m in messages).encode()
    for size in (1, 3, 7, len(data)):
        stream = JsonStream()
        got = []
        for i in range(0, len(data), size):
            got += stream.feed(data[i:i + size])
        assert got == messages


def test_stream_refuses_what_is_not_qmp():
    for junk in (b"garbage", b"[1]", b'"text"', b"{}}", b'{"a": tru}'):
        with pytest.raises(BadInput):
            JsonStream().feed(junk)
    big = JsonStream(limit=1000)
    with pytest.raises(BadInput, match="larger than 1000 bytes"):
        big.feed(b'{"execute": "' + b"a" * 2000)


def test_service_section(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("service:\n  socket_dir: run\n  operators: [group:ops, user:alice]\n"
                   "  viewers: [staff]\n  audit_log: /var/log/bt.jsonl\n")
    service = load_config(cfg).service
    assert service.socket_for("vm1") == tmp_path / "run" / "vm1.qmp"
    assert service.operators == (Principal("group", "ops"), Principal("user", "alice"))
    assert service.viewers == (Principal("group", "staff"),)
    assert service.audit_path() == Path("/var/log/bt.jsonl")
    cfg.write_text("service:\n  viewers: [role:x]\n")
    with pytest.raises(ConfigError, match=r"config.yaml:2: service.viewers: .*group:NAME or user:NAME"):
        load_config(cfg)


def test_roles_by_user_and_group():
    ops, viewers = (Principal("group", "ops"),), (Principal("user", "bob"),)
    def peer(user, *groups, uid=4242):
        return Peer(uid, uid, 1, user, frozenset(groups))
    assert role_of(peer("alice", "ops"), ops, viewers) is Role.OPERATOR
    assert role_of(peer("bob", "staff"), ops, viewers) is Role.VIEWER
    assert role_of(peer("eve", "staff"), ops, viewers) is None
    assert role_of(peer("root", uid=0), ops, viewers) is Role.OPERATOR


def test_a_role_this_version_does_not_know_gives_a_viewer_s_rights():
    assert role_in({"bitmap-tui": {"role": "operator"}}) == "operator"
    assert role_in({"bitmap-tui": {"role": "admin"}}) == VIEWER
    assert role_in({"version": {}}) is None


def test_the_system_config_is_read_when_the_user_has_none(tmp_path, monkeypatch):
    system = tmp_path / "etc-config.yaml"
    system.write_text("connections:\n  vm1: unix:/run/vm1.qmp\n")
    monkeypatch.setattr("tui.core.config.SYSTEM_CONFIG_PATH", system)
    assert [c.name for c in load_config().connections] == ["vm1"]
    own = paths.default_config_path()
    own.parent.mkdir(parents=True)
    own.write_text("connections:\n  mine: unix:/run/mine.qmp\n")
    assert [c.name for c in load_config().connections] == ["mine"]
