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
use crate::names::{suggest, valid_id, MAX_STAGE_ID};
use crate::problem::{listed, Found, KeyPath, Location, ParamProblem, Problem, Seg, SourceMap};

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

/// What `${item…}` stands for in one instance.
#[derive(Debug, Clone, PartialEq)]
enum ItemValue {
    /// A plain value: `${item}`.
    Plain(toml::Value),
    /// Named values (a matrix row, or a `foreach` table of tables): `${item.<name>}`.
    Named(BTreeMap<String, toml::Value>),
}

/// One item of a template.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    /// The part of its stages' ids after the `@`; also `${key}`.
    label: String,
    /// What `${item…}` stands for.
    value: ItemValue,
}

/// The `${…}` names a template's items give.
#[derive(Debug, Clone, PartialEq)]
enum Names {
    /// `${item}` and `${key}`.
    Plain,
    /// `${item.<name>}` for these names, and `${key}`.
    Named(BTreeSet<String>),
}

/// A template's items and the names they give.
#[derive(Debug, Clone, PartialEq)]
struct Fanout {
    items: Vec<Item>,
    names: Names,
}

/// A name inside `${…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    /// `${key}`.
    Key,
    /// `${item}`.
    Item,
    /// `${item.<name>}`.
    Field(String),
    /// Anything else (an error).
    Other(String),
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Key => write!(f, "${{key}}"),
            Name::Item => write!(f, "${{item}}"),
            Name::Field(name) => write!(f, "${{item.{name}}}"),
            Name::Other(text) => write!(f, "${{{}}}", quoted(text)),
        }
    }
}

/// A string value of a template stage, split at its names.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// Literal text.
    Text(String),
    /// A `${…}`.
    Name(Name),
}

/// A template stage's value with its strings split at their names, ready to be filled in
/// for each item.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// Taken as it is (no `${…}` inside), with its cost.
    Plain(toml::Value, usize),
    /// A string with at least one name.
    Text(Vec<Piece>),
    /// An array.
    Array(Vec<Shape>),
    /// A table.
    Table(Vec<(String, Shape)>),
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

/// Strings, numbers and booleans: the values an item may be.
fn is_plain(value: &toml::Value) -> bool {
    matches!(
        value,
        toml::Value::String(_)
            | toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Boolean(_)
    )
}

