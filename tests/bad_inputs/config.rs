//! Bad inputs: pipeline files and `--set` overrides.

use super::{check, pipeline, Case};
use crate::util::SMALL;

const CASES: &[Case] = &[
    Case {
        what: "TOML syntax error",
        setup: |d| pipeline(d, "[pipeline\nname = 1\n"),
        args: &["run", "p.toml"],
        code: 2,
        says: &["p.toml:1:"],
        may_write: &[],
    },
    Case {
        what: "override of a key that does not exist",
        setup: |d| pipeline(d, SMALL),
        args: &["run", "p.toml", "--set", "stages.mosi.params.nope=1"],
        code: 2,
        says: &["--set stages.mosi.params.nope=1", "unknown key"],
        may_write: &[],
    },
];

#[test]
fn bad_config_inputs_fail_cleanly() {
    check(CASES);
}
