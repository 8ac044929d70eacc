//! `${…}` in a template stage's strings: what each string refers to (its shape, checked once
//! per template), then each item's values filled in, within the expansion budget, and the
//! references to sibling stages pointed at the same item's instances.

use std::collections::BTreeSet;

use crate::names::valid_id;
use crate::problem::KeyPath;

use super::items::{text_of, Item, ItemValue, Name, Names};
use super::locate::{Place, Report};
use super::{quoted, INSTANCE_MARK, VALUE_COST};

/// A string value of a template stage, split at its names.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Piece {
    /// Literal text.
    Text(String),
    /// A `${…}`.
    Name(Name),
}

/// A template stage's value with its strings split at their names, ready to be filled in
/// for each item.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Shape {
    /// Taken as it is (no `${…}` inside), with its cost.
    Plain(toml::Value, usize),
    /// A string with at least one name.
    Text(Vec<Piece>),
    /// An array.
    Array(Vec<Shape>),
    /// A table.
    Table(Vec<(String, Shape)>),
}

/// What a value costs against [`MAX_EXPANDED_BYTES`].
pub(super) fn cost(value: &toml::Value) -> usize {
    VALUE_COST
        + match value {
            toml::Value::String(s) => s.len(),
            toml::Value::Array(items) => items.iter().map(cost).sum(),
            toml::Value::Table(t) => t.iter().map(|(k, v)| k.len() + cost(v)).sum(),
            _ => 0,
        }
}

/// What is left of [`MAX_EXPANDED_BYTES`].
pub(super) struct Budget(pub(super) usize);

/// The budget ran out.
#[derive(Debug)]
pub(super) struct Exhausted;

impl Budget {
    pub(super) fn charge(&mut self, bytes: usize) -> Result<(), Exhausted> {
        self.0 = self.0.checked_sub(bytes).ok_or(Exhausted)?;
        Ok(())
    }
}

/// Splits a string at its `${…}`; `$${` is a literal `${`.
pub(super) fn pieces(s: &str) -> Result<Vec<Piece>, String> {
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
pub(super) fn name_of(inner: &str) -> Name {
    match inner {
        "key" => Name::Key,
        "item" => Name::Item,
        _ => match inner.strip_prefix("item.") {
            Some(field) if valid_id(field) => Name::Field(field.to_string()),
            _ => Name::Other(inner.to_string()),
        },
    }
}

/// A template stage's value split at its names; problems with names are reported at `at`.
pub(super) fn shape(
    value: &toml::Value,
    names: &Names,
    at: Place<'_>,
    report: &mut Report<'_>,
) -> Shape {
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
pub(super) enum Filled<'a> {
    /// Text: `${key}`, or literal text.
    Label(&'a str),
    /// `${item}` or `${item.<name>}`.
    Value(&'a toml::Value),
}

impl<'a> Filled<'a> {
    /// As text inside a longer string.
    pub(super) fn text(&self) -> std::borrow::Cow<'a, str> {
        match self {
            Filled::Label(label) => std::borrow::Cow::Borrowed(*label),
            Filled::Value(value) => std::borrow::Cow::Owned(text_of(value)),
        }
    }
}

/// What `name` stands for in `item`; `None` when the item has no such value (checked names
/// only miss in a `foreach` table whose items name different values).
pub(super) fn fill<'a>(name: &Name, item: &'a Item) -> Option<Filled<'a>> {
    match (name, &item.value) {
        (Name::Key, _) => Some(Filled::Label(&item.label)),
        (Name::Item, ItemValue::Plain(value)) => Some(Filled::Value(value)),
        (Name::Field(f), ItemValue::Named(values)) => values.get(f).map(Filled::Value),
        _ => None,
    }
}

/// One instance of a template stage: its values filled in for `item`.
pub(super) struct Instance<'a> {
    pub(super) item: &'a Item,
    /// Its id.
    pub(super) id: &'a str,
    /// The template stage's key path.
    pub(super) origin: &'a KeyPath,
}

impl Instance<'_> {
    /// The value of `shape` (at `at` in the template stage) for this item. A name the item
    /// has no value for is a problem, whose words are charged to `budget` like a value, so
    /// a name missing from every item of a large template runs out of it as its values would.
    pub(super) fn build(
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
    pub(super) fn text(
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
pub(super) fn resolve_siblings(
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
