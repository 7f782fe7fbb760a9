"""An idle connection's node poll parses QEMU's replies only when they changed: the same replies
leave the model as it is without parsing; any change (a new bitmap, more dirty bytes) is parsed
and shown at once."""

from __future__ import annotations

from typing import Any

from tests.kit.common import requires_qemu
from tui.core.qmp import polling

pytestmark = requires_qemu


async def test_unchanged_node_replies_are_not_parsed_again(make_sandbox, fleet_for, monkeypatch):
    sb = await make_sandbox(drives=1)
    await sb.add_bitmap(0, "bm")
    fleet = await fleet_for(sb)
    conn = fleet["vm0"]
    parsed: list[Any] = []
    real = polling.parse_nodes

    def counting(named: Any, blocks: Any) -> Any:
        parsed.append(1)
        return real(named, blocks)

    monkeypatch.setattr(polling, "parse_nodes", counting)
    await conn.refresh_nodes()  # whatever the fleet's own polls parsed before: a baseline
    model = conn.model
    parsed.clear()
    await conn.refresh_nodes()
    await conn.refresh_nodes()
    assert parsed == [] and conn.model is model
    await sb.write(0, 0, "1M")
    await conn.refresh_nodes()
    assert len(parsed) == 1
    assert conn.model.nodes["disk0"].bitmap("bm").count == 1 << 20
    await sb.add_bitmap(0, "bm2")
    await conn.refresh_nodes()
    assert conn.model.nodes["disk0"].bitmap("bm2") is not None
