//! Every table mmflow writes opens in pyarrow and polars (the tools analysts use), and every
//! table they write opens in mmflow.
//!
//! Needs a Python with pyarrow and polars (`benches/requirements.txt`): `MMFLOW_PYTHON`
//! names it (default `python3`). Without them the test says so and passes, unless
//! `MMFLOW_REQUIRE_PYTHON=1` (as CI sets), where it fails.

use std::process::Command;

use crate::util::{Dir, SMALL};

fn python() -> Option<String> {
    let python = std::env::var("MMFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import pyarrow, polars"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("MMFLOW_REQUIRE_PYTHON").as_deref() != Ok("1"),
        "MMFLOW_REQUIRE_PYTHON=1 but `{python}` lacks pyarrow/polars"
    );
    eprintln!("interop: skipped ({python} lacks pyarrow/polars; see benches/requirements.txt)");
    None
}

#[test]
fn pyarrow_and_polars_read_every_table() {
    let Some(python) = python() else { return };
    let dir = Dir::new();
    dir.write("p.toml", &format!("{SMALL}{TRAINED}"));
    dir.mmflow(&["run", "p.toml"]).ok();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/check_tables.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(dir.join("data/runs/small"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checked 24 tables"), "{stdout}");
}

/// Parquet as other tools write it: pyarrow's defaults, version 2 data pages, neither
/// dictionaries nor compression, delta and byte-stream-split encodings, a page index with
/// small pages, long strings, nested types, an empty table, polars. Prints `<file> <rows>`.
const FOREIGN_TABLES: &str = r#"
import decimal
import numpy as np, polars as pl, pyarrow as pa, pyarrow.parquet as pq
n = 3000
t = pa.table({
    "i": pa.array(np.arange(n, dtype=np.int64)),
    "f": pa.array(np.linspace(0, 1, n, dtype=np.float32)),
    "s": pa.array([f"word{i % 37}" for i in range(n)]),
    "b": pa.array([i % 3 == 0 for i in range(n)]),
    "l": pa.array([[1.0, 2.0] * (i % 4) for i in range(n)], type=pa.list_(pa.float64())),
    "st": pa.array([{"a": i, "b": [str(i)]} for i in range(n)]),
    "fsl": pa.array([[float(i)] * 3 for i in range(n)], type=pa.list_(pa.float32(), 3)),
    "n": pa.array([None if i % 5 else i for i in range(n)], type=pa.int32()),
    "bin": pa.array([bytes([i % 256]) * (i % 7) for i in range(n)]),
    "ts": pa.array(np.arange(n).astype("datetime64[ms]")),
    "dec": pa.array([decimal.Decimal(i) / 100 for i in range(n)], type=pa.decimal128(10, 2)),
})
files = {
    "default.parquet": {},
    "v2.parquet": {"data_page_version": "2.0", "compression": "zstd", "row_group_size": 700},
    "plain.parquet": {"use_dictionary": False, "compression": "none", "write_statistics": False},
    "page_index.parquet": {"write_page_index": True, "data_page_size": 1024},
    "encodings.parquet": {"use_dictionary": False, "column_encoding": {
        "f": "BYTE_STREAM_SPLIT", "i": "DELTA_BINARY_PACKED", "s": "DELTA_BYTE_ARRAY",
        "bin": "DELTA_LENGTH_BYTE_ARRAY"}},
}
for name, options in files.items():
    pq.write_table(t, name, **options)
pq.write_table(pa.table({"long": ["x" * (3000 + i) for i in range(50)]}), "long.parquet",
               use_dictionary=False, write_page_index=True, data_page_size=4096)
pq.write_table(pa.table({"x": pa.array([], type=pa.int32())}), "empty.parquet")
pl.from_arrow(t.drop(["dec"])).write_parquet("polars.parquet")
for name in [*files, "long.parquet", "empty.parquet", "polars.parquet"]:
    print(name, pq.ParquetFile(name).metadata.num_rows)
"#;

/// The guard `mmflow show` opens files through refuses none of them, and reads them through.
#[test]
fn mmflow_shows_the_parquet_files_pyarrow_and_polars_write() {
    let Some(python) = python() else { return };
    let dir = Dir::new();
    let out = Command::new(&python)
        .args(["-c", FOREIGN_TABLES])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{listed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = 0;
    for line in listed.lines() {
        let (file, rows) = line.split_once(' ').expect("`<file> <rows>`");
        let run = dir.mmflow(&["show", "-n", "3", file]).ok();
        assert!(
            run.stdout.contains(&format!("\n{rows} rows\n")),
            "{file}: {}",
            run.stdout
        );
        files += 1;
    }
    assert_eq!(files, 8, "{listed}");
}

/// Target selection, adapters, a model and its evaluation on top of [`SMALL`], tiny.
const TRAINED: &str = r#"
[stages.targets]
kind = "select_targets"
inputs = { source_segments = "mosi.segments", source = ["mosi_norm.text", "mosi_norm.visual"], target_segments = "mosei.segments", target = ["mosei_norm.text", "mosei_norm.visual"] }
params = { method = "cosine", match_on = ["text"], adapt = ["visual"] }

[stages.adapters]
kind = "train_adapters"
inputs = { source = ["mosi_norm.visual"], targets = ["targets.visual"] }
params = { mlp = { hidden = [16] }, optim = { epochs = 2 } }

[stages.adapted]
kind = "apply_adapters"
inputs = { adapters = "adapters.adapters", features = ["mosi_norm.visual"] }

[stages.model]
kind = "train_model"
inputs = { segments = "mosei.segments", features = ["mosei_norm.text", "mosei_norm.audio", "mosei_norm.visual"] }
params = { optim = { epochs = 2 } }

[stages.eval]
kind = "evaluate"
inputs = { model = "model.model", segments = "mosi.segments", features = ["mosi_norm.text", "mosi_norm.audio", "mosi_norm.visual"], adapters = "adapters.adapters" }
params = { bootstrap = 50 }
"#;
