//! Bad inputs: reports (`mmflow report`, its `--out`, plotting).

use super::{check, Case};

const CASES: &[Case] = &[];

#[test]
fn bad_report_inputs_fail_cleanly() {
    check(CASES);
}
