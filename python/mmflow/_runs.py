"""Runs, sweeps and comparisons: the binary does the work, this module reads what it says
(its ``--json`` documents) and opens the tables it vouches for with pyarrow."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import pyarrow as pa
import pyarrow.parquet as pq

from . import _cli
from ._errors import MmflowError, StageFailedError, TableChangedError

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    import pandas as pd
    import polars as pl

PathLike = Union[str, "os.PathLike[str]"]

#: The ``comparison`` table's columns and types (``mmflow compare --parquet``'s schema).
COMPARISON_SCHEMA = pa.schema(
    [
        pa.field("group", pa.uint32(), nullable=False),
        pa.field("runs", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("params", pa.string(), nullable=False),
        pa.field("seeds", pa.uint32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("head", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("std", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("delta", pa.float64(), nullable=False),
        pa.field("within_noise", pa.bool_(), nullable=False),
        pa.field("is_best", pa.bool_(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Output:
    """One output of a stage, as the run's lock records it."""

    #: Output name.
    name: str
    #: ``"stage.output"``: what :meth:`Run.table` takes.
    reference: str
    #: The file.
    path: Path
    #: What it holds: a table's kind (``"metrics"``, ``"history"``, ``"predictions"``, …) or
    #: another file's (``"model"``).
    table: str | None
    #: Rows, for tables; ``None`` for other files.
    rows: int | None
    #: Size in bytes.
    size: int

    @property
    def is_table(self) -> bool:
        """Whether it is a Parquet table (what :meth:`Run.table` reads)."""
        return self.rows is not None


@dataclass(frozen=True)
class Stage:
    """One stage of a finished run."""

    #: Stage id.
    id: str
    #: Stage kind (``"train_model"``, ``"evaluate"``, …).
    kind: str
    #: What the run that returned this object did with it: ``"ran"``, ``"restored"`` (from the
    #: run-cache) or ``"up_to_date"``; ``"completed"`` for a run opened with :class:`Run`.
    status: str
    #: Hash of everything its outputs depend on (kind, version, params, seed, inputs).
    fingerprint: str
    #: Its seed.
    seed: int
    #: Wall time of the run that computed its outputs, in seconds.
    seconds: float
    #: When that run finished.
    finished: datetime
    #: Its outputs, by name.
    outputs: Mapping[str, Output]
    #: Facts it reported (counts, sizes, warnings).
    report: Mapping[str, Any] = field(default_factory=dict)
    #: Its device, for stages whose results depend on one.
    device: str | None = None


