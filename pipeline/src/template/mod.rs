//! Templates: stages written once and expanded once per item, in the spirit of DVC's
//! `foreach`/`matrix` and Kedro's namespaced modular pipelines.
//!
//! ```toml
//! [templates.per_method]
//! foreach = ["random", "kmeans", "cosine"]       # a list of items, or
//! # foreach = { fast = 8, slow = 64 }            # a table of named items, or
//! # matrix = { method = ["kmeans", "cosine"], k = [8, 16] }   # every combination
//!
//! [templates.per_method.stages.targets]
//! kind = "select_targets"
//! params = { method = "${item}" }
//!
//! [templates.per_method.stages.adapters]
//! kind = "train_adapters"
//! inputs = { targets = ["targets.visual"] }      # the same item's `targets@…`
//! ```
//!
//! - Every stage of a template becomes one ordinary stage per item, with the id
//!   `<stage>@<label>`: the item itself for a `foreach` list (`targets@kmeans`), its name
//!   for a `foreach` table, the values joined by `-` in the order the matrix names them for a
//!   `matrix` (`targets@kmeans-16`). A label holds letters, digits, `_` and `-` (a float's `.`
//!   is written `_`: `0.5` → `0_5`); an item that cannot be one is named by a `foreach` table.
//! - Items are strings, numbers or booleans; a `foreach` table's items may also be tables of
//!   them (named values, as a matrix row is).
//! - In every string value of a template stage (not in keys), `${key}` is the item's label,
//!   `${item}` the item (a `foreach` of plain values) and `${item.<name>}` one of its named
//!   values (a `matrix`, or a `foreach` table of tables); `$${` is a literal `${`. A string
//!   that is exactly one `${…}` becomes the value with its own TOML type (`"${item.k}"` → 16);
//!   inside a longer string the value is written as text.
//! - After substitution, an input reference `"<sibling>.<output>"` to a stage of the same
//!   template reads the same item's instance (`targets@kmeans.visual`); every other reference
//!   is left as written, and any stage may read an instance by its full id.
//!
//! Expansion happens after the `--set` overrides of the file's keys (so
//! `templates.<name>.stages.<stage>.params.<key>=…` changes every instance) and before those
//! of an expanded stage (`stages.<stage>@<label>.params.<key>=…` changes that one). The
//! resolved document (saved beside the outputs) holds the expanded stages and no templates:
//! an expanded stage is exactly the stage one would write by hand under the same id, so
//! its fingerprint is that stage's. Problems of an expanded stage are located at the template
//! stage it came from, and name the expanded id.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::collect::deserialize_collecting;
use crate::names::{valid_id, MAX_STAGE_ID};
use crate::problem::{Found, KeyPath, SourceMap};

mod items;
mod locate;
mod substitute;

pub(crate) use items::MatrixOrders;
use items::{check_length, fanout, label_of, Fanout, Item};
pub(crate) use locate::Locator;
use locate::{Place, Report};
use substitute::{cost, resolve_siblings, shape, Budget, Instance, Shape};

/// Separates a template stage's name from its item's label in an expanded stage's id.
pub const INSTANCE_MARK: char = '@';

/// Most stages the templates of one file may expand to (a study has a few dozen): every
/// stage is validated before any runs, so the count is refused before anything is built.
pub const MAX_EXPANDED_STAGES: u64 = 10_000;

/// Most bytes of settings (keys and strings, plus `VALUE_COST` per value) the templates of
/// one file may expand to: 8 times the largest pipeline file.
pub const MAX_EXPANDED_BYTES: usize = 8 << 20;

/// What one value costs against [`MAX_EXPANDED_BYTES`] besides its text.
const VALUE_COST: usize = 16;

/// Longest piece of a user's string quoted in a message, in characters.
const MAX_QUOTED: usize = 60;

/// The top-level key of the templates.
const TEMPLATES: &str = "templates";
/// The top-level key of the stages.
const STAGES: &str = "stages";

/// One `[templates.<name>]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateDecl {
    /// Free text for humans.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    /// A list of items, or a table of named items.
    #[serde(default)]
    foreach: Option<toml::Value>,
    /// Variable → its values: one item per combination.
    #[serde(default)]
    matrix: Option<toml::Table>,
    /// The stages, each written like a `[stages.<id>]` table.
    #[serde(default)]
    stages: BTreeMap<String, toml::Table>,
}