/// A plain value as text inside a longer string: strings as they are, numbers and booleans
/// as TOML writes them.
fn text_of(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A plain value as (part of) a label: its text, a float's `.` written `_`.
fn label_of(value: &toml::Value) -> String {
    match value {
        toml::Value::Float(_) => text_of(value).replace('.', "_"),
        other => text_of(other),
    }
}

/// What a value costs against [`MAX_EXPANDED_BYTES`].
fn cost(value: &toml::Value) -> usize {
    VALUE_COST
        + match value {
            toml::Value::String(s) => s.len(),
            toml::Value::Array(items) => items.iter().map(cost).sum(),
            toml::Value::Table(t) => t.iter().map(|(k, v)| k.len() + cost(v)).sum(),
            _ => 0,
        }
}

/// What is left of [`MAX_EXPANDED_BYTES`].
struct Budget(usize);

/// The budget ran out.
#[derive(Debug)]
struct Exhausted;

impl Budget {
    fn charge(&mut self, bytes: usize) -> Result<(), Exhausted> {
        self.0 = self.0.checked_sub(bytes).ok_or(Exhausted)?;
        Ok(())
    }
}

/// Splits a string at its `${…}`; `$${` is a literal `${`.
fn pieces(s: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            text.push_str(&rest[..at - 1]);
            text.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        text.push_str(&rest[..at]);
        let inner = &rest[at + 2..];
        let Some(end) = inner.find('}') else {
            return Err(format!(
                "unterminated `${{` in \"{}\" (a name is written `${{item}}`; `$${{` is a literal `${{`)",
                quoted(s)
            ));
        };
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        out.push(Piece::Name(name_of(&inner[..end])));
        rest = &inner[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// The name written inside `${…}`.
fn name_of(inner: &str) -> Name {
    match inner {
        "key" => Name::Key,
        "item" => Name::Item,
        _ => match inner.strip_prefix("item.") {
            Some(field) if valid_id(field) => Name::Field(field.to_string()),
            _ => Name::Other(inner.to_string()),
        },
    }
}

impl Names {
    /// The names, as a user writes them (made one by one: there may be thousands).
    fn shown(&self) -> impl Iterator<Item = String> + '_ {
        let (item, fields) = match self {
            Names::Plain => (Some(Name::Item), None),
            Names::Named(fields) => (None, Some(fields)),
        };
        std::iter::once(Name::Key)
            .chain(item)
            .chain(fields.into_iter().flatten().map(|f| Name::Field(f.clone())))
            .map(|name| name.to_string())
    }

    /// How many names there are.
    fn count(&self) -> usize {
        match self {
            Names::Plain => 2,
            Names::Named(fields) => 1 + fields.len(),
        }
    }

    /// Whether a template with these items can fill in `name`.
    fn gives(&self, name: &Name) -> bool {
        match (name, self) {
            (Name::Key, _) | (Name::Item, Names::Plain) => true,
            (Name::Field(f), Names::Named(fields)) => fields.contains(f),
            _ => false,
        }
    }

    /// Why a template with these items cannot fill in `name`.
    fn why_not(&self, name: &Name) -> String {
        match (name, self) {
            (Name::Item, Names::Named(fields)) => format!(
                "`${{item}}` holds named values here: write one of {}",
                listed(
                    fields
                        .iter()
                        .map(|f| format!("`{}`", Name::Field(f.clone()))),
                    fields.len()
                )
            ),
            (Name::Field(f), Names::Plain) => format!(
                "the items are plain values, which have no named value `{f}`: write `${{item}}`"
            ),
            _ => format!(
                "unknown name `{name}`{}; this template's items give {}",
                suggest(&name.to_string(), self.shown()),
                listed(self.shown().map(|n| format!("`{n}`")), self.count())
            ),
        }
    }
}

/// The order in which each template's `matrix` names its variables, as written: a
/// `toml::Table` keeps its keys sorted, the file (and each `--set` value) keeps them in order.
#[derive(Debug, Default)]
pub(crate) struct MatrixOrders(BTreeMap<String, Vec<String>>);

/// The keys of a table-like item, in order.
fn keys_in_order(item: &toml_edit::Item) -> Option<Vec<String>> {
    item.as_table_like()
        .map(|t| t.iter().map(|(k, _)| k.to_string()).collect())
}

impl MatrixOrders {
    /// The orders of the matrices written in `doc`.
    pub(crate) fn of_document(doc: &toml_edit::Document<String>) -> Self {
        let mut orders = MatrixOrders::default();
        if let Some(templates) = doc.as_item().get(TEMPLATES) {
            orders.read_templates(templates);
        }
        orders
    }

    /// Reads the orders of a `templates` table.
    fn read_templates(&mut self, templates: &toml_edit::Item) {
        let Some(table) = templates.as_table_like() else {
            return;
        };
        for (name, template) in table.iter() {
            self.read_template(name, template);
        }
    }

    /// Reads the order of one template's matrix.
    fn read_template(&mut self, name: &str, template: &toml_edit::Item) {
        if let Some(order) = template.get("matrix").and_then(keys_in_order) {
            self.0.insert(name.to_string(), order);
        }
    }

    /// Takes into account a `--set keys=raw` override (already applied to the document).
    pub(crate) fn note_override(&mut self, keys: &[String], raw: &str) {
        let value = || {
            crate::nesting::too_deep(raw)
                .is_none()
                .then(|| toml_edit::Document::parse(format!("v = {raw}")).ok())
                .flatten()
                .and_then(|doc| doc.as_item().get("v").cloned())
        };
        match keys {
            [top] if top == TEMPLATES => {
                self.0.clear();
                if let Some(v) = value() {
                    self.read_templates(&v);
                }
            }
            [top, name] if top == TEMPLATES => {
                self.0.remove(name);
                if let Some(v) = value() {
                    self.read_template(name, &v);
                }
            }
            [top, name, matrix] if top == TEMPLATES && matrix == "matrix" => {
                match value().as_ref().and_then(keys_in_order) {
                    Some(order) => self.0.insert(name.clone(), order),
                    None => self.0.remove(name),
                };
            }
            [top, name, matrix, variable, ..] if top == TEMPLATES && matrix == "matrix" => {
                // Noted again if already there: `ordered` keeps the first (no search per
                // override, however many there are).
                self.0
                    .entry(name.clone())
                    .or_default()
                    .push(variable.clone());
            }
            _ => {}
        }
    }

    /// `matrix`'s variables: in the written order, any not seen written after them (sorted).
    fn ordered<'a>(
        &self,
        template: &str,
        matrix: &'a toml::Table,
    ) -> Vec<(&'a str, &'a toml::Value)> {
        let written = self.0.get(template).map(Vec::as_slice).unwrap_or(&[]);
        let mut placed: BTreeSet<&str> = BTreeSet::new();
        let mut out: Vec<(&str, &toml::Value)> = Vec::new();
        let in_order = written
            .iter()
            .filter_map(|name| matrix.get_key_value(name.as_str()))
            .chain(matrix.iter());
        for (k, v) in in_order {
            if placed.insert(k.as_str()) {
                out.push((k.as_str(), v));
            }
        }
        out
    }
}

/// Reports the problems of the templates, located through the source map.
struct Report<'a> {
    map: &'a SourceMap,
    found: &'a mut Found,
}

