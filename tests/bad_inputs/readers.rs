//! Bad inputs: readers.

use super::{check, Case};

const CASES: &[Case] = &[];

#[test]
fn bad_readers_inputs_fail_cleanly() {
    check(CASES);
}
