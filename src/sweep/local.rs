//! The local executor: a sweep's runs on this machine, `jobs` at once.
//!
//! With one job the runs go one after another, and the first run computes the stages they
//! share (the others restore them from the run-cache). With more, those stages are computed
//! first, once, so concurrent runs do not each compute them.

use std::sync::atomic::{AtomicUsize, Ordering};

use mmflow_pipeline::{Progress, RunOptions};

use super::{run_one, run_shared, Sweep};

/// Runs every run of `sweep`, `jobs` at once; failures are printed, and the comparison
/// names the runs they left unfinished.
pub fn execute(sweep: &Sweep, jobs: usize, options: &RunOptions) {
    let jobs = jobs.min(sweep.runs.len()).max(1);
    if jobs == 1 {
        for run in &sweep.runs {
            run_one(run, options, sweep.say);
        }
        return;
    }
    run_shared(sweep, options);
    // Progress bars of several runs at once would interleave: each run logs its stages.
    let options = RunOptions {
        progress: Progress::hidden(),
        ..options.clone()
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(run) = sweep.runs.get(index) else {
                    break;
                };
                run_one(run, &options, sweep.say);
            });
        }
    });
}