impl Report<'_> {
    /// A problem with a key itself.
    fn key(&mut self, at: KeyPath, message: impl Into<String>) {
        let map = self.map;
        self.found.add(|| map.problem(at, message));
    }

    /// A problem with a value.
    fn value(&mut self, at: KeyPath, message: impl Into<String>) {
        let map = self.map;
        self.found.add(|| map.value_problem(at, message));
    }

    /// A problem with the value at `place`, worded by `message` (both made only for a
    /// problem that is shown).
    fn value_at(&mut self, place: Place<'_>, message: impl FnOnce() -> String) {
        let map = self.map;
        self.found
            .add(|| map.value_problem(place.path(), message()));
    }

    /// How many problems were reported so far: a step compares it before and after.
    fn reports(&self) -> usize {
        self.found.reports()
    }

    /// A problem of deserialisation (`unknown` when the key itself is at fault); whether
    /// to go on checking.
    fn deserialization(
        &mut self,
        at: KeyPath,
        message: String,
        unknown: bool,
    ) -> std::ops::ControlFlow<()> {
        if unknown {
            self.key(at, message)
        } else {
            self.value(at, message)
        }
        self.found.keep_checking()
    }
}

/// Where a value lies below a template stage, as steps from a known path: the [`KeyPath`]
/// is made only for a problem that is shown, so walking a stage copies no path per value.
#[derive(Clone, Copy)]
enum Place<'a> {
    /// At this path.
    At(&'a KeyPath),
    /// Key `.1` of the table at `.0`.
    Key(&'a Place<'a>, &'a str),
    /// Element `.1` of the array at `.0`.
    Index(&'a Place<'a>, usize),
}

impl Place<'_> {
    /// The key path of this place.
    fn path(&self) -> KeyPath {
        match self {
            Place::At(path) => (*path).clone(),
            Place::Key(parent, key) => {
                let mut path = parent.path();
                path.0.push(Seg::Key(key.to_string()));
                path
            }
            Place::Index(parent, i) => {
                let mut path = parent.path();
                path.0.push(Seg::Index(*i));
                path
            }
        }
    }
}

/// The items of a template: its `foreach` or its `matrix`.
fn fanout(
    name: &str,
    decl: &TemplateDecl,
    orders: &MatrixOrders,
    at: &KeyPath,
    report: &mut Report<'_>,
) -> Option<Fanout> {
    match (&decl.foreach, &decl.matrix) {
        (Some(_), Some(_)) => {
            report.key(
                at.key("matrix"),
                "a template takes `foreach` or `matrix`, not both",
            );
            None
        }
        (None, None) => {
            report.key(
                at.clone(),
                "a template needs `foreach` (a list of items, or a table of named items) or `matrix` (a table of lists of values)",
            );
            None
        }
        (Some(foreach), None) => foreach_items(foreach, &at.key("foreach"), report),
        (None, Some(matrix)) => {
            matrix_items(&orders.ordered(name, matrix), &at.key("matrix"), report)
        }
    }
}

