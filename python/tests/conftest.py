"""Fixtures: the repository's demo pipeline, made small, run once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import mmflow

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.toml"

#: The demo at a size that runs in seconds (the same pipeline, fewer segments and epochs).
SMALL: dict[str, object] = {
    "stages.mosei.params.scale": 0.04,
    "stages.mosi.params.scale": 0.3,
    "stages.mosei_model.params.optim.epochs": 3,
}


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> mmflow.Run:
    """The small demo, run once."""
    out = tmp_path_factory.mktemp("demo") / "run"
    return mmflow.run(DEMO, set=SMALL, out=out, quiet=True)


@pytest.fixture()
def own_run(demo_run: mmflow.Run, tmp_path: Path) -> mmflow.Run:
    """A copy of the demo run this test may damage."""
    copy = tmp_path / "run"
    shutil.copytree(demo_run.path, copy, symlinks=True)
    return mmflow.Run(copy)
