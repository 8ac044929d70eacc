//! Every table mmflow writes opens in pyarrow and polars (the tools analysts use).
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
