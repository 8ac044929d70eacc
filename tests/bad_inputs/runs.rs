//! Bad inputs: run directories, lock files, tampered tables, sweeps, comparisons.

use super::{check, Case};

const CASES: &[Case] = &[];

#[test]
fn bad_runs_inputs_fail_cleanly() {
    check(CASES);
}
