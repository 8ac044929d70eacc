//! `mmflow inspect RUN`: a finished run read back through its record (an unfinished run is
//! refused, naming its stages): the stages it completed, their fingerprints, times and
//! reports, and every output with its table kind, rows, size and path. `--verify` checks each
//! listed output against the lock (size and content hash, as `compare` and `report` do before
//! they read one); `--table stage.output` lists only the outputs named.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Context;
use mmflow_pipeline::record::RunRecord;

use crate::json;

/// What the command line asks of `inspect`.
pub struct Request {
    /// The run directory.
    pub run: PathBuf,
    /// Only these outputs (`stage.output`); all when empty.
    pub tables: Vec<String>,
    /// Check the listed outputs against the lock.
    pub verify: bool,
    /// Print the JSON document instead of text.
    pub json: bool,
}

/// Why `inspect` refused to list a run.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// `--table` names no output of the run.
    #[error("{}: --table {reference}: {why}", run.display())]
    UnknownTable {
        /// The run directory.
        run: PathBuf,
        /// The reference given.
        reference: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Reads the run of `request`; the document, and how many listed outputs failed their check.
pub fn inspect(request: &Request) -> anyhow::Result<(json::InspectDocument, usize)> {
    let record = RunRecord::load(&request.run)?;
    let wanted = wanted_outputs(&record, &request.tables)?;
    let mut changed = 0;
    let mut stages = Vec::new();
    for (id, entry) in &record.manifest.stages {
        let mut outputs = Vec::new();
        for (name, output) in &entry.outputs {
            let reference = format!("{id}.{name}");
            if !wanted.is_empty() && !wanted.contains(&reference) {
                continue;
            }
            let check = request.verify.then(|| record.output(id, name));
            if matches!(check, Some(Err(_))) {
                changed += 1;
            }
            outputs.push(json::OutputDocument {
                name: name.clone(),
                reference,
                path: record.dir.join(&output.path),
                table: output.table.clone(),
                rows: output.rows,
                size: output.size,
                hash: output.hash.clone(),
                verified: check.as_ref().map(Result::is_ok),
                problem: check.and_then(Result::err).map(|e| e.to_string()),
            });
        }
        if !wanted.is_empty() && outputs.is_empty() {
            continue;
        }
        stages.push(json::StageRecord {
            id: id.clone(),
            kind: entry.kind.clone(),
            version: entry.version,
            fingerprint: entry.fingerprint.clone(),
            seed: entry.seed,
            device: entry.device.clone(),
            seconds: entry.duration_s,
            finished_unix: entry.finished_unix,
            report: entry.report.clone(),
            outputs,
        });
    }
    let document = json::InspectDocument {
        format: json::FORMAT,
        run_dir: record.dir.clone(),
        pipeline: record.manifest.pipeline.clone(),
        settings: serde_json::to_value(&record.config)
            .with_context(|| format!("{}: the run's settings", record.dir.display()))?,
        stages,
    };
    Ok((document, changed))
}

/// The references of `--table`, each checked to name an output of the run.
fn wanted_outputs(record: &RunRecord, tables: &[String]) -> anyhow::Result<BTreeSet<String>> {
    let mut wanted = BTreeSet::new();
    for reference in tables {
        let unknown = |why: String| InspectError::UnknownTable {
            run: record.dir.clone(),
            reference: reference.clone(),
            why,
        };
        let Some((stage, output)) = reference.split_once('.') else {
            return Err(unknown("write it as `stage.output`".into()).into());
        };
        let Some(entry) = record.manifest.stages.get(stage) else {
            let stages: Vec<&str> = record.manifest.stages.keys().map(String::as_str).collect();
            return Err(unknown(format!(
                "the run has no stage `{stage}`; its stages are {}",
                stages.join(", ")
            ))
            .into());
        };
        if !entry.outputs.contains_key(output) {
            let outputs: Vec<&str> = entry.outputs.keys().map(String::as_str).collect();
            return Err(unknown(format!(
                "stage `{stage}` has no output `{output}`; its outputs are {}",
                outputs.join(", ")
            ))
            .into());
        }
        wanted.insert(reference.clone());
    }
    Ok(wanted)
}

/// Prints the document as text: a line per stage, one per output.
pub fn print_text(document: &json::InspectDocument) {
    println!(
        "run of `{}` · {} · {} stages",
        document.pipeline,
        document.run_dir.display(),
        document.stages.len()
    );
    for stage in &document.stages {
        println!(
            "\n  {} ({} v{})  fingerprint {} · seed {} · {:.2} s",
            stage.id,
            stage.kind,
            stage.version,
            &stage.fingerprint[..stage.fingerprint.len().min(12)],
            stage.seed,
            stage.seconds
        );
        for output in &stage.outputs {
            let rows = output
                .rows
                .map(|r| format!("{r} rows, "))
                .unwrap_or_default();
            let check = match (output.verified, &output.problem) {
                (Some(true), _) => " · verified".to_string(),
                (Some(false), Some(problem)) => format!(" · CHANGED: {problem}"),
                _ => String::new(),
            };
            println!(
                "      {:<14} {:<12} {rows}{} bytes · {}{check}",
                output.name,
                output.table.as_deref().unwrap_or("-"),
                output.size,
                output.path.display()
            );
        }
    }
}