/// Checks that `value` may be (part of) an item; says why not.
fn check_plain(value: &toml::Value, at: &KeyPath, report: &mut Report<'_>) -> bool {
    if !is_plain(value) {
        report.value(
            at.clone(),
            format!(
                "an item is a string, a number or a boolean, not {}",
                type_name(value)
            ),
        );
        return false;
    }
    true
}

/// Checks that a plain value can be (part of) a stage id; says why not.
fn check_label(value: &toml::Value, at: &KeyPath, report: &mut Report<'_>) -> Option<String> {
    let label = label_of(value);
    if !valid_id(&label) {
        report.value(
            at.clone(),
            format!(
                "`{}` cannot be part of a stage id (letters, digits, `_` and `-`): name the items with a `foreach` table, e.g. `foreach = {{ a = \"…\" }}`",
                quoted(&label)
            ),
        );
        return None;
    }
    Some(label)
}

/// Items of a `foreach`: a list of plain values, or a table of named items.
fn foreach_items(foreach: &toml::Value, at: &KeyPath, report: &mut Report<'_>) -> Option<Fanout> {
    match foreach {
        toml::Value::Array(values) if !values.is_empty() => foreach_list(values, at, report),
        toml::Value::Table(table) if !table.is_empty() => foreach_table(table, at, report),
        toml::Value::Array(_) | toml::Value::Table(_) => {
            report.value(
                at.clone(),
                "`foreach` is empty: a template needs at least one item",
            );
            None
        }
        other => {
            report.value(
                at.clone(),
                format!(
                    "`foreach` takes a list of items or a table of named items, not {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// Refuses a list of values longer than [`MAX_EXPANDED_STAGES`] (before it is walked).
fn check_length(values: &[toml::Value], at: &KeyPath, report: &mut Report<'_>) -> bool {
    if values.len() as u64 > MAX_EXPANDED_STAGES {
        report.value(
            at.clone(),
            format!(
                "{} values; a file's templates expand to at most {MAX_EXPANDED_STAGES} stages",
                values.len()
            ),
        );
        return false;
    }
    true
}

/// The plain values of a list with their labels: each a string, number or boolean, listed
/// once, whose label is not another's.
fn labelled<'a>(
    values: &'a [toml::Value],
    at: &KeyPath,
    report: &mut Report<'_>,
) -> Vec<(String, &'a toml::Value)> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let value_at = at.index(i);
        if !check_plain(value, &value_at, report) {
            continue;
        }
        let Some(label) = check_label(value, &value_at, report) else {
            continue;
        };
        match seen.get(&label) {
            Some(&j) if values[j] == *value => {
                report.value(value_at, format!("`{}` is listed twice", quoted(&text_of(value))))
            }
            Some(&j) => report.value(
                value_at,
                format!(
                    "{value} and {} both give the stage ids `…@{label}`: name the items with a `foreach` table",
                    values[j]
                ),
            ),
            None => {
                seen.insert(label.clone(), i);
                out.push((label, value));
            }
        }
    }
    out
}

/// Items of a `foreach` list: each labelled by itself.
fn foreach_list(values: &[toml::Value], at: &KeyPath, report: &mut Report<'_>) -> Option<Fanout> {
    let before = report.reports();
    let items = labelled(values, at, report)
        .into_iter()
        .map(|(label, value)| Item {
            label,
            value: ItemValue::Plain(value.clone()),
        })
        .collect();
    (report.reports() == before).then_some(Fanout {
        items,
        names: Names::Plain,
    })
}

/// Items of a `foreach` table: each labelled by its name, each a plain value or a table of
/// named plain values (all of one sort).
fn foreach_table(table: &toml::Table, at: &KeyPath, report: &mut Report<'_>) -> Option<Fanout> {
    let before = report.reports();
    let mut items = Vec::new();
    for (label, value) in table {
        let item_at = at.key(label.as_str());
        if !valid_id(label) {
            report.key(
                item_at.clone(),
                format!(
                    "`{}` cannot be part of a stage id: an item's name holds letters, digits, `_` and `-`",
                    quoted(label)
                ),
            );
        }
        let value = match value {
            toml::Value::Table(fields) => {
                for (field, v) in fields {
                    let field_at = item_at.key(field.as_str());
                    if !valid_id(field) {
                        report.key(
                            field_at.clone(),
                            format!(
                                "`{}` cannot be written `${{item.{0}}}`: a name holds letters, digits, `_` and `-`",
                                quoted(field)
                            ),
                        );
                    }
                    check_plain(v, &field_at, report);
                }
                ItemValue::Named(fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            plain => {
                check_plain(plain, &item_at, report);
                ItemValue::Plain(plain.clone())
            }
        };
        items.push(Item {
            label: label.clone(),
            value,
        });
    }
    let named = items
        .iter()
        .filter(|i| matches!(i.value, ItemValue::Named(_)))
        .count();
    if named != 0 && named != items.len() {
        report.value(
            at.clone(),
            "the items of a `foreach` table are all plain values or all tables of named values",
        );
    }
    let names = if named == 0 {
        Names::Plain
    } else {
        Names::Named(
            items
                .iter()
                .filter_map(|i| match &i.value {
                    ItemValue::Named(fields) => Some(fields.keys().cloned()),
                    ItemValue::Plain(_) => None,
                })
                .flatten()
                .collect(),
        )
    };
    (report.reports() == before).then_some(Fanout { items, names })
}

/// Items of a `matrix`: every combination of its variables' values, labelled by the values'
/// labels joined by `-` in the variables' order (their number and size checked already, see
/// [`matrix_count`] and [`matrix_fits`]).
fn matrix_items(
    variables: &[(&str, &toml::Value)],
    at: &KeyPath,
    report: &mut Report<'_>,
) -> Option<Fanout> {
    if variables.is_empty() {
        report.value(
            at.clone(),
            "`matrix` names no variable: a template needs at least one item",
        );
        return None;
    }
    let before = report.reports();
    let mut columns: Vec<(&str, Vec<(String, &toml::Value)>)> = Vec::new();
    for (variable, values) in variables {
        let var_at = at.key(*variable);
        if !valid_id(variable) {
            report.key(
                var_at.clone(),
                format!(
                    "`{}` cannot be written `${{item.{0}}}`: a name holds letters, digits, `_` and `-`",
                    quoted(variable)
                ),
            );
        }
        let values = match values {
            toml::Value::Array(values) if !values.is_empty() => values,
            toml::Value::Array(_) => {
                report.value(
                    var_at,
                    format!("`matrix.{}` has no values", quoted(variable)),
                );
                continue;
            }
            other => {
                report.value(
                    var_at,
                    format!(
                        "a matrix variable takes a list of values, not {}",
                        type_name(other)
                    ),
                );
                continue;
            }
        };
        let column = labelled(values, &var_at, report);
        columns.push((*variable, column));
    }
    if report.reports() != before {
        return None;
    }
    let items = combinations(&columns);
    let mut labels = BTreeSet::new();
    for item in &items {
        if !labels.insert(item.label.as_str()) {
            report.value(
                at.clone(),
                format!(
                    "two combinations give the stage ids `…@{}` (labels are joined by `-`): name the items with a `foreach` table",
                    item.label
                ),
            );
            return None;
        }
    }
    Some(Fanout {
        items,
        names: Names::Named(columns.iter().map(|(v, _)| v.to_string()).collect()),
    })
}

/// Every combination of the columns' values, the last column varying fastest: combination
/// `k` picks from each column the digit of `k` written in the columns' sizes.
fn combinations(columns: &[(&str, Vec<(String, &toml::Value)>)]) -> Vec<Item> {
    let count: usize = columns.iter().map(|(_, column)| column.len()).product();
    (0..count)
        .map(|k| {
            let mut picked = vec![0; columns.len()];
            let mut rest = k;
            for (i, (_, column)) in columns.iter().enumerate().rev() {
                picked[i] = rest % column.len();
                rest /= column.len();
            }
            let mut labels = Vec::with_capacity(columns.len());
            let mut values = BTreeMap::new();
            for ((variable, column), &i) in columns.iter().zip(&picked) {
                let (label, value) = &column[i];
                labels.push(label.as_str());
                values.insert(variable.to_string(), (*value).clone());
            }
            Item {
                label: labels.join("-"),
                value: ItemValue::Named(values),
            }
        })
        .collect()
}

/// A template stage's value split at its names; problems with names are reported at `at`.
fn shape(value: &toml::Value, names: &Names, at: Place<'_>, report: &mut Report<'_>) -> Shape {
    match value {
        toml::Value::String(s) if s.contains("${") => match pieces(s) {
            Ok(pieces) => {
                for piece in &pieces {
                    if let Piece::Name(name) = piece {
                        if !names.gives(name) {
                            report.value_at(at, || names.why_not(name));
                        }
                    }
                }
                Shape::Text(pieces)
            }
            Err(message) => {
                report.value_at(at, || message);
                Shape::Plain(value.clone(), cost(value))
            }
        },
        toml::Value::Array(items) => Shape::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| shape(v, names, Place::Index(&at, i), report))
                .collect(),
        ),
        toml::Value::Table(table) => Shape::Table(
            table
                .iter()
                .map(|(k, v)| (k.clone(), shape(v, names, Place::Key(&at, k), report)))
                .collect(),
        ),
        plain => Shape::Plain(plain.clone(), cost(plain)),
    }
}

/// A piece of a string filled in for one item.
enum Filled<'a> {
    /// Text: `${key}`, or literal text.
    Label(&'a str),
    /// `${item}` or `${item.<name>}`.
    Value(&'a toml::Value),
}

impl<'a> Filled<'a> {
    /// As text inside a longer string.
    fn text(&self) -> std::borrow::Cow<'a, str> {
        match self {
            Filled::Label(label) => std::borrow::Cow::Borrowed(*label),
            Filled::Value(value) => std::borrow::Cow::Owned(text_of(value)),
        }
    }
}

/// What `name` stands for in `item`; `None` when the item has no such value (checked names
/// only miss in a `foreach` table whose items name different values).
fn fill<'a>(name: &Name, item: &'a Item) -> Option<Filled<'a>> {
    match (name, &item.value) {
        (Name::Key, _) => Some(Filled::Label(&item.label)),
        (Name::Item, ItemValue::Plain(value)) => Some(Filled::Value(value)),
        (Name::Field(f), ItemValue::Named(values)) => values.get(f).map(Filled::Value),
        _ => None,
    }
}

/// One instance of a template stage: its values filled in for `item`.
struct Instance<'a> {
    item: &'a Item,
    /// Its id.
    id: &'a str,
    /// The template stage's key path.
    origin: &'a KeyPath,
}

