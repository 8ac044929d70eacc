//! Bad inputs: csv.

use super::{check, Case};

const CASES: &[Case] = &[];

#[test]
fn bad_csv_inputs_fail_cleanly() {
    check(CASES);
}
