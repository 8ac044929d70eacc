//! The command line: validation, runs, caching, exit codes, crash safety, `show`.

use std::time::Duration;

use crate::util::{parquet_files, Dir, SMALL};

#[test]
fn validate_reports_every_problem_with_file_line_and_column() {
    let dir = Dir::new();
    dir.write(
        "p.toml",
        r#"[pipeline]
name = "bad"

[stages.mosei]
kind = "synthetic"
params = { profile = "mosei", scal = 0.1, scale = 7 }

[stages.norm]
kind = "normalise"

[stages.norm2]
kind = "normalize"
inputs = { segments = "mosei.text", features = ["mosei.txt"] }
"#,
    );
    let run = dir.mmflow(&["validate", "p.toml"]).expect(2);
    for expected in [
        "p.toml:6:31: `stages.mosei.params.scal`: unknown key `scal`",
        "p.toml:6:", // scale out of range
        "must be in (0, 1], got 7",
        "p.toml:9:8: `stages.norm.kind`: unknown stage kind `normalise` (did you mean `normalize`?)",
        "input `segments` takes `segments` tables, but `mosei.text` is a `features` table",
        "stage `mosei` has no output `txt` (did you mean `text`?)",
        "nothing was run",
    ] {
        assert!(run.stderr.contains(expected), "missing `{expected}` in:\n{}", run.stderr);
    }
    assert!(!dir.join("data").exists(), "nothing may be written");
    // The same problems through `run`.
    dir.mmflow(&["run", "p.toml"]).expect(2);
    assert!(!dir.join("data").exists());
}