/// `text`, cut to [`MAX_QUOTED`] characters.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// What a value is, for messages.
fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// A template, checked and split at its names, ready to expand.
struct Prepared {
    /// `templates.<name>`.
    at: KeyPath,
    fanout: Fanout,
    /// Its stages by name.
    stages: BTreeMap<String, Shape>,
}

/// What expanding a document's templates left for locating problems.
#[derive(Debug, Default)]
pub(crate) struct Expansion {
    /// Each expanded stage's id → the key path of the template stage it came from.
    pub(crate) origins: BTreeMap<String, KeyPath>,
}

/// Expands the document's `[templates]` into ordinary `[stages]` and removes them; problems
/// with the templates are located through `map`. Nothing is added when any template has a
/// problem.
pub(crate) fn expand(
    table: &mut toml::Table,
    orders: &MatrixOrders,
    map: &SourceMap,
    found: &mut Found,
) -> Expansion {
    let Some(raw) = table.remove(TEMPLATES) else {
        return Expansion::default();
    };
    let mut report = Report { map, found };
    let before = report.reports();
    let decls = read_templates(raw, &mut report);
    if !declared_size_fits(&decls, orders, &mut report) {
        return Expansion::default();
    }
    let ordinary: BTreeSet<String> = table
        .get(STAGES)
        .and_then(toml::Value::as_table)
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    let prepared: Vec<Prepared> = decls
        .iter()
        .filter_map(|(name, decl)| prepare(name, decl, orders, &ordinary, &mut report))
        .collect();
    if report.reports() != before {
        return Expansion::default();
    }
    let Some((stages, origins)) = instances(&prepared, &ordinary, &mut report) else {
        return Expansion::default();
    };
    let target = table
        .entry(STAGES)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(target) = target.as_table_mut() {
        target.extend(stages);
    }
    Expansion { origins }
}

/// The `[templates]` table as declarations, each template read on its own (a problem in one
/// is retried within it, not the whole table).
fn read_templates(raw: toml::Value, report: &mut Report<'_>) -> BTreeMap<String, TemplateDecl> {
    let at = KeyPath::keys([TEMPLATES]);
    let mut problem = |key, message, unknown| report.deserialization(key, message, unknown);
    let entries: BTreeMap<String, toml::Value> =
        deserialize_collecting(raw, &at, &mut problem).unwrap_or_default();
    entries
        .into_iter()
        .filter_map(|(name, value)| {
            let decl = deserialize_collecting(value, &at.key(name.as_str()), &mut problem)?;
            Some((name, decl))
        })
        .collect()
}

/// Whether what the templates declare fits before any item is built: each list and matrix,
/// and all of them together, within [`MAX_EXPANDED_STAGES`] stages, then the matrices'
/// combinations within [`MAX_EXPANDED_BYTES`] of values and labels (reported when not).
fn declared_size_fits(
    decls: &BTreeMap<String, TemplateDecl>,
    orders: &MatrixOrders,
    report: &mut Report<'_>,
) -> bool {
    let before = report.reports();
    let mut stages = Some(0u64);
    let mut matrices = Vec::new();
    for (name, decl) in decls {
        let at = KeyPath::keys([TEMPLATES, name.as_str()]);
        let items = match (&decl.foreach, &decl.matrix) {
            (Some(toml::Value::Array(values)), None) => {
                if !check_length(values, &at.key("foreach"), report) {
                    continue;
                }
                values.len() as u64
            }
            (Some(toml::Value::Table(items)), None) => items.len() as u64,
            (None, Some(matrix)) => {
                let variables = orders.ordered(name, matrix);
                let Some(count) = matrix_count(&variables, &at.key("matrix"), report) else {
                    continue;
                };
                matrices.push((at.key("matrix"), variables, count));
                count
            }
            // No items, or both kinds: `prepare` says what is wrong.
            _ => 0,
        };
        // A template without stages still builds its items: count them as one stage each.
        let per_item = decl.stages.len().max(1) as u64;
        stages = stages.and_then(|n| n.checked_add(items.checked_mul(per_item)?));
    }
    if report.reports() != before {
        return false;
    }
    if stages.is_none_or(|n| n > MAX_EXPANDED_STAGES) {
        report.key(
            KeyPath::keys([TEMPLATES]),
            format!(
                "the templates expand to {} stages; at most {MAX_EXPANDED_STAGES}",
                stages.map_or("more than 2^64".to_string(), |n| n.to_string())
            ),
        );
        return false;
    }
    let mut budget = Budget(MAX_EXPANDED_BYTES);
    matrices
        .iter()
        .all(|(at, variables, count)| matrix_fits(variables, *count, at, &mut budget, report))
}

