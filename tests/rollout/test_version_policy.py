"""The explicit version policy a rollout can need: exactly the stable and the candidate."""

from __future__ import annotations

from pathlib import Path

import pytest

from two_tower.triton_config import render_config, write_configs


def test_specific_versions_policy(tmp_path: Path) -> None:
    text = render_config(versions=[7, 3])
    assert "version_policy: { specific { versions: [ 3, 7 ] } }" in text
    assert "num_versions" not in text
    assert "latest { num_versions: 2 }" in render_config()
    cpu, gpu = write_configs(tmp_path, versions=[1, 2])
    assert "specific { versions: [ 1, 2 ] }" in cpu.read_text()
    assert "specific { versions: [ 1, 2 ] }" in gpu.read_text()


@pytest.mark.parametrize("versions", [[], [0, 1]])
def test_bad_versions_refused(versions: list[int]) -> None:
    with pytest.raises(ValueError, match="versions"):
        render_config(versions=versions)
