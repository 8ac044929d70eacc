"""The Python API on the demo pipeline, against the installed wheel's binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmflow
from conftest import DEMO, SMALL
from mmflow._cli import toml_value


def test_the_binary_is_the_wheels() -> None:
    binary = Path(mmflow.binary())
    assert binary.is_file()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split()[-1] == mmflow.__version__


def test_run_lists_its_stages_and_what_it_did(demo_run: mmflow.Run) -> None:
    stages = {s.id: s for s in demo_run.stages}
    assert set(stages) == {
        "mosei",
        "mosi",
        "mosei_norm",
        "mosi_norm",
        "targets_random",
        "targets_kmeans",
        "targets_cosine",
        "mosei_model",
        "mosei_eval",
    }
    assert {s.status for s in stages.values()} == {"ran"}
    model = stages["mosei_model"]
    assert model.kind == "train_model"
    assert len(model.fingerprint) >= 16 and model.seconds > 0
    assert model.outputs["history"].table == "history"
    assert model.outputs["history"].is_table
    assert model.outputs["model"].table == "model" and not model.outputs["model"].is_table
    assert "mosei_eval.metrics" in demo_run.tables
    assert demo_run.stage("mosei_eval").outputs["metrics"].rows == 33


def test_a_second_run_is_up_to_date(demo_run: mmflow.Run) -> None:
    again = mmflow.run(DEMO, set=SMALL, out=demo_run.path, quiet=True)
    assert {s.status for s in again.stages} == {"up_to_date"}
    assert [s.fingerprint for s in again.stages] == [s.fingerprint for s in demo_run.stages]


def test_forcing_a_stage_runs_it_alone(own_run: mmflow.Run) -> None:
    forced = mmflow.run(DEMO, set=SMALL, out=own_run.path, force=["mosei_eval"], quiet=True)
    status = {s.id: s.status for s in forced.stages}
    assert status.pop("mosei_eval") == "ran"
    assert set(status.values()) == {"up_to_date"}


def test_settings_are_the_resolved_pipeline(demo_run: mmflow.Run) -> None:
    settings = demo_run.settings
    assert settings["pipeline"]["name"] == "demo"
    assert settings["stages"]["mosei"]["params"]["scale"] == pytest.approx(0.04)
    assert settings["stages"]["mosei_model"]["params"]["optim"]["epochs"] == 3


def test_table_and_its_conversions(demo_run: mmflow.Run) -> None:
    table = demo_run.table("mosei_eval.metrics")
    assert isinstance(table, pa.Table)
    assert table.num_rows == 33
    assert {"split", "head", "metric", "value", "ci_low", "ci_high", "n"} <= set(table.column_names)
    pd.testing.assert_frame_equal(demo_run.to_pandas("mosei_eval.metrics"), table.to_pandas())
    assert demo_run.to_polars("mosei_eval.metrics").equals(pl.from_arrow(table))
    picked = demo_run.table("mosei_model.history", columns=["epoch", "metric", "valid"])
    assert picked.column_names == ["epoch", "metric", "valid"]


def test_metrics_of_every_evaluate_stage(demo_run: mmflow.Run) -> None:
    metrics = demo_run.metrics()
    assert list(metrics.columns[:4]) == ["stage", "split", "head", "metric"]
    assert set(metrics["stage"]) == {"mosei_eval"}
    corr = metrics.query("split == 'test' and metric == 'Corr'").iloc[0]
    assert corr.ci_low <= corr.value <= corr.ci_high
    assert corr.n > 0


def test_a_tampered_table_is_refused_as_compare_refuses_it(own_run: mmflow.Run) -> None:
    path = own_run.stage("mosei_eval").outputs["metrics"].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(mmflow.TableChangedError) as refused:
        own_run.table("mosei_eval.metrics")
    assert "has changed since the stage wrote it" in str(refused.value)
    assert refused.value.exit_code == 1
    with pytest.raises(mmflow.MmflowError) as compared:
        mmflow.compare(own_run)
    assert str(refused.value) in str(compared.value)
    # The other tables are still vouched for.
    assert own_run.table("mosei_model.history").num_rows > 0


def test_an_unknown_table_names_what_there_is(demo_run: mmflow.Run) -> None:
    with pytest.raises(mmflow.ConfigError) as error:
        demo_run.table("mosei_eval.nope")
    assert "has no output `nope`" in str(error.value)
    assert "metrics" in str(error.value) and error.value.exit_code == 2
    with pytest.raises(mmflow.MmflowError, match="is not a table"):
        demo_run.table("mosei_model.model")


def test_a_bad_override_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(mmflow.ConfigError) as error:
        mmflow.run(DEMO, set={**SMALL, "stages.mosei.params.scale": -1.0}, out=tmp_path / "r")
    assert error.value.exit_code == 2
    assert "`stages.mosei.params.scale`: must be in (0, 1], got -1" in str(error.value)
    assert "nothing was run" in str(error.value)
    assert not (tmp_path / "r").exists()


def test_a_failing_stage_names_its_file(tmp_path: Path) -> None:
    pickle = tmp_path / "features.pkl"
    pickle.write_bytes(b"not a pickle")
    pipeline = tmp_path / "bad.toml"
    pipeline.write_text(
        '[pipeline]\nname = "bad"\n[stages.mosi]\nkind = "mmsa_pickle"\n'
        f"[stages.mosi.params]\npath = {toml_value(str(pickle))}\n"
    )
    with pytest.raises(mmflow.StageFailedError) as error:
        mmflow.run(pipeline, out=tmp_path / "run", quiet=True)
    assert error.value.exit_code == 1
    assert list(error.value.failed) == ["mosi"]
    assert str(pickle) in str(error.value) and "stage `mosi` failed" in str(error.value)
    with pytest.raises(mmflow.MmflowError, match="unfinished run"):
        mmflow.Run(tmp_path / "run")


def test_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(mmflow.MmflowError, match="not an mmflow run directory") as error:
        mmflow.Run(tmp_path)
    assert error.value.exit_code == 1


def test_a_sweep_compared(tmp_path: Path) -> None:
    pipeline = tmp_path / "sweep.toml"
    pipeline.write_text(
        DEMO.read_text()
        + '\n[sweep]\nseeds = [1, 2]\n[sweep.vary]\n"stages.mosei_model.params.dropout" = [0.4]\n'
    )
    swept = mmflow.sweep(pipeline, set=SMALL, out=tmp_path / "runs", quiet=True)
    assert len(swept.runs) == 4 and not swept.unfinished
    table = swept.compare()
    # Equal to the binary's own comparison table.
    written = pq.read_table(swept.folder / "comparison.parquet").to_pandas()
    pd.testing.assert_frame_equal(table, written)
    assert sorted(set(table["group"])) == [0, 1]
    assert set(table["seeds"]) == {2}
    assert table["std"].notna().all()
    assert table.query("group == 0")["delta"].eq(0).all()
    collected = mmflow.Sweep.collect(pipeline, set=SMALL, out=tmp_path / "runs")
    assert [r.path for r in collected.runs] == [r.path for r in swept.runs]


def test_compare_equals_the_cli_table(demo_run: mmflow.Run, tmp_path: Path) -> None:
    table = mmflow.compare(demo_run, split="valid")
    written = tmp_path / "comparison.parquet"
    subprocess.run(
        [
            mmflow.binary(),
            "compare",
            str(demo_run.path),
            "--split",
            "valid",
            "--parquet",
            str(written),
        ],
        check=True,
        capture_output=True,
    )
    pd.testing.assert_frame_equal(table, pq.read_table(written).to_pandas())
    assert set(table["split"]) == {"valid"}
    assert table["ci_low"].notna().all()


def test_report(own_run: mmflow.Run) -> None:
    path = own_run.report()
    assert path.name == "report.md" and path.is_file()
    assert "mosei_eval" in path.read_text()


def test_overrides_are_written_as_toml() -> None:
    assert toml_value(True) == "true"
    assert toml_value(3) == "3"
    assert toml_value(1e-5) == "1e-05"
    assert toml_value('a "b"\n') == '"a \\"b\\"\\n"'
    assert toml_value([1, "x"]) == '[1, "x"]'
    assert toml_value({"mse": 1.0}) == '{ "mse" = 1.0 }'
    with pytest.raises(ValueError):
        toml_value(float("nan"))
    with pytest.raises(TypeError):
        toml_value(object())
