//! Pipeline files of the shapes that once made loading and validation grow faster than the
//! file: each at the size cap (under 1 MiB, up to 10,000 expanded stages). Shared by the
//! tests that check what each is told (`hostile`, `bad_inputs::config`) and the bench that
//! times them (`benches/validate.rs`).
//!
//! Template shapes put the template stage's `kind` on line 7 and the key that matters on
//! line 8 (see [`template`]), so rows can name where a problem is located.

/// A synthetic source every shape reads from (lines 1–3).
const SOURCE: &str = "[stages.mosi]
kind = \"synthetic\"
params = { profile = \"mosi\", scale = 0.1 }
";

/// `SOURCE`, then template `t` over `items` (line 5) with one `normalize` stage `n` whose
/// line 8 is `body`.
fn template(items: &str, body: &str) -> String {
    format!(
        "{SOURCE}[templates.t]\n{items}\n[templates.t.stages.n]\nkind = \"normalize\"\n{body}\n"
    )
}

/// `n` items `i0…`, each naming in `next` what its instance reads: the next item's instance,
/// the last one the first's (`closed`) or the source's text.
fn linked(n: usize, closed: bool) -> String {
    let next = |k: usize| match (k + 1 < n, closed) {
        (true, _) => format!("n@i{}.text", k + 1),
        (false, true) => "n@i0.text".to_string(),
        (false, false) => "mosi.text".to_string(),
    };
    let items: Vec<String> = (0..n)
        .map(|k| format!("i{k} = {{ next = \"{}\" }}", next(k)))
        .collect();
    template(
        &format!("foreach = {{ {} }}", items.join(", ")),
        "inputs = { segments = \"mosi.segments\", features = [\"${item.next}\"] }",
    )
}

/// A ring of `n` instances: each reads the next one's output, the last the first's.
pub fn ring(n: usize) -> String {
    linked(n, true)
}

/// The same stages as [`ring`] as a chain: the last reads the source.
pub fn chain(n: usize) -> String {
    linked(n, false)
}

/// `strings` strings `"${item.x}"` in a template over `items` items of which only the first
/// has an `x`: every other instance lacks it in every string.
pub fn missing_names(items: usize, strings: usize) -> String {
    let items: Vec<String> = std::iter::once("a0 = { x = 1 }".to_string())
        .chain((1..items).map(|k| format!("a{k} = {{ y = 1 }}")))
        .collect();
    template(
        &format!("foreach = {{ {} }}", items.join(", ")),
        &format!(
            "params = {{ p = [{}] }}",
            vec!["\"${item.x}\""; strings].join(", ")
        ),
    )
}

/// `strings` references to a name no item gives, in a template whose item gives `fields`
/// names.
pub fn unknown_names(fields: usize, strings: usize) -> String {
    let fields: Vec<String> = (0..fields).map(|k| format!("f{k} = 1")).collect();
    template(
        &format!("foreach = {{ a = {{ {} }} }}", fields.join(", ")),
        &format!(
            "params = {{ p = [{}] }}",
            vec!["\"${item.g}\""; strings].join(", ")
        ),
    )
}

/// `strings` strings with an unterminated `${`.
pub fn unterminated(strings: usize) -> String {
    template(
        "foreach = [\"a\"]",
        &format!(
            "params = {{ p = [{}] }}",
            vec!["\"${x\""; strings].join(", ")
        ),
    )
}

/// A string of `names` `${key}` in a template of `items` items: more settings than the
/// expansion may build.
pub fn many_names_in_a_string(items: usize, names: usize) -> String {
    let items: Vec<String> = (0..items).map(|k| format!("\"i{k}\"")).collect();
    template(
        &format!("foreach = [{}]", items.join(", ")),
        &format!("params = {{ p = \"{}\" }}", "${key}".repeat(names)),
    )
}

/// A matrix of `values` values crossed with `variables` variables of one value each: few
/// combinations, each holding every variable.
pub fn wide_matrix(values: usize, variables: usize) -> String {
    let values: Vec<String> = (0..values).map(|k| k.to_string()).collect();
    let variables: Vec<String> = (0..variables).map(|k| format!("v{k} = [1]")).collect();
    template(
        &format!(
            "matrix = {{ k = [{}], {} }}",
            values.join(", "),
            variables.join(", ")
        ),
        "inputs = { segments = \"mosi.segments\", features = [\"mosi.text\"] }",
    )
}

/// `templates` templates of `side` × `side` combinations each: each within the stage cap,
/// not together.
pub fn many_templates(templates: usize, side: usize) -> String {
    let values: Vec<String> = (0..side).map(|k| k.to_string()).collect();
    let values = values.join(", ");
    let mut text = SOURCE.to_string();
    for t in 0..templates {
        text.push_str(&format!(
            "[templates.t{t}]\nmatrix = {{ j = [{values}], k = [{values}] }}\n[templates.t{t}.stages.n{t}]\nkind = \"normalize\"\n"
        ));
    }
    text
}

/// One item whose label is `length` bytes long, in a template of `stages` stages: every
/// instance's id would be that long.
pub fn long_label(length: usize, stages: usize) -> String {
    let mut text = template(&format!("foreach = [\"{}\"]", "x".repeat(length)), "");
    for s in 1..stages {
        text.push_str(&format!(
            "[templates.t.stages.n{s}]\nkind = \"normalize\"\n"
        ));
    }
    text
}

/// A template of `items` instances, each with an unknown key.
pub fn unknown_key_in_every_instance(items: usize) -> String {
    let items: Vec<String> = (0..items).map(|k| format!("\"i{k}\"")).collect();
    template(&format!("foreach = [{}]", items.join(", ")), "colour = 1")
}

/// One stage with `keys` unknown params.
pub fn unknown_params(keys: usize) -> String {
    let keys: String = (0..keys).map(|k| format!("k{k} = 1\n")).collect();
    format!("{SOURCE}[stages.n]\nkind = \"normalize\"\ninputs = {{ segments = \"mosi.segments\", features = [\"mosi.text\"] }}\n[stages.n.params]\n{keys}")
}

/// `items` instances with ids of about 190 bytes, and a stage with `references` references to
/// missing stages of as long a name: each "did you mean" would compare it with every id.
pub fn dangling_references(items: usize, references: usize) -> String {
    let items: Vec<String> = (0..items)
        .map(|k| format!("\"L{k:05}{}\"", "y".repeat(84)))
        .collect();
    let references: Vec<String> = (0..references)
        .map(|k| format!("\"{}{k}.text\"", "z".repeat(180)))
        .collect();
    format!(
        "{SOURCE}[templates.t]\nforeach = [{}]\n[templates.t.stages.{}]\nkind = \"synthetic\"\n[stages.d]\nkind = \"normalize\"\ninputs = {{ segments = \"mosi.segments\", features = [{}] }}\n",
        items.join(", "),
        "s".repeat(100),
        references.join(", ")
    )
}

/// A source of `modalities` modalities, all of them normalised: every reference is checked
/// against that many outputs.
pub fn many_outputs(modalities: usize) -> String {
    let sources: String = (0..modalities)
        .map(|k| format!("m{k} = {{ path = \"v.npz\" }}\n"))
        .collect();
    let references: Vec<String> = (0..modalities).map(|k| format!("\"src.m{k}\"")).collect();
    format!(
        "[stages.src]\nkind = \"npz\"\n[stages.src.params]\ndataset = \"mosi\"\nreference = \"m0\"\nlabels = {{ path = \"labels.npz\" }}\n[stages.src.params.modalities]\n{sources}[stages.n]\nkind = \"normalize\"\ninputs = {{ segments = \"src.segments\", features = [{}] }}\n",
        references.join(", ")
    )
}

/// A CSV source listing `columns` columns.
pub fn many_columns(columns: usize) -> String {
    let columns: Vec<String> = (0..columns).map(|k| format!("\"c{k}\"")).collect();
    format!(
        "[stages.src]\nkind = \"csv\"\n[stages.src.params]\ndataset = \"mosi\"\nreference = \"visual\"\nlabels = {{ path = \"labels.csv\" }}\n[stages.src.params.modalities]\nvisual = {{ path = \"v\", csv = {{ columns = [{}] }} }}\n",
        columns.join(", ")
    )
}

/// A key of `depth` dotted parts.
pub fn deep_key(depth: usize) -> String {
    format!("{SOURCE}{} = 1\n", vec!["a"; depth].join("."))
}

/// An array nested `depth` deep.
pub fn deep_array(depth: usize) -> String {
    format!("{SOURCE}x = {}{}\n", "[".repeat(depth), "]".repeat(depth))
}

/// `tables` inline tables left open, each around a `[…]` where a key belongs: the TOML
/// parser's error recovery once recursed into each (the 101st bracket open at once is the
/// `[` on line 103, column 7).
pub fn unclosed_tables(tables: usize) -> String {
    format!("{SOURCE}x = {}", "p = { [s]\n".repeat(tables))
}

/// Every shape at the size cap, by name.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("ring of 10,000 instances", ring(10_000)),
        ("chain of 10,000 instances", chain(10_000)),
        (
            "50,000 references to a missing value",
            missing_names(10_000, 50_000),
        ),
        (
            "50,000 unknown names, 2,000 known",
            unknown_names(2_000, 50_000),
        ),
        ("100,000 unterminated ${", unterminated(100_000)),
        (
            "150,000 ${key} in one string",
            many_names_in_a_string(100, 150_000),
        ),
        (
            "matrix of 10,000 x 50,000 variables",
            wide_matrix(10_000, 50_000),
        ),
        (
            "one combination of 50,000 variables",
            wide_matrix(1, 50_000),
        ),
        (
            "1,100 templates of 10,000 items",
            many_templates(1_100, 100),
        ),
        (
            "label of 880,000 bytes, 3,000 stages",
            long_label(880_000, 3_000),
        ),
        (
            "unknown key in 10,000 instances",
            unknown_key_in_every_instance(10_000),
        ),
        ("50,000 unknown params", unknown_params(50_000)),
        (
            "100 dangling references, 5,000 long ids",
            dangling_references(5_000, 100),
        ),
        ("25,000 outputs", many_outputs(25_000)),
        ("100,000 CSV columns", many_columns(100_000)),
        ("key 300,000 deep", deep_key(300_000)),
        ("array 300,000 deep", deep_array(300_000)),
        ("100,000 inline tables left open", unclosed_tables(100_000)),
    ]
}
