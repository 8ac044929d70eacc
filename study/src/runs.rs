//! The evaluations of finished runs: every table of kind
//! `metrics` (`mmflow_schemas::evaluation::METRICS`) a completed run recorded, with the
//! settings the run completed (defaults filled in, as the lock file records them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mmflow_pipeline::record::RunRecord;
use mmflow_schemas::evaluation::{read_metrics, MetricRow, METRICS};

/// The metrics one stage of one finished run wrote.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The run directory.
    pub run: PathBuf,
    /// The stage that wrote the metrics.
    pub stage: String,
    /// The run's settings: dotted keys (see [`RunRecord::settings`]) → values.
    pub settings: BTreeMap<String, String>,
    /// The metrics table's rows.
    pub metrics: Vec<MetricRow>,
}

impl Evaluation {
    /// Whether `key` is a seed: runs differing only in seeds are repetitions of one
    /// experiment.
    pub fn is_seed(key: &str) -> bool {
        key.ends_with(".seed")
    }

    /// Whether two evaluations are repetitions of one experiment: the same stage, and the
    /// same settings except seeds.
    pub fn same_experiment(&self, other: &Evaluation) -> bool {
        fn without_seeds(e: &Evaluation) -> impl Iterator<Item = (&String, &String)> {
            e.settings.iter().filter(|(k, _)| !Evaluation::is_seed(k))
        }
        self.stage == other.stage && without_seeds(self).eq(without_seeds(other))
    }
}

/// The evaluations of the finished run in `dir`, in stage order; an error if the run is not
/// finished, a metrics table is not the one its stage wrote, or the run has none.
pub fn evaluations(dir: &Path) -> Result<Vec<Evaluation>> {
    let record = RunRecord::load(dir)?;
    let settings = record.settings();
    let mut out = Vec::new();
    for (stage, output) in record.outputs_of_kind(METRICS) {
        let path = record.output(stage, output)?;
        let metrics =
            read_metrics(&path).with_context(|| format!("{}: stage `{stage}`", path.display()))?;
        out.push(Evaluation {
            run: dir.to_path_buf(),
            stage: stage.to_string(),
            settings: settings.clone(),
            metrics,
        });
    }
    if out.is_empty() {
        bail!("{}: no evaluate stage: nothing to compare", dir.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluation(stage: &str, settings: &[(&str, &str)]) -> Evaluation {
        Evaluation {
            run: PathBuf::from("run"),
            stage: stage.into(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metrics: Vec::new(),
        }
    }

    #[test]
    fn runs_differing_only_by_seed_are_one_experiment() {
        let a = evaluation(
            "eval",
            &[("stages.m.seed", "1"), ("stages.m.params.x", "1")],
        );
        let b = evaluation(
            "eval",
            &[("stages.m.seed", "2"), ("stages.m.params.x", "1")],
        );
        let c = evaluation(
            "eval",
            &[("stages.m.seed", "1"), ("stages.m.params.x", "2")],
        );
        let d = evaluation(
            "other",
            &[("stages.m.seed", "1"), ("stages.m.params.x", "1")],
        );
        assert!(a.same_experiment(&b));
        assert!(!a.same_experiment(&c));
        assert!(!a.same_experiment(&d));
        assert!(Evaluation::is_seed("stages.m.seed") && !Evaluation::is_seed("stages.m.seeds.x"));
    }

    #[test]
    fn a_folder_that_is_not_a_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = evaluations(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not an mmflow run directory"), "{err}");
    }
}