/// The lists of a matrix's variables (a variable that is no list counts for nothing here:
/// `prepare` says what is wrong with it).
fn matrix_columns<'a>(variables: &[(&str, &'a toml::Value)]) -> Vec<&'a [toml::Value]> {
    variables
        .iter()
        .filter_map(|(_, values)| values.as_array().map(Vec::as_slice))
        .collect()
}

/// The number of a matrix's combinations, before they are built: `None`, the problem
/// reported, when a variable has more values than [`MAX_EXPANDED_STAGES`] or the
/// combinations are more.
fn matrix_count(
    variables: &[(&str, &toml::Value)],
    at: &KeyPath,
    report: &mut Report<'_>,
) -> Option<u64> {
    for (variable, values) in variables {
        if let toml::Value::Array(values) = values {
            if !check_length(values, &at.key(*variable), report) {
                return None;
            }
        }
    }
    let count = matrix_columns(variables)
        .iter()
        .try_fold(1u64, |n, column| n.checked_mul(column.len() as u64));
    match count {
        Some(n) if n <= MAX_EXPANDED_STAGES => Some(n),
        n => {
            report.value(
                at.clone(),
                format!(
                    "the matrix has {} combinations; a file's templates expand to at most {MAX_EXPANDED_STAGES} stages",
                    n.map_or("more than 2^64".to_string(), |n| n.to_string())
                ),
            );
            None
        }
    }
}

/// Whether the values and labels of a matrix's `count` combinations fit in `budget` (each
/// value of a variable of `n` values is in `count / n` of them); reported when not.
fn matrix_fits(
    variables: &[(&str, &toml::Value)],
    count: u64,
    at: &KeyPath,
    budget: &mut Budget,
    report: &mut Report<'_>,
) -> bool {
    for column in matrix_columns(variables).iter().filter(|c| !c.is_empty()) {
        let each = count / column.len() as u64;
        let bytes: usize = column.iter().map(|v| cost(v) + label_of(v).len() + 1).sum();
        let total = usize::try_from(each).map_or(usize::MAX, |each| each.saturating_mul(bytes));
        if budget.charge(total).is_err() {
            report.value(
                at.clone(),
                format!(
                    "the matrix's {count} combinations hold more than {MAX_EXPANDED_BYTES} bytes of values and labels; expand fewer or smaller values"
                ),
            );
            return false;
        }
    }
    true
}

/// Checks one template (its name, items, stage names and `${…}` names).
fn prepare(
    name: &str,
    decl: &TemplateDecl,
    orders: &MatrixOrders,
    ordinary: &BTreeSet<String>,
    report: &mut Report<'_>,
) -> Option<Prepared> {
    let before = report.reports();
    let at = KeyPath::keys([TEMPLATES, name]);
    if !valid_id(name) {
        report.key(
            at.clone(),
            "template names may only hold letters, digits, `_` and `-`",
        );
    }
    if decl.stages.is_empty() {
        report.key(
            at.clone(),
            "the template has no stages: add `[templates.<name>.stages.<stage>]` tables",
        );
    }
    let fanout = fanout(name, decl, orders, &at, report);
    for stage in decl.stages.keys() {
        let stage_at = at.key(STAGES).key(stage.as_str());
        if !valid_id(stage) {
            report.key(
                stage_at,
                format!(
                    "a template's stage names may only hold letters, digits, `_` and `-` (its stages are `<name>{INSTANCE_MARK}<item>`)"
                ),
            );
        } else if ordinary.contains(stage) {
            report.key(
                stage_at,
                format!(
                    "`{stage}` is also an ordinary stage's id: inside the template, `{stage}.<output>` would be ambiguous; rename one of them"
                ),
            );
        }
    }
    let fanout = fanout?;
    let stages = decl
        .stages
        .iter()
        .map(|(stage, value)| {
            let stage_at = at.key(STAGES).key(stage.as_str());
            let shape = shape(
                &toml::Value::Table(value.clone()),
                &fanout.names,
                Place::At(&stage_at),
                report,
            );
            (stage.clone(), shape)
        })
        .collect();
    (report.reports() == before).then_some(Prepared { at, fanout, stages })
}

