//! The items a template fans out over: a `foreach` list or table, or every combination of a
//! `matrix` (in the order the file names its variables), each with its label; refused with
//! the key located when an item cannot be one.

use std::collections::{BTreeMap, BTreeSet};

use crate::names::{suggest, valid_id};
use crate::problem::{listed, KeyPath};

use super::locate::Report;
use super::{quoted, type_name, TemplateDecl, MAX_EXPANDED_STAGES, TEMPLATES};

/// What `${item…}` stands for in one instance.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ItemValue {
    /// A plain value: `${item}`.
    Plain(toml::Value),
    /// Named values (a matrix row, or a `foreach` table of tables): `${item.<name>}`.
    Named(BTreeMap<String, toml::Value>),
}

/// One item of a template.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Item {
    /// The part of its stages' ids after the `@`; also `${key}`.
    pub(super) label: String,
    /// What `${item…}` stands for.
    pub(super) value: ItemValue,
}

/// A template's items and the names they give.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Fanout {
    pub(super) items: Vec<Item>,
    pub(super) names: Names,
}

/// Strings, numbers and booleans: the values an item may be.
pub(super) fn is_plain(value: &toml::Value) -> bool {
    matches!(
        value,
        toml::Value::String(_)
            | toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Boolean(_)
    )
}

/// A plain value as (part of) a label: its text, a float's `.` written `_`.
pub(super) fn label_of(value: &toml::Value) -> String {
    match value {
        toml::Value::Float(_) => text_of(value).replace('.', "_"),
        other => text_of(other),
    }
}

/// The order in which each template's `matrix` names its variables, as written: a
/// `toml::Table` keeps its keys sorted, the file (and each `--set` value) keeps them in order.
#[derive(Debug, Default)]
pub(crate) struct MatrixOrders(pub(super) BTreeMap<String, Vec<String>>);

/// The keys of a table-like item, in order.
pub(super) fn keys_in_order(item: &toml_edit::Item) -> Option<Vec<String>> {
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
    pub(super) fn read_templates(&mut self, templates: &toml_edit::Item) {
        let Some(table) = templates.as_table_like() else {
            return;
        };
        for (name, template) in table.iter() {
            self.read_template(name, template);
        }
    }

    /// Reads the order of one template's matrix.
    pub(super) fn read_template(&mut self, name: &str, template: &toml_edit::Item) {
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
    pub(super) fn ordered<'a>(
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

/// The items of a template: its `foreach` or its `matrix`.
pub(super) fn fanout(
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
pub(super) fn check_plain(value: &toml::Value, at: &KeyPath, report: &mut Report<'_>) -> bool {
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
pub(super) fn check_label(
    value: &toml::Value,
    at: &KeyPath,
    report: &mut Report<'_>,
) -> Option<String> {
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
pub(super) fn foreach_items(
    foreach: &toml::Value,
    at: &KeyPath,
    report: &mut Report<'_>,
) -> Option<Fanout> {
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
pub(super) fn check_length(values: &[toml::Value], at: &KeyPath, report: &mut Report<'_>) -> bool {
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
pub(super) fn labelled<'a>(
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
pub(super) fn foreach_list(
    values: &[toml::Value],
    at: &KeyPath,
    report: &mut Report<'_>,
) -> Option<Fanout> {
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
pub(super) fn foreach_table(
    table: &toml::Table,
    at: &KeyPath,
    report: &mut Report<'_>,
) -> Option<Fanout> {
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
pub(super) fn matrix_items(
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
pub(super) fn combinations(columns: &[(&str, Vec<(String, &toml::Value)>)]) -> Vec<Item> {
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

/// The `${…}` names a template's items give.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Names {
    /// `${item}` and `${key}`.
    Plain,
    /// `${item.<name>}` for these names, and `${key}`.
    Named(BTreeSet<String>),
}

impl Names {
    /// The names, as a user writes them (made one by one: there may be thousands).
    pub(super) fn shown(&self) -> impl Iterator<Item = String> + '_ {
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
    pub(super) fn count(&self) -> usize {
        match self {
            Names::Plain => 2,
            Names::Named(fields) => 1 + fields.len(),
        }
    }

    /// Whether a template with these items can fill in `name`.
    pub(super) fn gives(&self, name: &Name) -> bool {
        match (name, self) {
            (Name::Key, _) | (Name::Item, Names::Plain) => true,
            (Name::Field(f), Names::Named(fields)) => fields.contains(f),
            _ => false,
        }
    }

    /// Why a template with these items cannot fill in `name`.
    pub(super) fn why_not(&self, name: &Name) -> String {
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

/// A plain value as text inside a longer string: strings as they are, numbers and booleans
/// as TOML writes them.
pub(super) fn text_of(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A name inside `${…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Name {
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
