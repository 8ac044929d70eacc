//! Loading and validating: every problem with its position, cycles, overrides, seeds.

use super::*;

#[test]
fn validation_reports_every_problem_with_its_position() {
    let text = r#"
[pipeline]
name = "toy"
colour = "red"

[stages.a]
kind = "emit"

[stages.b]
kind = "emitt"

[stages.c]
kind = "concat"
inputs = { parts = ["a.out", "nope.out", "a.missing", "a.other"] }

[stages.d]
kind = "concat"

[stages.e]
kind = "emit"
params = { value = "A", valeu = 3, other = 1, fail = "yes" }
"#;
    let found = problems(text, &[]);
    let expect = [
        ("p.toml:4:1", "unknown key `colour`"),
        (
            "p.toml:10:8",
            "unknown stage kind `emitt` (did you mean `emit`?)",
        ),
        ("p.toml:14:30", "no stage `nope`"),
        ("p.toml:14:42", "stage `a` has no output `missing`"),
        (
            "p.toml:14:55",
            "takes `text` tables, but `a.other` is a `other` table",
        ),
        ("p.toml:16:1", "input `parts` is required"),
        ("p.toml:21:25", "unknown key `valeu`"),
        ("p.toml:21:36", "unknown key `other`"),
        (
            "p.toml:21:54",
            "invalid type: string \"yes\", expected a boolean",
        ),
    ];
    for (position, message) in expect {
        assert!(
            found
                .iter()
                .any(|f| f.contains(position) && f.contains(message)),
            "missing {position} {message} in:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn cycles_are_reported() {
    let text = r#"
[stages.x]
kind = "concat"
inputs = { parts = "y.out" }
[stages.y]
kind = "concat"
inputs = { parts = "x.out" }
"#;
    let found = problems(text, &[]);
    assert!(
        found.iter().any(|f| f.contains("cycle: x → y → x")),
        "{found:?}"
    );
}

#[test]
fn overrides_are_validated_and_located() {
    let found = problems(
        PIPELINE,
        &["stages.a.params.valeu=1", "stages.ab.kind=nope", "bad"],
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("--set stages.a.params.valeu=1")
                && f.contains("unknown key `valeu`")),
        "{found:?}"
    );
    assert!(found.iter().any(|f| f.starts_with("--set stages.ab.kind=nope") && f.contains("unknown stage kind")), "{found:?}");
    assert!(
        found.iter().any(|f| f.starts_with("--set bad")),
        "{found:?}"
    );
}

#[test]
fn syntax_errors_name_line_and_column() {
    let found = problems("[pipeline]\nname = \n", &[]);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with(&format!("{}", Path::new("p.toml").display()))
            || found[0].contains("p.toml:2:"),
        "{found:?}"
    );
    assert!(found[0].contains("invalid TOML"), "{found:?}");
}

#[test]
fn seeds_are_derived_per_stage_and_can_be_pinned() {
    let s = Setup::new(PIPELINE);
    let p = s.pipeline(&[]);
    let seed = |p: &crate::Pipeline, id: &str| p.stage(id).unwrap().seed;
    assert_ne!(seed(&p, "a"), seed(&p, "b"));
    let q = s.pipeline(&["pipeline.seed=7", "stages.b.seed=5"]);
    assert_ne!(seed(&p, "a"), seed(&q, "a"));
    assert_eq!(seed(&q, "b"), 5);
    // A kind that draws nothing at random has seed 0 whatever the pipeline seed.
    assert_eq!((seed(&p, "c"), seed(&q, "c")), (0, 0));
}