#[test]
fn bad_files_and_overrides_exit_2_with_a_position() {
    let dir = Dir::new();
    dir.write("broken.toml", "[pipeline\nname = 1\n");
    let run = dir.mmflow(&["validate", "broken.toml"]).expect(2);
    assert!(run.stderr.contains("broken.toml:1:"), "{}", run.stderr);
    let run = dir.mmflow(&["validate", "missing.toml"]).expect(2);
    assert!(
        run.stderr.contains("missing.toml") && run.stderr.contains("cannot read"),
        "{}",
        run.stderr
    );
    dir.write("p.toml", SMALL);
    let run = dir
        .mmflow(&[
            "validate",
            "p.toml",
            "--set",
            "stages.mosi.params.scale=2",
            "--set",
            "stages.mosi.params.nope=1",
        ])
        .expect(2);
    assert!(
        run.stderr.contains("--set stages.mosi.params.scale=2"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("--set stages.mosi.params.nope=1: `stages.mosi.params.nope`: unknown key"),
        "{}",
        run.stderr
    );
    dir.mmflow(&[
        "validate",
        "p.toml",
        "--set",
        "stages.mosi.params.scale=0.5",
    ])
    .ok();
}

#[test]
fn rerunning_an_unchanged_pipeline_runs_nothing_and_a_change_reruns_only_dependents() {
    let dir = Dir::new();
    dir.write("p.toml", SMALL);
    let first = dir.mmflow(&["run", "p.toml"]).ok();
    for stage in ["mosei", "mosi", "mosei_norm", "mosi_norm"] {
        assert!(first.says(stage, "ran in"), "{}", first.stdout);
    }
    let run_dir = dir.join("data/runs/small");
    assert!(run_dir.join("mmflow.lock").is_file());
    assert!(run_dir.join("pipeline.toml").is_file());
    for table in [
        "mosei/segments",
        "mosei/text",
        "mosei/audio",
        "mosei/visual",
        "mosei_norm/stats",
        "mosei_norm/visual",
    ] {
        assert!(
            run_dir.join(format!("{table}.parquet")).is_file(),
            "{table}"
        );
    }
    let second = dir.mmflow(&["run", "p.toml"]).ok();
    for stage in ["mosei", "mosi", "mosei_norm", "mosi_norm"] {
        assert!(second.says(stage, "up to date"), "{}", second.stdout);
    }
    let plan = dir
        .mmflow(&[
            "plan",
            "p.toml",
            "--set",
            "stages.mosi_norm.params.clip=3.0",
        ])
        .ok();
    assert!(
        plan.stdout
            .contains("mosi_norm (normalize)  will run: params changed: clip: null → 3.0"),
        "{}",
        plan.stdout
    );
    let third = dir
        .mmflow(&["run", "p.toml", "--set", "stages.mosi_norm.params.clip=3.0"])
        .ok();
    assert!(third.says("mosi_norm", "ran in"), "{}", third.stdout);
    for stage in ["mosei", "mosi", "mosei_norm"] {
        assert!(third.says(stage, "up to date"), "{}", third.stdout);
    }
    // An output deleted on disk brings its stage back: from the run-cache, which holds it,
    // or by running it where the cache is off; the plan says which.
    std::fs::remove_file(run_dir.join("mosi/visual.parquet")).unwrap();
    let dry = dir.mmflow(&["run", "p.toml", "--dry-run"]).ok();
    assert!(
        dry.stdout.contains(
            "mosi (synthetic)  will be restored from the run-cache: output `visual` is missing"
        ),
        "{}",
        dry.stdout
    );
    let dry = dir
        .mmflow(&[
            "run",
            "p.toml",
            "--dry-run",
            "--set",
            "pipeline.run_cache=false",
        ])
        .ok();
    assert!(
        dry.stdout
            .contains("mosi (synthetic)  will run: output `visual` is missing"),
        "{}",
        dry.stdout
    );
    // Without the run-cache, it is computed again; with it (the default), its outputs come
    // back from the cache, where the first run put them.
    let fourth = dir
        .mmflow(&["run", "p.toml", "--set", "pipeline.run_cache=false"])
        .ok();
    assert!(fourth.says("mosi", "ran in"), "{}", fourth.stdout);
    assert!(
        fourth.says("mosi_norm", "ran in"),
        "the lock records clip=null, the file clip=3: {}",
        fourth.stdout
    );
    std::fs::remove_file(run_dir.join("mosi/visual.parquet")).unwrap();
    let restored = dir
        .mmflow(&["run", "p.toml", "--set", "stages.mosi_norm.params.clip=3.0"])
        .ok();
    assert!(
        restored.says("mosi", "restored from the run-cache"),
        "{}",
        restored.stdout
    );
    assert!(
        restored.says("mosi_norm", "restored from the run-cache"),
        "clip=3 ran in the third run: {}",
        restored.stdout
    );
    // --force and --out.
    let forced = dir.mmflow(&["run", "p.toml", "--force", "mosei"]).ok();
    assert!(forced.says("mosei", "forced"), "{}", forced.stdout);
    assert!(
        forced.says("mosei_norm", "up to date"),
        "deterministic output: {}",
        forced.stdout
    );
    dir.mmflow(&["run", "p.toml", "--force", "nope"]).expect(2);
    dir.mmflow(&["run", "p.toml", "--out", "elsewhere"]).ok();
    assert!(dir.join("elsewhere/mosi_norm/text.parquet").is_file());

    // `cache prune`: counted in a dry run; everything used today survives a week's cutoff;
    // `--older-than 0` empties the cache and the run directory keeps its files.
    let cache = dir.join("data/runs/.mmflow-cache");
    let dry = dir
        .mmflow(&["cache", "prune", "p.toml", "--older-than", "0", "--dry-run"])
        .ok();
    assert!(dry.stdout.starts_with("would remove "), "{}", dry.stdout);
    let week = dir
        .mmflow(&["cache", "prune", "p.toml", "--older-than", "7"])
        .ok();
    assert!(
        week.stdout.starts_with("removed 0 entries"),
        "{}",
        week.stdout
    );
    let all = dir
        .mmflow(&["cache", "prune", "p.toml", "--older-than", "0"])
        .ok();
    assert!(all.stdout.contains("; kept 0 (0.0 MB)"), "{}", all.stdout);
    assert!(cache.is_dir());
    assert!(run_dir.join("mosi/visual.parquet").is_file());
    let up_to_date = dir.mmflow(&["run", "p.toml"]).ok();
    assert!(
        up_to_date.says("mosi", "up to date"),
        "{}",
        up_to_date.stdout
    );
    let bad = dir
        .mmflow(&["cache", "prune", "p.toml", "--older-than=-1"])
        .expect(2);
    assert!(
        bad.stderr.contains("--older-than takes a number of days"),
        "{}",
        bad.stderr
    );
    let off = dir
        .mmflow(&[
            "cache",
            "prune",
            "p.toml",
            "--older-than",
            "1",
            "--set",
            "pipeline.run_cache=false",
        ])
        .expect(2);
    assert!(off.stderr.contains("no run-cache"), "{}", off.stderr);
}

#[test]
fn same_config_and_seed_give_byte_identical_tables() {
    let dir = Dir::new();
    dir.write("p.toml", SMALL);
    dir.mmflow(&["run", "p.toml", "--out", "one"]).ok();
    dir.mmflow(&["run", "p.toml", "--out", "two", "--set", "pipeline.jobs=1"])
        .ok();
    let files = parquet_files(&dir.join("one"));
    assert_eq!(files.len(), 2 * 4 + 2 * 4);
    for f in &files {
        let a = std::fs::read(dir.join("one").join(f)).unwrap();
        let b = std::fs::read(dir.join("two").join(f)).unwrap();
        assert!(a == b, "{} differs between runs", f.display());
    }
    // A different seed for a synthetic stage gives different data.
    dir.mmflow(&[
        "run",
        "p.toml",
        "--out",
        "three",
        "--set",
        "stages.mosi.seed=3",
    ])
    .ok();
    let a = std::fs::read(dir.join("one/mosi/text.parquet")).unwrap();
    let b = std::fs::read(dir.join("three/mosi/text.parquet")).unwrap();
    assert_ne!(a, b);
}

#[test]
fn a_failing_stage_exits_1_names_the_segment_and_writes_nothing() {
    let dir = Dir::new();
    dir.write("p.toml", SMALL);
    let run = dir
        .mmflow(&[
            "run",
            "p.toml",
            "--set",
            "stages.mosei_norm.params.nonfinite=\"error\"",
        ])
        .expect(1);
    assert!(
        run.stderr.contains("stage `mosei_norm` (normalize) failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("segment `") && run.stderr.contains("audio.parquet"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    let stage_dir = dir.join("data/runs/small/mosei_norm");
    let left: Vec<_> = std::fs::read_dir(&stage_dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "partial outputs left: {left:?}");
    // Independent stages were not affected.
    assert!(
        dir.join("data/runs/small/mosi/text.parquet").is_file() || run.stdout.contains("not run")
    );
}

#[test]
fn killing_a_run_at_any_moment_then_rerunning_gives_the_complete_result() {
    let dir = Dir::new();
    dir.write("p.toml", SMALL);
    dir.mmflow(&["run", "p.toml", "--out", "reference"]).ok();
    let reference = parquet_files(&dir.join("reference"));
    for delay_ms in [50u64, 200, 500] {
        let out = format!("killed-{delay_ms}");
        let mut child = dir
            .command(&["run", "p.toml", "--out", &out, "--quiet"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        dir.mmflow(&["run", "p.toml", "--out", &out]).ok();
        assert_eq!(parquet_files(&dir.join(&out)), reference);
        for f in &reference {
            let a = std::fs::read(dir.join("reference").join(f)).unwrap();
            let b = std::fs::read(dir.join(&out).join(f)).unwrap();
            assert!(
                a == b,
                "{} differs after a kill at {delay_ms} ms",
                f.display()
            );
        }
        let again = dir.mmflow(&["run", "p.toml", "--out", &out]).ok();
        assert!(!again.stdout.contains("ran in"), "{}", again.stdout);
    }
}

#[test]
fn show_prints_schema_metadata_and_rows() {
    let dir = Dir::new();
    dir.write("p.toml", SMALL);
    dir.mmflow(&["run", "p.toml"]).ok();
    let run = dir
        .mmflow(&["show", "data/runs/small/mosi/visual.parquet", "-n", "3"])
        .ok();
    for expected in [
        "table features (schema v1)",
        "written by stage `mosi`",
        "mmflow.dim = 65",
        "frames: list[array[f32, 65]]",
        "pooled: array[f32, 65]",
        "first 3 rows",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing `{expected}` in:\n{}",
            run.stdout
        );
    }
    let run = dir
        .mmflow(&["show", "data/runs/small/mosi/segments.parquet"])
        .ok();
    assert!(
        run.stdout.contains("sentiment: f32") && run.stdout.contains("[0]"),
        "{}",
        run.stdout
    );
    dir.write("junk.parquet", "not parquet");
    let run = dir.mmflow(&["show", "junk.parquet"]).expect(1);
    assert!(run.stderr.contains("junk.parquet"), "{}", run.stderr);
}

#[test]
fn kinds_and_help_describe_themselves() {
    let dir = Dir::new();
    let run = dir.mmflow(&["kinds"]).ok();
    assert!(run.stdout.contains("synthetic") && run.stdout.contains("normalize"));
    let run = dir.mmflow(&["run", "--help"]).ok();
    assert!(run.stdout.contains("--dry-run") && run.stdout.contains("--set"));
    dir.mmflow(&["frobnicate"]).expect(2);
}

/// The configs that read files: they point at data shipped in `tests/data`.
const SOURCE_CONFIGS: [&str; 6] = [
    "sdk_mosi",
    "sdk_mosei",
    "mmsa_pickle",
    "self_extracted",
    "raw_text",
    "text_finetune",
];

#[test]
fn every_shipped_config_validates_and_the_source_configs_run() {
    // From the repository root, as the README says (relative paths in a config are read from
    // the current directory), into a temporary run directory.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Dir::new();
    let mut configs = Vec::new();
    for entry in std::fs::read_dir(root.join("configs")).unwrap().flatten() {
        let path = entry.path();
        let run = dir
            .command(&["validate", path.to_str().unwrap()])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&run.stderr)
        );
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let reads_files = std::fs::read_to_string(&path).unwrap().contains("path = ");
        assert_eq!(
            reads_files,
            SOURCE_CONFIGS.contains(&name.as_str()),
            "{name}: configs that read files are run below"
        );
        configs.push(name);
    }
    assert!(configs.len() >= 5, "{configs:?}");
    for config in SOURCE_CONFIGS {
        let out = dir.join(config);
        let run = dir
            .command(&[
                "run",
                &format!("configs/{config}.toml"),
                "--out",
                out.to_str().unwrap(),
                "-q",
            ])
            .current_dir(root)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let lock: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("mmflow.lock")).unwrap())
                .unwrap();
        if config == "raw_text" {
            // The text modality computed from the pickle's raw text, then trained and
            // evaluated: every segment embedded, one vector per token, nothing cut.
            let stages = lock["stages"].as_object().unwrap();
            assert_eq!(stages.len(), 5, "{config}: {:?}", stages.keys());
            let report = &lock["stages"]["text"]["report"];
            assert_eq!(report["segments"], 7, "{report}");
            assert_eq!(report["truncated"], 0, "{report}");
            let text =
                mmflow_schemas::features::FeatureReader::open(&out.join("text/text.parquet"))
                    .unwrap()
                    .read_all()
                    .unwrap();
            assert_eq!(text.segment_ids.len(), 7);
            assert_eq!(Some(text.offsets[7] as u64), report["tokens"].as_u64());
            let rows = mmflow_schemas::row_count(&out.join("eval/metrics.parquet")).unwrap();
            assert!(rows > 0, "{config}: the evaluation wrote no metrics");
        } else if config == "text_finetune" {
            // Frozen and fine-tuned encoders, each trained and evaluated.
            let stages = lock["stages"].as_object().unwrap();
            assert_eq!(stages.len(), 6, "{config}: {:?}", stages.keys());
            for eval in ["eval_frozen", "eval_finetuned"] {
                let metrics = out.join(eval).join("metrics.parquet");
                assert!(mmflow_schemas::row_count(&metrics).unwrap() > 0, "{eval}");
            }
        } else {
            assert_eq!(
                lock["stages"].as_object().unwrap().len(),
                2,
                "{config}: source and normalize ran"
            );
        }
    }
}

/// README's stage-kind tables are generated from the types: a `<!-- params: KIND… -->` block
/// holds `mmflow kinds --params KIND` (the same for every kind it names), the
/// `<!-- kinds -->` block `mmflow kinds`; every kind has a block. With `MMFLOW_BLESS=1` the
/// test rewrites the blocks.
#[test]
fn readme_tables_match_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let registry = mmflow_stages::registry();
    let mut updated = String::new();
    let mut stale = Vec::new();
    let mut documented = std::collections::BTreeSet::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("<!-- ") {
        let close = start + rest[start..].find(" -->").expect("a closed marker");
        let marker = &rest[start + 5..close];
        let body = close + 5;
        updated.push_str(&rest[..body]);
        rest = &rest[body..];
        let table = if marker == "kinds" {
            mmflow_pipeline::docs::kinds_markdown(&registry)
        } else if let Some(kinds) = marker.strip_prefix("params: ") {
            let tables: Vec<String> = kinds
                .split_whitespace()
                .map(|k| {
                    documented.insert(k.to_string());
                    let stage = registry
                        .get(k)
                        .unwrap_or_else(|| panic!("README names an unknown kind `{k}`"));
                    mmflow_pipeline::docs::params_markdown(stage.as_ref())
                })
                .collect();
            assert!(
                tables.windows(2).all(|w| w[0] == w[1]),
                "the kinds of `{marker}` have different params"
            );
            tables[0].clone()
        } else {
            continue;
        };
        let end = rest
            .find("<!-- end -->")
            .expect("every block ends with `<!-- end -->`");
        if rest[..end] != table {
            stale.push(format!("`{marker}` differs from the types"));
        }
        updated.push_str(&table);
        rest = &rest[end..];
    }
    updated.push_str(rest);
    for kind in registry.kinds() {
        if !documented.contains(kind.kind()) {
            stale.push(format!("no `<!-- params: {} -->` block", kind.kind()));
        }
    }
    if std::env::var_os("MMFLOW_BLESS").is_some() {
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert!(
        stale.is_empty(),
        "README.md: {} (re-generate with MMFLOW_BLESS=1 cargo test --test integration readme_tables)",
        stale.join("; ")
    );
}

/// ARCHITECTURE.md's table of stage kinds names every registered kind, and the modules it
/// names exist.
#[test]
fn architecture_names_every_stage_kind() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let table = text
        .split("| kind | module | notes |")
        .nth(1)
        .expect("ARCHITECTURE.md has the stage kinds table");
    let mut named = std::collections::BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split(" | ").collect();
        named.extend(cells[0].split('`').skip(1).step_by(2).map(str::to_string));
        for module in cells[1].split('`').skip(1).step_by(2) {
            assert!(
                root.join("stages/src").join(module).exists(),
                "ARCHITECTURE.md names `{module}`, which is not in stages/src"
            );
        }
    }
    let registered: std::collections::BTreeSet<String> = mmflow_stages::registry()
        .kinds()
        .map(|k| k.kind().to_string())
        .collect();
    assert_eq!(named, registered, "ARCHITECTURE.md's stage kinds");
}

#[test]
fn plan_lists_the_stages_a_template_expands_to() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Dir::new();
    let out = dir.join("transfer");
    let run = dir
        .command(&[
            "plan",
            "configs/transfer.toml",
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("(30 stages)"), "{stdout}");
    for method in ["random", "kmeans", "cosine"] {
        for stage in [
            "targets",
            "adapters",
            "zero_shot",
            "adapted",
            "adapted_norm",
            "zero_shot_renorm",
            "finetune",
            "finetuned",
        ] {
            assert!(
                stdout.contains(&format!("\n  {stage}@{method} (")),
                "{stage}@{method} in:\n{stdout}"
            );
        }
        // A stage of the template reads its own method's sibling.
        assert!(
            stdout.contains(&format!("reads  mosi_norm.visual, targets@{method}.visual")),
            "{stdout}"
        );
    }
    assert!(!out.exists(), "plan writes nothing");
}