class Run:
    """A finished run of a pipeline: its stages, settings and tables.

    Opening one checks that the directory is a run that completed with the settings saved in
    it (otherwise :class:`MmflowError` names the stages that did not); every table is read only
    after mmflow has checked it is the file its stage wrote.

    >>> run = mmflow.Run("data/runs/demo")          # doctest: +SKIP
    >>> run.metrics().query("split == 'test'")      # doctest: +SKIP
    """

    def __init__(self, path: PathLike) -> None:
        self._path = Path(path)
        self._outcomes: dict[str, str] = {}
        self._document = _cli.checked_document(["inspect", str(self._path), "--json"])

    @classmethod
    def _after(cls, path: PathLike, outcomes: Mapping[str, str]) -> Run:
        run = cls(path)
        run._outcomes = dict(outcomes)
        return run

    def __repr__(self) -> str:
        return f"Run({str(self._path)!r}, pipeline={self.pipeline!r}, stages={len(self.stages)})"

    @property
    def path(self) -> Path:
        """The run directory."""
        return self._path

    @property
    def pipeline(self) -> str:
        """The pipeline's name."""
        return str(self._document["pipeline"])

    @property
    def settings(self) -> dict[str, Any]:
        """The resolved pipeline the run completed (its ``pipeline.toml`` as a dict: templates
        expanded, overrides applied)."""
        return dict(self._document["settings"])

    @property
    def stages(self) -> list[Stage]:
        """The stages the run completed."""
        return [self._stage(entry) for entry in self._document["stages"]]

    def stage(self, id: str) -> Stage:
        """The stage ``id``."""
        for stage in self.stages:
            if stage.id == id:
                return stage
        raise KeyError(f"{self._path}: the run has no stage `{id}`")

    @property
    def tables(self) -> list[str]:
        """Every output that holds a table, as ``"stage.output"``."""
        return [o.reference for s in self.stages for o in s.outputs.values() if o.is_table]

    def table(self, reference: str, *, columns: Sequence[str] | None = None) -> pa.Table:
        """The table ``"stage.output"`` as a :class:`pyarrow.Table`, read only if the lock
        still vouches for it (its size and content hash are those its stage wrote).

        Raises:
            TableChangedError: the file changed since its stage wrote it.
            ConfigError: the run has no such output.
        """
        (output,) = self._verified([reference])
        return self._read(output, columns)

    def to_pandas(
        self, reference: str, *, columns: Sequence[str] | None = None, **kwargs: Any
    ) -> pd.DataFrame:
        """:meth:`table` as a pandas DataFrame (``kwargs`` go to ``pyarrow.Table.to_pandas``)."""
        return self.table(reference, columns=columns).to_pandas(**kwargs)

    def to_polars(self, reference: str, *, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """:meth:`table` as a polars DataFrame (needs ``pip install mmflow[polars]``)."""
        import polars as pl

        frame = pl.from_arrow(self.table(reference, columns=columns))
        assert isinstance(frame, pl.DataFrame)
        return frame

    def metrics(self) -> pd.DataFrame:
        """The metrics of every evaluate stage, tidy: one row per stage × split × head × metric,
        with ``value``, the bootstrap ``ci_low``/``ci_high``, ``n`` and any ``note`` (the
        ``metrics`` tables, a ``stage`` column first)."""
        references = [
            o.reference for s in self.stages for o in s.outputs.values() if o.table == "metrics"
        ]
        if not references:
            raise MmflowError(f"{self._path}: no evaluate stage: no metrics", exit_code=1)
        parts = []
        for output in self._verified(references):
            table = self._read(output, None)
            stage = output.reference.split(".", 1)[0]
            parts.append(table.add_column(0, "stage", pa.array([stage] * table.num_rows)))
        return pa.concat_tables(parts).to_pandas()

    def report(self, out: PathLike | None = None, *, format: str = "markdown") -> Path:
        """Writes the run's report (``mmflow report``; default folder ``<run>/mmflow.report``)
        and returns the path of ``report.md`` or ``report.html``."""
        return _report([self._path], out, format)

    def _stage(self, entry: Mapping[str, Any]) -> Stage:
        outputs = {
            o["name"]: Output(
                name=o["name"],
                reference=o["reference"],
                path=Path(o["path"]),
                table=o.get("table"),
                rows=o.get("rows"),
                size=int(o["size"]),
            )
            for o in entry["outputs"]
        }
        return Stage(
            id=entry["id"],
            kind=entry["kind"],
            status=self._outcomes.get(entry["id"], "completed"),
            fingerprint=entry["fingerprint"],
            seed=int(entry["seed"]),
            seconds=float(entry["seconds"]),
            finished=datetime.fromtimestamp(int(entry["finished_unix"]), tz=timezone.utc),
            outputs=outputs,
            report=dict(entry.get("report", {})),
            device=entry.get("device"),
        )

    def _verified(self, references: Sequence[str]) -> list[Output]:
        """The outputs named, each checked by the binary against the lock."""
        args = ["inspect", str(self._path), "--verify", "--json"]
        for reference in references:
            args += ["--table", reference]
        finished = _cli.call(args)
        document = finished.document() if finished.exit_code in (0, 1) else None
        if finished.exit_code != 0 or document is None:
            problems = [
                o["problem"]
                for s in (document or {}).get("stages", [])
                for o in s["outputs"]
                if o.get("problem")
            ]
            if problems:
                raise TableChangedError(
                    "\n".join(problems), exit_code=finished.exit_code, stderr=finished.stderr
                )
            finished.raise_for_code()
        outputs = {
            o["reference"]: o for s in (document or {}).get("stages", []) for o in s["outputs"]
        }
        return [
            Output(
                name=outputs[r]["name"],
                reference=r,
                path=Path(outputs[r]["path"]),
                table=outputs[r].get("table"),
                rows=outputs[r].get("rows"),
                size=int(outputs[r]["size"]),
            )
            for r in references
        ]

    def _read(self, output: Output, columns: Sequence[str] | None) -> pa.Table:
        if not output.is_table:
            raise MmflowError(
                f"{output.path}: output `{output.reference}` is not a table "
                f"(it holds a {output.table or 'file'})",
                exit_code=2,
            )
        table = pq.read_table(output.path, columns=list(columns) if columns else None)
        # Checked before the read; a file replaced while it was read is caught by its size.
        if output.path.stat().st_size != output.size:
            raise TableChangedError(
                f"{output.path}: output `{output.reference}` changed while it was read; re-run",
                exit_code=1,
            )
        return table


class Sweep:
    """A sweep's runs (each point × seed) and their comparison."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document

    @classmethod
    def collect(
        cls, pipeline: PathLike, *, set: _cli.Overrides = None, out: PathLike | None = None
    ) -> Sweep:
        """The sweep of ``pipeline`` as it stands, running nothing (``mmflow sweep --collect``):
        finished runs compared, the others listed with why."""
        args = ["sweep", str(pipeline), "--collect", "--json", *_cli.override_args(set)]
        if out is not None:
            args += ["--out", str(out)]
        finished = _cli.call(args)
        document = finished.document()
        if document is None:
            finished.raise_for_code()
            raise MmflowError("mmflow sweep printed no JSON document", exit_code=1)
        return cls(document)

    def __repr__(self) -> str:
        runs = self._document["runs"]
        finished = sum(1 for r in runs if r["finished"])
        return f"Sweep({str(self.folder)!r}, runs={len(runs)}, finished={finished})"

    @property
    def folder(self) -> Path:
        """The sweep's folder (``<run dir>/mmflow.sweep``)."""
        return Path(self._document["folder"])

    @property
    def runs(self) -> list[Run]:
        """The finished runs."""
        return [Run(r["run_dir"]) for r in self._document["runs"] if r["finished"]]

    @property
    def unfinished(self) -> dict[str, str]:
        """Run directory → why it is not finished."""
        return {
            str(r["run_dir"]): str(r.get("problem", ""))
            for r in self._document["runs"]
            if not r["finished"]
        }

    @property
    def points(self) -> list[dict[str, Any]]:
        """Every point × seed: ``point``, ``seed``, ``run_dir``, ``finished``, ``problem``."""
        return [dict(r) for r in self._document["runs"]]

    def compare(self, *, split: str = "test", metrics: Sequence[str] = ()) -> pd.DataFrame:
        """The finished runs compared (:func:`compare`)."""
        return compare(self, split=split, metrics=metrics)


def run(
    pipeline: PathLike,
    *,
    set: _cli.Overrides = None,
    out: PathLike | None = None,
    force: Iterable[str] = (),
    keep_going: bool = False,
    quiet: bool = False,
) -> Run:
    """Runs ``pipeline`` (``mmflow run``): every stage whose inputs, params or outputs changed,
    and nothing else.

    Args:
        pipeline: the pipeline file (TOML).
        set: overrides, ``{"stages.model.params.optim.epochs": 5}`` (values written as TOML).
        out: the run directory (default: ``data/runs/<pipeline name>``).
        force: stages to run even if they are up to date.
        keep_going: after a stage fails, run the stages that do not depend on it.
        quiet: do not pass mmflow's log lines on to ``sys.stderr``.

    Raises:
        ConfigError: the file or an override is wrong; nothing ran.
        StageFailedError: a stage failed (its message names what is at fault).
    """
    args = _pipeline_args("run", pipeline, set, out)
    for stage in [force] if isinstance(force, str) else force:
        args += ["--force", stage]
    if keep_going:
        args.append("--keep-going")
    finished, document = _outcome(args, quiet)
    failed = {s["id"]: s["error"] for s in document["stages"] if s["outcome"] == "failed"}
    if failed or finished.exit_code != 0:
        message = "\n".join(f"stage `{id}` failed: {error}" for id, error in failed.items())
        raise StageFailedError(
            message or finished.error_message(),
            exit_code=finished.exit_code,
            stderr=finished.stderr,
            failed=failed,
            document=document,
        )
    return Run._after(document["run_dir"], {s["id"]: s["outcome"] for s in document["stages"]})


def sweep(
    pipeline: PathLike,
    *,
    set: _cli.Overrides = None,
    out: PathLike | None = None,
    executor: str | None = None,
    jobs: int | None = None,
    wait: bool = False,
    quiet: bool = False,
) -> Sweep:
    """Runs the file's ``[sweep]`` (``mmflow sweep``): each point over each seed, then compares
    them. ``executor`` is ``"local"`` or ``"slurm"`` (default: the file's); ``wait`` waits for
    Slurm's jobs.

    Raises:
        ConfigError: the file, an override or a point is wrong; nothing ran.
        StageFailedError: a run failed (the others ran; :attr:`StageFailedError.document`
            lists every run and why it is unfinished).
    """
    args = _pipeline_args("sweep", pipeline, set, out)
    if executor is not None:
        args += ["--executor", executor]
    if jobs is not None:
        args += ["--jobs", str(jobs)]
    if wait:
        args.append("--wait")
    finished, document = _outcome(args, quiet)
    if finished.exit_code != 0:
        unfinished = {
            str(r["run_dir"]): str(r.get("problem", ""))
            for r in document["runs"]
            if not r["finished"]
        }
        raise StageFailedError(
            finished.error_message(),
            exit_code=finished.exit_code,
            stderr=finished.stderr,
            failed=unfinished,
            document=document,
        )
    return Sweep(document)


def _pipeline_args(
    command: str, pipeline: PathLike, overrides: _cli.Overrides, out: PathLike | None
) -> list[str]:
    """``mmflow COMMAND PIPELINE --json`` with the overrides and the run directory."""
    args = [command, str(pipeline), "--json", *_cli.override_args(overrides)]
    if out is not None:
        args += ["--out", str(out)]
    return args


def _outcome(args: list[str], quiet: bool) -> tuple[_cli.Call, Mapping[str, Any]]:
    """Runs a command that prints its document also when it fails (exit 1); raises what any
    other failure stands for (a bad config: exit 2, no document)."""
    command = args[0]
    finished = _cli.call(["--quiet", *args] if quiet else args, echo=not quiet)
    document = finished.document() if finished.exit_code in (0, 1) else None
    if document is None:
        finished.raise_for_code()
        raise MmflowError(
            f"mmflow {command} printed no JSON document", exit_code=finished.exit_code
        )
    return finished, document


def compare(
    *runs: Run | Sweep | PathLike,
    split: str = "test",
    metrics: Sequence[str] = (),
    sort: str | None = None,
) -> pd.DataFrame:
    """Finished runs side by side (``mmflow compare``), as the ``comparison`` table: one row per
    group × head × metric (runs differing only by seed form one group: ``mean``, ``std`` over
    seeds; a single run's bootstrap ``ci_low``/``ci_high``), ``delta`` from the first group,
    ``within_noise``, ``is_best``. Takes runs, run directories or sweeps (their finished runs).
    """
    directories: list[str] = []
    for item in runs:
        if isinstance(item, Sweep):
            directories += [str(r.path) for r in item.runs]
        elif isinstance(item, Run):
            directories.append(str(item.path))
        else:
            directories.append(str(item))
    if not directories:
        raise ValueError("compare() needs at least one run")
    args = ["compare", *directories, "--split", split, "--json"]
    for metric in metrics:
        args += ["--metric", metric]
    if sort is not None:
        args += ["--sort", sort]
    document = _cli.checked_document(args)
    table = pa.Table.from_pylist(list(document["rows"]), schema=COMPARISON_SCHEMA)
    return table.to_pandas()


def _report(runs: Sequence[Path], out: PathLike | None, format: str) -> Path:
    args = ["report", *[str(r) for r in runs], "--format", format]
    if out is not None:
        args += ["--out", str(out)]
    finished = _cli.call(args)
    finished.raise_for_code()
    written = finished.stdout.strip().rsplit("report written to ", 1)[-1]
    return Path(written)


def report(*runs: Run | PathLike, out: PathLike | None = None, format: str = "markdown") -> Path:
    """Writes the report of one or several runs (``mmflow report``) and returns its path;
    several runs need ``out`` (a new folder)."""
    paths = [r.path if isinstance(r, Run) else Path(r) for r in runs]
    return _report(paths, out, format)


__all__ = [
    "COMPARISON_SCHEMA",
    "Output",
    "Run",
    "Stage",
    "Sweep",
    "compare",
    "report",
    "run",
    "sweep",
]
