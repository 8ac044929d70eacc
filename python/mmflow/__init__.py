"""mmflow from Python: run pipelines and sweeps, open their tables, compare runs.

The ``mmflow`` binary installed with this package does the work; this package calls it, reads
its JSON output and opens the Parquet tables it vouches for with pyarrow::

    import mmflow

    run = mmflow.run("configs/demo.toml")
    run.metrics().query("split == 'test' and metric == 'Corr'")
    history = run.to_pandas("mosei_model.history")
    mmflow.compare(run, "data/runs/other")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._cli import JSON_FORMAT, binary
from ._errors import ConfigError, MmflowError, StageFailedError, TableChangedError
from ._runs import COMPARISON_SCHEMA, Output, Run, Stage, Sweep, compare, report, run, sweep

try:
    __version__ = version("mmflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "COMPARISON_SCHEMA",
    "JSON_FORMAT",
    "ConfigError",
    "MmflowError",
    "Output",
    "Run",
    "Stage",
    "StageFailedError",
    "Sweep",
    "TableChangedError",
    "__version__",
    "binary",
    "compare",
    "report",
    "run",
    "sweep",
]