/// The id of `stage`'s instance for `item`, when it is within [`MAX_STAGE_ID`] bytes (the
/// problem reported at `stage_at` when not).
fn instance_id(
    stage: &str,
    item: &Item,
    stage_at: &KeyPath,
    report: &mut Report<'_>,
) -> Option<String> {
    let length = stage.len() + INSTANCE_MARK.len_utf8() + item.label.len();
    if length > MAX_STAGE_ID {
        report.key(
            stage_at.clone(),
            format!(
                "expands to a stage id of {length} bytes (`{stage}{INSTANCE_MARK}{}`); a stage id holds at most {MAX_STAGE_ID} bytes",
                quoted(&item.label)
            ),
        );
        return None;
    }
    Some(format!("{stage}{INSTANCE_MARK}{}", item.label))
}

/// The instances' ids with their origins; `None` (the problems reported) when an id is too
/// long or taken twice.
fn instance_ids(
    prepared: &[Prepared],
    ordinary: &BTreeSet<String>,
    report: &mut Report<'_>,
) -> Option<BTreeMap<String, KeyPath>> {
    let before = report.reports();
    let mut origins: BTreeMap<String, KeyPath> = BTreeMap::new();
    for t in prepared {
        for stage in t.stages.keys() {
            let stage_at = t.at.key(STAGES).key(stage.as_str());
            for item in &t.fanout.items {
                let Some(id) = instance_id(stage, item, &stage_at, report) else {
                    continue;
                };
                if ordinary.contains(&id) {
                    report.key(
                        stage_at.clone(),
                        format!("expands to `{id}`, which is also an ordinary stage's id"),
                    );
                } else if let Some(other) = origins.get(&id) {
                    report.key(
                        stage_at.clone(),
                        format!("expands to `{id}`, as `{other}` does"),
                    );
                } else {
                    origins.insert(id, stage_at.clone());
                }
            }
        }
    }
    (report.reports() == before).then_some(origins)
}

/// Every instance of every template, keyed by id, with its origin; `None` (and the problem
/// reported) when they would be too large, when an id is too long or taken twice or when an
/// item lacks a value a stage names.
fn instances(
    prepared: &[Prepared],
    ordinary: &BTreeSet<String>,
    report: &mut Report<'_>,
) -> Option<(toml::Table, BTreeMap<String, KeyPath>)> {
    let origins = instance_ids(prepared, ordinary, report)?;
    let before = report.reports();
    let mut budget = Budget(MAX_EXPANDED_BYTES);
    let mut stages = toml::Table::new();
    for t in prepared {
        let siblings: BTreeSet<String> = t.stages.keys().cloned().collect();
        for item in &t.fanout.items {
            for (stage, shape) in &t.stages {
                let id = format!("{stage}{INSTANCE_MARK}{}", item.label);
                let stage_at = t.at.key(STAGES).key(stage.as_str());
                let instance = Instance {
                    item,
                    id: &id,
                    origin: &stage_at,
                };
                let built = instance
                    .build(shape, Place::At(&stage_at), &mut budget, report)
                    .and_then(|mut value| {
                        if let Some(inputs) = value.get_mut("inputs") {
                            resolve_siblings(inputs, &siblings, &item.label, &mut budget)?;
                        }
                        Ok(value)
                    });
                let Ok(value) = built else {
                    out_of_budget(&id, report);
                    return None;
                };
                stages.insert(id, value);
            }
        }
    }
    (report.reports() == before).then_some((stages, origins))
}