impl Instance<'_> {
    /// The value of `shape` (at `at` in the template stage) for this item. A name the item
    /// has no value for is a problem, whose words are charged to `budget` like a value, so
    /// a name missing from every item of a large template runs out of it as its values would.
    fn build(
        &self,
        shape: &Shape,
        at: Place<'_>,
        budget: &mut Budget,
        report: &mut Report<'_>,
    ) -> Result<toml::Value, Exhausted> {
        Ok(match shape {
            Shape::Plain(value, cost) => {
                budget.charge(*cost)?;
                value.clone()
            }
            Shape::Text(pieces) => self.text(pieces, at, budget, report)?,
            Shape::Array(items) => {
                budget.charge(VALUE_COST)?;
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.build(item, Place::Index(&at, i), budget, report)?);
                }
                toml::Value::Array(out)
            }
            Shape::Table(entries) => {
                budget.charge(VALUE_COST)?;
                let mut out = toml::Table::new();
                for (key, value) in entries {
                    budget.charge(key.len())?;
                    let value = self.build(value, Place::Key(&at, key), budget, report)?;
                    out.insert(key.clone(), value);
                }
                toml::Value::Table(out)
            }
        })
    }

    /// A string with names: the value itself when it is one name alone, else the text.
    fn text(
        &self,
        pieces: &[Piece],
        at: Place<'_>,
        budget: &mut Budget,
        report: &mut Report<'_>,
    ) -> Result<toml::Value, Exhausted> {
        let mut filled = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Text(text) => filled.push(Filled::Label(text)),
                Piece::Name(name) => match fill(name, self.item) {
                    Some(value) => filled.push(value),
                    None => {
                        let message = format!(
                            "item `{}` has no value for `{name}` (expanding `{}` from `{}`)",
                            self.item.label, self.id, self.origin
                        );
                        budget.charge(VALUE_COST + message.len())?;
                        report.value_at(at, || message);
                        return Ok(toml::Value::String(String::new()));
                    }
                },
            }
        }
        if let ([Piece::Name(_)], [alone]) = (pieces, filled.as_slice()) {
            let value = match alone {
                Filled::Label(label) => toml::Value::String(label.to_string()),
                Filled::Value(value) => (*value).clone(),
            };
            budget.charge(cost(&value))?;
            return Ok(value);
        }
        let texts: Vec<std::borrow::Cow<'_, str>> = filled.iter().map(Filled::text).collect();
        let length: usize = texts.iter().map(|t| t.len()).sum();
        budget.charge(VALUE_COST + length)?;
        Ok(toml::Value::String(texts.concat()))
    }
}

