//! `--json`: the documents programs read (the Python package among them): one JSON document on
//! stdout per command, format 1, exit codes as without it.

use serde_json::Value;

use crate::compare::TINY;
use crate::util::{Dir, Run};

/// The one document on stdout.
#[track_caller]
fn document(run: &Run) -> Value {
    let doc: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", run.stdout));
    assert_eq!(doc["format"], 1, "{doc}");
    doc
}

/// `stages[*].<field>`, by stage id.
fn by_stage(doc: &Value, field: &str) -> Vec<(String, Value)> {
    doc["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s[field].clone()))
        .collect()
}

#[test]
fn run_and_plan_say_what_each_stage_did_and_would_do() {
    let dir = Dir::new();
    dir.write("p.toml", TINY);
    let plan = document(&dir.mmflow(&["plan", "p.toml", "--json"]).ok());
    assert_eq!(plan["pipeline"], "tiny");
    assert_eq!(
        by_stage(&plan, "status"),
        [
            ("mosei".to_string(), "will_run".into()),
            ("model".to_string(), "after_upstream".into()),
            ("eval".to_string(), "after_upstream".into())
        ]
    );
    assert_eq!(plan["stages"][0]["reason"], "never ran");
    assert_eq!(plan["stages"][1]["upstream"], serde_json::json!(["mosei"]));
    assert!(plan["stages"][2]["inputs"]
        .as_array()
        .unwrap()
        .contains(&"model.model".into()));
    let dry = document(&dir.mmflow(&["run", "p.toml", "--dry-run", "--json"]).ok());
    assert_eq!(dry["stages"], plan["stages"]);

    let first = document(&dir.mmflow(&["run", "p.toml", "--json"]).ok());
    assert_eq!(first["failed"], false);
    for stage in first["stages"].as_array().unwrap() {
        assert_eq!(stage["outcome"], "ran", "{stage}");
        assert!(stage["seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(stage["reason"], "never ran");
    }
    let again = document(&dir.mmflow(&["run", "p.toml", "--json"]).ok());
    assert!(by_stage(&again, "outcome")
        .iter()
        .all(|(_, o)| o == "up_to_date"));
    let plan = document(&dir.mmflow(&["plan", "p.toml", "--json"]).ok());
    assert!(by_stage(&plan, "status")
        .iter()
        .all(|(_, s)| s == "up_to_date"));
}

#[test]
fn a_failed_stage_is_in_the_document_and_the_exit_code() {
    let dir = Dir::new();
    dir.write("bad.pkl", "not a pickle");
    dir.write(
        "p.toml",
        "[pipeline]\nname = \"bad\"\n[stages.mosi]\nkind = \"mmsa_pickle\"\nparams = { path = \"bad.pkl\" }\n",
    );
    let run = dir.mmflow(&["run", "p.toml", "--json"]).expect(1);
    let doc = document(&run);
    assert_eq!(doc["failed"], true);
    assert_eq!(doc["stages"][0]["outcome"], "failed");
    assert!(
        doc["stages"][0]["error"]
            .as_str()
            .unwrap()
            .contains("bad.pkl"),
        "{doc}"
    );
    // A bad config prints no document: its problems go to stderr, exit 2.
    let bad = dir
        .mmflow(&["run", "p.toml", "--json", "--set", "stages.mosi.nope=1"])
        .expect(2);
    assert!(bad.stdout.is_empty(), "{}", bad.stdout);
    assert!(bad.stderr.contains("unknown key `nope`"), "{}", bad.stderr);
}

#[test]
fn inspect_lists_a_run_and_vouches_only_for_unchanged_outputs() {
    let dir = Dir::new();
    dir.write("p.toml", TINY);
    dir.mmflow(&["run", "p.toml", "--out", "r"]).ok();
    let doc = document(&dir.mmflow(&["inspect", "r", "--json"]).ok());
    assert_eq!(doc["pipeline"], "tiny");
    assert_eq!(doc["settings"]["stages"]["model"]["kind"], "train_model");
    let eval = doc["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "eval")
        .unwrap();
    let metrics = eval["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "metrics")
        .unwrap();
    assert_eq!(metrics["reference"], "eval.metrics");
    assert_eq!(metrics["table"], "metrics");
    assert!(metrics["rows"].as_u64().unwrap() > 0);
    assert_eq!(
        metrics["verified"],
        Value::Null,
        "not checked without --verify"
    );

    let checked = document(
        &dir.mmflow(&[
            "inspect",
            "r",
            "--verify",
            "--json",
            "--table",
            "eval.metrics",
        ])
        .ok(),
    );
    assert_eq!(checked["stages"].as_array().unwrap().len(), 1);
    assert_eq!(checked["stages"][0]["outputs"][0]["verified"], true);

    let path = dir.join("r/eval/metrics.parquet");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let tampered = dir
        .mmflow(&["inspect", "r", "--verify", "--json"])
        .expect(1);
    let doc = document(&tampered);
    let outputs: Vec<&Value> = doc["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["outputs"].as_array().unwrap())
        .collect();
    let refused: Vec<&Value> = outputs
        .iter()
        .filter(|o| o["verified"] == false)
        .copied()
        .collect();
    assert_eq!(refused.len(), 1, "{doc}");
    assert_eq!(refused[0]["reference"], "eval.metrics");
    let problem = refused[0]["problem"].as_str().unwrap();
    assert!(
        problem.contains("has changed since the stage wrote it"),
        "{problem}"
    );
    assert!(tampered.stderr.contains(problem), "{}", tampered.stderr);
    assert!(outputs.iter().filter(|o| o["verified"] == true).count() >= 4);

    let unknown = dir
        .mmflow(&["inspect", "r", "--table", "eval.nope"])
        .expect(2);
    assert!(
        unknown
            .stderr
            .contains("stage `eval` has no output `nope`; its outputs are"),
        "{}",
        unknown.stderr
    );
    let not_a_run = dir.mmflow(&["inspect", "."]).expect(1);
    assert!(
        not_a_run.stderr.contains("not an mmflow run directory"),
        "{}",
        not_a_run.stderr
    );
}

#[test]
fn compare_and_sweep_documents_hold_the_comparison_table() {
    let dir = Dir::new();
    dir.write(
        "p.toml",
        &format!("{TINY}\n[sweep]\nseeds = [1, 2]\n[sweep.vary]\n\"stages.model.params.dropout\" = [0.4]\n"),
    );
    let run = dir.mmflow(&["sweep", "p.toml", "--json"]).ok();
    let sweep = document(&run);
    assert!(
        run.stderr.contains("| 0 |"),
        "the account goes to stderr: {}",
        run.stderr
    );
    let runs = sweep["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    assert!(runs
        .iter()
        .all(|r| r["finished"] == true && r["problem"].is_null()));
    assert_eq!(sweep["submitted"], false);
    let table = sweep["comparison"].as_str().unwrap();
    assert!(dir.path().join(table).is_file(), "{table}");

    let dirs: Vec<String> = runs
        .iter()
        .map(|r| r["run_dir"].as_str().unwrap().to_string())
        .collect();
    let mut args = vec!["compare"];
    args.extend(dirs.iter().map(String::as_str));
    args.extend(["--json", "--parquet", "cmp.parquet"]);
    let doc = document(&dir.mmflow(&args).ok());
    let rows = doc["rows"].as_array().unwrap();
    let written = crate::report::comparison_rows(&dir.join("cmp.parquet"));
    assert_eq!(rows.len(), written.len());
    for (row, (runs, column, mean)) in rows.iter().zip(&written) {
        assert_eq!(row["runs"].as_str().unwrap(), runs);
        let head_metric = format!(
            "{} {}",
            row["head"].as_str().unwrap(),
            row["metric"].as_str().unwrap()
        );
        assert_eq!(&head_metric, column);
        assert_eq!(row["mean"].as_f64().unwrap(), *mean);
    }
    assert!(rows.iter().all(|r| r["seeds"] == 2 && r["std"].is_f64()));
}
