//! A run's pipeline as the report shows it: its stages in pipeline order (each after the
//! stages it reads, by the lock's record of what each read), with kind, inputs, outputs,
//! time, device and fingerprint, and the settings it ran with.

use std::collections::{BTreeMap, BTreeSet};

use mmflow_pipeline::record::RunRecord;

use super::page::{Block, Cell, Table, Text};

/// Characters of a fingerprint shown.
const FINGERPRINT_CHARS: usize = 12;

/// Each stage's depth: 0 for a stage that reads no other stage, else one more than the
/// deepest stage it reads. Stages of a circle (a lock no run wrote) come last.
pub(crate) fn depths(record: &RunRecord) -> BTreeMap<&str, usize> {
    let stages = &record.manifest.stages;
    let reads: BTreeMap<&str, BTreeSet<&str>> = stages
        .iter()
        .map(|(id, entry)| {
            let upstream = entry
                .inputs
                .values()
                .flatten()
                .filter_map(|input| input.reference.split('.').next())
                .filter(|up| *up != id && stages.contains_key(*up))
                .collect();
            (id.as_str(), upstream)
        })
        .collect();
    let mut readers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, up) in &reads {
        for u in up {
            readers.entry(u).or_default().push(id);
        }
    }
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    let mut waiting: BTreeMap<&str, usize> = reads.iter().map(|(id, up)| (*id, up.len())).collect();
    let mut ready: Vec<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| *id)
        .collect();
    while let Some(id) = ready.pop() {
        let d = reads[id].iter().map(|up| depth[up] + 1).max().unwrap_or(0);
        depth.insert(id, d);
        for down in readers.get(id).into_iter().flatten() {
            let n = waiting.get_mut(down).expect("every stage is counted");
            *n -= 1;
            if *n == 0 {
                ready.push(down);
            }
        }
    }
    let last = stages.len();
    for id in reads.keys() {
        depth.entry(id).or_insert(last);
    }
    depth
}

/// The run's stages in pipeline order: by depth, then id.
pub(crate) fn order(record: &RunRecord) -> Vec<&str> {
    let depth = depths(record);
    let mut ids: Vec<&str> = depth.keys().copied().collect();
    ids.sort_by_key(|id| (depth[id], *id));
    ids
}

/// The stages table and a line saying what it shows.
pub(crate) fn stages(record: &RunRecord) -> Vec<Block> {
    let stages = &record.manifest.stages;
    let total: f64 = stages.values().map(|e| e.duration_s).sum();
    let rows = order(record)
        .into_iter()
        .map(|id| {
            let entry = &stages[id];
            let reads: Vec<&str> = entry
                .inputs
                .values()
                .flatten()
                .map(|i| i.reference.as_str())
                .collect();
            let writes: Vec<String> = entry
                .outputs
                .iter()
                .map(|(name, output)| {
                    let mut about = Vec::new();
                    if let Some(table) = output.table.as_deref().filter(|t| t != name) {
                        about.push(table.to_string());
                    }
                    if let Some(rows) = output.rows {
                        about.push(format!("{rows} rows"));
                    }
                    if about.is_empty() {
                        name.clone()
                    } else {
                        format!("{name} ({})", about.join(", "))
                    }
                })
                .collect();
            vec![
                Cell::text(id),
                Cell::text(&entry.kind),
                Cell::text(reads.join(", ")),
                Cell::text(writes.join("; ")),
                Cell::numbers(format!("{:.2}", entry.duration_s), vec![entry.duration_s]),
                Cell::text(entry.device.as_deref().unwrap_or("")),
                Cell::text(
                    entry
                        .fingerprint
                        .chars()
                        .take(FINGERPRINT_CHARS)
                        .collect::<String>(),
                ),
            ]
        })
        .collect();
    vec![
        Block::Text(Text::plain(format!(
            "{} stages, each completed in the run this record holds ({:.1} s of stage time in all; a stage restored from the run-cache or left up to date keeps the time of the run that computed it). Stages in pipeline order: each after those it reads.",
            stages.len(),
            total
        ))),
        Block::Table(Table {
            header: ["stage", "kind", "reads", "writes", "time (s)", "device", "fingerprint"]
                .map(String::from)
                .to_vec(),
            rows,
            source: None,
        }),
    ]
}

/// The settings the run completed with (its `pipeline.toml`).
pub(crate) fn settings(record: &RunRecord) -> Block {
    match toml::to_string_pretty(&record.config) {
        Ok(text) => Block::Code(text),
        Err(e) => Block::Text(Text::plain(format!("The settings cannot be shown: {e}."))),
    }
}

/// A run's pipeline name and seed, as its settings give them (`pipeline`, 42 when unset).
pub(crate) fn name_and_seed(record: &RunRecord) -> (String, String) {
    let pipeline = record.config.get("pipeline");
    let name = pipeline
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("pipeline")
        .to_string();
    let seed = pipeline
        .and_then(|p| p.get("seed"))
        .map(|s| s.to_string())
        .unwrap_or_else(|| "42".into());
    (name, seed)
}