/// Points references to a sibling (`"<sibling>.<output>"`, alone or in a list) at the same
/// item's instance.
fn resolve_siblings(
    inputs: &mut toml::Value,
    siblings: &BTreeSet<String>,
    label: &str,
    budget: &mut Budget,
) -> Result<(), Exhausted> {
    let Some(slots) = inputs.as_table_mut() else {
        return Ok(());
    };
    for (_, slot) in slots.iter_mut() {
        let refs: Vec<&mut toml::Value> = match slot {
            toml::Value::Array(items) => items.iter_mut().collect(),
            single => vec![single],
        };
        for reference in refs {
            let toml::Value::String(text) = reference else {
                continue;
            };
            let Some((stage, output)) = text.split_once('.') else {
                continue;
            };
            if siblings.contains(stage) {
                budget.charge(label.len() + 1)?;
                *text = format!("{stage}{INSTANCE_MARK}{label}.{output}");
            }
        }
    }
    Ok(())
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

/// Locates the problems of the expanded document: a key below an expanded stage is located
/// at the template stage it came from, unless a `--set` of that stage changed it.
pub(crate) struct Locator {
    map: SourceMap,
    origins: BTreeMap<String, KeyPath>,
    /// `--set` overrides of expanded (or `@`-named) stages, applied after expansion.
    instance_overrides: Vec<(KeyPath, String)>,
}

impl Locator {
    /// A locator over `map` for the stages `expansion` added.
    pub(crate) fn new(map: SourceMap, expansion: Expansion) -> Self {
        Locator {
            map,
            origins: expansion.origins,
            instance_overrides: Vec::new(),
        }
    }

    /// Records that `path` (below an expanded stage) was set by `arg`.
    pub(crate) fn add_instance_override(&mut self, path: KeyPath, arg: String) {
        self.instance_overrides.push((path, arg));
    }

    /// A problem with the key `key` itself (e.g. an unknown key).
    pub(crate) fn problem(&self, key: KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            location: self.locate(&key, false),
            key,
            message: message.into(),
        }
    }

    /// A problem with the value of `key`.
    pub(crate) fn value_problem(&self, key: KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            location: self.locate(&key, true),
            key,
            message: message.into(),
        }
    }

    /// A stage's own problem with its params, for a stage whose params are at `params`.
    pub(crate) fn param_problem(&self, problem: ParamProblem, params: &KeyPath) -> Problem {
        let key = params.join(&problem.path);
        if problem.at_key {
            self.problem(key, problem.message)
        } else {
            self.value_problem(key, problem.message)
        }
    }

    fn locate(&self, key: &KeyPath, at_value: bool) -> Location {
        if let Some((_, arg)) = self
            .instance_overrides
            .iter()
            .filter(|(p, _)| p.is_prefix_of(key) || key.is_prefix_of(p))
            .max_by_key(|(p, _)| p.0.len())
        {
            return Location::Override(arg.clone());
        }
        match self.origin_of(key) {
            Some(origin) => self.map.locate(&origin, at_value),
            None => self.map.locate(key, at_value),
        }
    }

    /// Where `stages.<expanded id>.<rest>` is written: `templates.<t>.stages.<stage>.<rest>`.
    fn origin_of(&self, key: &KeyPath) -> Option<KeyPath> {
        match key.0.as_slice() {
            [Seg::Key(top), Seg::Key(id), rest @ ..] if top == STAGES => self
                .origins
                .get(id)
                .map(|origin| origin.join(&KeyPath(rest.to_vec()))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
