"""Fixtures of the tests on a real QEMU."""

from __future__ import annotations

import os

import pytest
import yaml


@pytest.fixture
def setup(tmp_path):
    """``cfg, env = setup(sb, **policy_settings)``: a config file with two policies on ``sb``
    (``nightly``, and ``slow`` speed-limited) and an environment whose XDG directories are the
    test's own, for the headless commands in a subprocess."""

    def make(sb, **extra):
        cfg = tmp_path / "config.yaml"
        base = {"connection": "vm0", "drives": ["drive0", "drive1"], "bitmap": "bm",
                "target_dir": str(sb.dir), **extra}
        cfg.write_text(yaml.safe_dump({"connections": {"vm0": sb.address}, "policies": {
            "nightly": base,
            "slow": {**base, "speed": 256 * 1024},
        }}))
        env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"),
               "XDG_CONFIG_HOME": str(tmp_path / "nocfg")}
        return cfg, env
    return make