/// Reports that expansion ran out of [`MAX_EXPANDED_BYTES`] at `id`: the settings are too
/// large, unless the problems found on the way used it up (then checking stops there).
fn out_of_budget(id: &str, report: &mut Report<'_>) {
    if report.found.is_full() {
        report.found.stop();
        return;
    }
    report.key(
        KeyPath::keys([TEMPLATES]),
        format!(
            "the templates expand to more than {MAX_EXPANDED_BYTES} bytes of settings (stopped at `{id}`); expand fewer items or smaller stages"
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::items::{matrix_items, text_of, ItemValue, Name, Names};
    use super::substitute::{pieces, Piece};
    use super::*;
    use crate::problem::Problem;

    fn text(s: &str) -> Piece {
        Piece::Text(s.into())
    }

    #[test]
    fn strings_split_at_their_names_and_dollar_dollar_is_literal() {
        assert_eq!(
            pieces("m_${item}_${key}").unwrap(),
            [
                text("m_"),
                Piece::Name(Name::Item),
                text("_"),
                Piece::Name(Name::Key)
            ]
        );
        assert_eq!(
            pieces("${item.k}").unwrap(),
            [Piece::Name(Name::Field("k".into()))]
        );
        assert_eq!(pieces("cost $${x} $5").unwrap(), [text("cost ${x} $5")]);
        assert_eq!(
            pieces("${itme}").unwrap(),
            [Piece::Name(Name::Other("itme".into()))]
        );
        assert!(pieces("a ${item")
            .unwrap_err()
            .contains("unterminated `${`"));
    }

    #[test]
    fn names_are_checked_against_the_items() {
        assert!(Names::Plain.gives(&Name::Item));
        assert!(Names::Plain.gives(&Name::Key));
        let itme = Name::Other("itme".into());
        assert!(!Names::Plain.gives(&itme));
        let e = Names::Plain.why_not(&itme);
        assert!(
            e.contains("unknown name `${itme}` (did you mean `${item}`?)"),
            "{e}"
        );
        let named = Names::Named(["k".to_string(), "method".to_string()].into());
        assert!(named.gives(&Name::Field("k".into())));
        assert!(!named.gives(&Name::Item));
        let e = named.why_not(&Name::Item);
        assert!(e.contains("`${item.k}`, `${item.method}`"), "{e}");
        let e = named.why_not(&Name::Field("methd".into()));
        assert!(e.contains("did you mean `${item.method}`"), "{e}");
        assert!(!Names::Plain.gives(&Name::Field("k".into())));
        // Thousands of names: the message lists the first few and counts the rest.
        let many = Names::Named((0..5000).map(|i| format!("f{i}")).collect());
        let e = many.why_not(&Name::Field("g".into()));
        assert!(e.ends_with("`${item.f1013}`, … (4981 more)"), "{e}");
    }

    #[test]
    fn labels_are_the_items_text_with_a_floats_dot_as_underscore() {
        assert_eq!(label_of(&toml::Value::Integer(-3)), "-3");
        assert_eq!(label_of(&toml::Value::Float(0.5)), "0_5");
        assert_eq!(label_of(&toml::Value::Float(16.0)), "16_0");
        assert_eq!(label_of(&toml::Value::Boolean(true)), "true");
        assert_eq!(label_of(&"kmeans".into()), "kmeans");
        assert_eq!(text_of(&toml::Value::Float(1e-3)), "0.001");
    }

    fn item(label: &str, value: ItemValue) -> Item {
        Item {
            label: label.into(),
            value,
        }
    }

    fn filled(template: &str, item: &Item) -> (toml::Value, Vec<Problem>) {
        let value: toml::Value = template.into();
        let names = match &item.value {
            ItemValue::Plain(_) => Names::Plain,
            ItemValue::Named(v) => Names::Named(v.keys().cloned().collect()),
        };
        let map = SourceMap::new(std::path::Path::new("p.toml"), String::new(), None);
        let mut found = Found::default();
        let mut report = Report {
            map: &map,
            found: &mut found,
        };
        let root = KeyPath::default();
        let shape = shape(&value, &names, Place::At(&root), &mut report);
        assert_eq!(report.reports(), 0);
        let instance = Instance {
            item,
            id: "s@i",
            origin: &root,
        };
        let mut budget = Budget(MAX_EXPANDED_BYTES);
        let built = instance
            .build(&shape, Place::At(&root), &mut budget, &mut report)
            .unwrap();
        (built, found.into_problems().shown)
    }

    #[test]
    fn a_name_alone_keeps_the_items_type_and_inside_text_becomes_text() {
        let row = item(
            "kmeans-16",
            ItemValue::Named(
                [
                    ("method".to_string(), "kmeans".into()),
                    ("k".to_string(), toml::Value::Integer(16)),
                ]
                .into(),
            ),
        );
        assert_eq!(filled("${item.k}", &row).0, toml::Value::Integer(16));
        assert_eq!(
            filled("${item.method} with k=${item.k}", &row).0,
            toml::Value::String("kmeans with k=16".into())
        );
        assert_eq!(
            filled("${key}", &row).0,
            toml::Value::String("kmeans-16".into())
        );
        let plain = item("0_5", ItemValue::Plain(toml::Value::Float(0.5)));
        assert_eq!(filled("${item}", &plain).0, toml::Value::Float(0.5));
        assert_eq!(
            filled("lr=${item}", &plain).0,
            toml::Value::String("lr=0.5".into())
        );
    }

    #[test]
    fn an_item_without_a_named_value_is_a_problem_charged_like_a_value() {
        let sparse = item(
            "random",
            ItemValue::Named([("k".to_string(), toml::Value::Integer(1))].into()),
        );
        let (_, problems) = filled("${item.k}", &sparse);
        assert!(problems.is_empty());
        let map = SourceMap::new(std::path::Path::new("p.toml"), String::new(), None);
        let mut found = Found::default();
        let mut report = Report {
            map: &map,
            found: &mut found,
        };
        let origin = KeyPath::keys(["templates", "t", "stages", "s"]);
        let instance = Instance {
            item: &sparse,
            id: "s@random",
            origin: &origin,
        };
        let shape = Shape::Text(vec![Piece::Name(Name::Field("top_k".into()))]);
        let at = KeyPath::keys(["params", "top_k"]);
        let mut budget = Budget(MAX_EXPANDED_BYTES);
        instance
            .build(&shape, Place::At(&at), &mut budget, &mut report)
            .unwrap();
        assert!(budget.0 < MAX_EXPANDED_BYTES - VALUE_COST);
        // Its words are charged: a budget too small for them runs out.
        let mut small = Budget(VALUE_COST);
        assert!(instance
            .build(&shape, Place::At(&at), &mut small, &mut report)
            .is_err());
        let problems = found.into_problems().shown;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, at);
        assert!(problems[0].message.contains(
            "item `random` has no value for `${item.top_k}` (expanding `s@random` from `templates.t.stages.s`)"
        ));
    }

    #[test]
    fn siblings_resolve_to_the_same_item_and_other_references_stay() {
        let mut inputs: toml::Value = toml::from_str::<toml::Table>(
            r#"source = ["norm.visual"]
targets = ["targets.visual", "other.x"]
one = "targets.visual""#,
        )
        .unwrap()
        .into();
        let siblings: BTreeSet<String> = ["targets".to_string()].into();
        let mut budget = Budget(MAX_EXPANDED_BYTES);
        resolve_siblings(&mut inputs, &siblings, "kmeans", &mut budget).unwrap();
        assert_eq!(inputs["source"][0].as_str(), Some("norm.visual"));
        assert_eq!(inputs["targets"][0].as_str(), Some("targets@kmeans.visual"));
        assert_eq!(inputs["targets"][1].as_str(), Some("other.x"));
        assert_eq!(inputs["one"].as_str(), Some("targets@kmeans.visual"));
    }

    #[test]
    fn a_matrix_crosses_its_variables_in_the_written_order() {
        let matrix: toml::Table =
            toml::from_str("method = [\"kmeans\", \"cosine\"]\nk = [8, 16]").unwrap();
        let doc = toml_edit::Document::parse(
            "[templates.t]\nmatrix = { method = [\"kmeans\", \"cosine\"], k = [8, 16] }\n"
                .to_string(),
        )
        .unwrap();
        let orders = MatrixOrders::of_document(&doc);
        let variables = orders.ordered("t", &matrix);
        let map = SourceMap::new(std::path::Path::new("p.toml"), String::new(), None);
        let mut found = Found::default();
        let mut report = Report {
            map: &map,
            found: &mut found,
        };
        let fanout = matrix_items(&variables, &KeyPath::default(), &mut report).unwrap();
        let labels: Vec<&str> = fanout.items.iter().map(|i| i.label.as_str()).collect();
        assert_eq!(labels, ["kmeans-8", "kmeans-16", "cosine-8", "cosine-16"]);
        // Without the written order (a value from elsewhere): sorted by name.
        let sorted = MatrixOrders::default();
        let fanout = matrix_items(
            &sorted.ordered("t", &matrix),
            &KeyPath::default(),
            &mut report,
        )
        .unwrap();
        assert_eq!(fanout.items[0].label, "8-kmeans");
        // A `--set` of the whole matrix brings its own order; of one variable, appends it.
        let mut orders = MatrixOrders::default();
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        orders.note_override(&keys(&["templates", "t", "matrix"]), "{ z = [1], a = [2] }");
        orders.note_override(&keys(&["templates", "t", "matrix", "m"]), "[3]");
        assert_eq!(orders.0["t"], ["z", "a", "m"]);
    }
}
