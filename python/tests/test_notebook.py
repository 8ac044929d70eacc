"""The example notebook, executed headless: it cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOK = REPO / "examples" / "analysis.ipynb"


def test_the_example_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMFLOW_EXAMPLE_OUT", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), (
        "the learning curve was not drawn"
    )
    tables = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "within_noise" in tables and "ci_low" in tables
    assert (tmp_path / "demo" / "mmflow.lock").is_file()
