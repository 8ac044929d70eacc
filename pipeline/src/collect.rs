//! Deserialising a TOML value while collecting every problem with its key path: what
//! reading a pipeline file and a stage's params share.

use std::ops::ControlFlow;

use serde::de::DeserializeOwned;

use crate::problem::{KeyPath, Seg};

/// Most attempts at deserialising one value: each after a problem is a fresh pass over the
/// whole value, so the attempts bound what a value with a problem in every entry costs.
const MAX_ATTEMPTS: usize = 16;

/// Deserialises `value` into `T`, reporting every problem rather than the first: after each
/// error the offending key is removed (so its default applies) and deserialisation retried,
/// up to [`MAX_ATTEMPTS`] times (then a last problem says checking stopped there), or until
/// `report` breaks (it has seen enough). `None` when the value cannot be read at all, or
/// checking stopped.
pub(crate) fn deserialize_collecting<T: DeserializeOwned>(
    mut value: toml::Value,
    base: &KeyPath,
    report: &mut dyn FnMut(KeyPath, String, bool) -> ControlFlow<()>,
) -> Option<T> {
    for _ in 0..MAX_ATTEMPTS {
        let result: Result<T, serde_path_to_error::Error<toml::de::Error>> =
            serde_path_to_error::deserialize(value.clone());
        let error = match result {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let mut path = KeyPath(
            error
                .path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { variant } => {
                        Some(Seg::Key(variant.clone()))
                    }
                    serde_path_to_error::Segment::Unknown => None,
                })
                .collect(),
        );
        let mut message = error.inner().message().trim().to_string();
        // A type that deserialises part of itself from buffered values (a tagged enum) names
        // the key it failed at itself: see [`at_key`].
        if let Some((key, rest)) = message
            .strip_prefix(AT_KEY)
            .and_then(|m| m.split_once("`: "))
            .map(|(k, r)| (k.to_string(), r.to_string()))
        {
            path.0
                .extend(key.split('.').map(|k| Seg::Key(k.to_string())));
            message = rest;
        }
        if let Some(field) = quoted_after(&message, "unknown field `") {
            if path.0.last() != Some(&Seg::Key(field.clone())) {
                path.0.push(Seg::Key(field));
            }
        }
        let unknown_key = message.starts_with("unknown field");
        let message = if unknown_key {
            message.replacen("unknown field", "unknown key", 1)
        } else {
            message
        };
        if report(base.join(&path), message, unknown_key).is_break()
            || !remove_at(&mut value, &path.0)
        {
            return None;
        }
    }
    let _ = report(
        base.clone(),
        format!("checking stopped here after {MAX_ATTEMPTS} problems; there may be more"),
        false,
    );
    None
}

/// How an error message names the key it belongs to (below where the error was raised).
const AT_KEY: &str = "at `";

/// A deserialisation error at `key` (dotted, below the value being deserialised), for types
/// whose `Deserialize` reads part of their input from buffered values, where serde cannot
/// track the path: the problem is still located at the key.
pub fn at_key<E: serde::de::Error>(key: &str, message: impl std::fmt::Display) -> E {
    E::custom(format!("{AT_KEY}{key}`: {message}"))
}

fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next().map(str::to_string)
}

fn remove_at(value: &mut toml::Value, path: &[Seg]) -> bool {
    match path {
        [] => false,
        [Seg::Key(k)] => value.as_table_mut().is_some_and(|t| t.remove(k).is_some()),
        [Seg::Index(i)] => match value.as_array_mut() {
            Some(a) if *i < a.len() => {
                a.remove(*i);
                true
            }
            _ => false,
        },
        [Seg::Key(k), rest @ ..] => value
            .as_table_mut()
            .and_then(|t| t.get_mut(k))
            .is_some_and(|v| remove_at(v, rest)),
        [Seg::Index(i), rest @ ..] => value
            .as_array_mut()
            .and_then(|a| a.get_mut(*i))
            .is_some_and(|v| remove_at(v, rest)),
    }
}
