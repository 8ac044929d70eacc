//! Reference docs of a stage kind's params, generated from its params type: the JSON Schema
//! `schemars` derives (field docs, types, defaults) flattened into one row per key.

use serde_json::{Map, Value};

use crate::stage::{DynStage, Registry};

/// The stage kinds as a Markdown table: kind and what it does.
pub fn kinds_markdown(registry: &Registry) -> String {
    let mut out = String::from("| kind | what it does |\n|---|---|\n");
    for kind in registry.kinds() {
        out.push_str(&format!("| `{}` | {} |\n", kind.kind(), kind.about()));
    }
    out
}

/// A stage kind's params as a Markdown table (`mmflow kinds --params KIND`).
pub fn params_markdown(stage: &dyn DynStage) -> String {
    markdown(&param_docs(&stage.params_schema()))
}

/// One documented param.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDoc {
    /// Dotted key below `params` (`optim.learning_rate`, `encoders.<name>.kind`).
    pub key: String,
    /// Its type, in words (`integer`, `list of string`, one of `` `a`, `b` ``…).
    pub kind: String,
    /// Its default as TOML (`—` when required, `none` when absent by default).
    pub default: String,
    /// Its doc comment.
    pub doc: String,
}

/// The rows of a params schema, in declaration order.
pub fn param_docs(schema: &Value) -> Vec<ParamDoc> {
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut rows = Vec::new();
    let root = resolve(schema, &defs);
    object_rows(&root, &defs, "", "", root.get("default"), &mut rows);
    rows
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[ParamDoc]) -> String {
    let mut out = String::from("| param | type | default | meaning |\n|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            r.key,
            r.kind.replace('|', "\\|"),
            r.default.replace('|', "\\|"),
            r.doc.replace('|', "\\|")
        ));
    }
    out
}

/// `schema` with every `$ref` replaced by its definition (sibling keys such as a
/// description or default win over the definition's).
fn resolve(schema: &Value, defs: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(target) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
    {
        out = resolve(target, defs);
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            for (k, v) in resolve(part, defs) {
                out.entry(k).or_insert(v);
            }
        }
    }
    if let Some(own) = schema.as_object() {
        for (k, v) in own {
            if k != "$ref" && k != "allOf" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

fn description(schema: &Map<String, Value>) -> String {
    schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(" ")
}

fn properties(schema: &Map<String, Value>) -> Vec<(String, Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Rows for the properties of an object schema (and of the variants of a tagged enum
/// flattened into it); `note` qualifies every row (`method = "kmeans"`).
fn object_rows(
    schema: &Map<String, Value>,
    defs: &Map<String, Value>,
    prefix: &str,
    note: &str,
    defaults: Option<&Value>,
    rows: &mut Vec<ParamDoc>,
) {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (key, property) in properties(schema) {
        let property = resolve(&property, defs);
        // The enclosing table's default (a stage's own default for a nested settings table)
        // wins over the field type's.
        let default = defaults
            .and_then(|d| d.get(&key))
            .or_else(|| property.get("default"));
        if property.contains_key("const") {
            // A tagged enum's tag inside one of its variants: documented with the variant.
            continue;
        }
        key_rows(
            &property,
            defs,
            &format!("{prefix}{key}"),
            note,
            default,
            required.contains(&key.as_str()),
            rows,
        );
    }
    let variants = tagged_variants(schema, defs);
    if let Some(((tag_key, _), _)) = variants.first() {
        rows.push(ParamDoc {
            key: format!("{prefix}{tag_key}"),
            kind: format!(
                "one of {}",
                variants
                    .iter()
                    .map(|((_, tag), _)| format!("`{tag}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            default: defaults
                .and_then(|d| d.get(tag_key))
                .map(|d| format!("`{}`", toml_inline(d)))
                .unwrap_or_else(|| "—".into()),
            doc: variants
                .iter()
                .map(|((_, tag), v)| format!("`{tag}`: {}", description(v)))
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    for variant in variants {
        let (tag_key, tag) = variant.0;
        let what = format!("{tag_key} = \"{tag}\"");
        let note = if note.is_empty() {
            what
        } else {
            format!("{note}, {what}")
        };
        object_rows(&variant.1, defs, prefix, &note, None, rows);
    }
}

/// The variants of an internally tagged enum: (tag key, tag value) and the variant's schema.
fn tagged_variants(
    schema: &Map<String, Value>,
    defs: &Map<String, Value>,
) -> Vec<((String, String), Map<String, Value>)> {
    let Some(variants) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    variants
        .iter()
        .filter_map(|v| {
            let v = resolve(v, defs);
            let tag = properties(&v).into_iter().find_map(|(k, p)| {
                resolve(&p, defs)
                    .get("const")
                    .and_then(Value::as_str)
                    .map(|c| (k, c.to_string()))
            })?;
            Some((tag, v))
        })
        .collect()
}

/// The row(s) of one key: nested objects become rows of their own fields.
fn key_rows(
    schema: &Map<String, Value>,
    defs: &Map<String, Value>,
    key: &str,
    note: &str,
    default: Option<&Value>,
    required: bool,
    rows: &mut Vec<ParamDoc>,
) {
    let (inner, optional) = without_null(schema, defs);
    let doc = {
        let own = description(schema);
        let own = if own.is_empty() {
            description(&inner)
        } else {
            own
        };
        if note.is_empty() {
            own
        } else {
            format!("({note}) {own}")
        }
    };
    if is_struct(&inner) {
        // A table of settings: one row per field, defaults from the table's default (an
        // optional table's fields default as its type does).
        let nested_default = default.filter(|d| !d.is_null());
        rows.push(ParamDoc {
            key: key.to_string(),
            kind: if optional {
                "table (optional)"
            } else {
                "table"
            }
            .into(),
            default: if optional && nested_default.is_none() {
                "none".into()
            } else {
                "".into()
            },
            doc,
        });
        object_rows(&inner, defs, &format!("{key}."), note, nested_default, rows);
        return;
    }
    let doc = match choice_docs(&inner, defs) {
        Some(choices) if doc.is_empty() => choices,
        Some(choices) => format!("{doc} {choices}"),
        None => doc,
    };
    rows.push(ParamDoc {
        key: key.to_string(),
        kind: type_name(&inner, defs),
        default: match default {
            Some(Value::Null) => "none".into(),
            Some(v) => format!("`{}`", toml_inline(v)),
            None if required => "—".into(),
            None if optional => "none".into(),
            None => "".into(),
        },
        doc,
    });
    // The fields of each element of a list of tables, or of each value of a table of tables.
    let element = match inner.get("type").and_then(Value::as_str) {
        Some("array") => inner.get("items").map(|i| (resolve(i, defs), "[]")),
        Some("object") => inner
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .map(|a| (resolve(a, defs), ".<name>")),
        _ => None,
    };
    if let Some((element, marker)) = element {
        if is_struct(&element) {
            let element_default = element.get("default").cloned();
            object_rows(
                &element,
                defs,
                &format!("{key}{marker}."),
                note,
                element_default.as_ref(),
                rows,
            );
        }
    }
}

/// True for an object schema with named fields (not a map).
fn is_struct(schema: &Map<String, Value>) -> bool {
    schema.contains_key("properties") && !schema.contains_key("additionalProperties")
        || schema
            .get("additionalProperties")
            .is_some_and(|a| a == &Value::Bool(false))
            && schema.contains_key("properties")
}

/// A schema without its `null` alternative (an `Option`), and whether it had one.
fn without_null(
    schema: &Map<String, Value>,
    defs: &Map<String, Value>,
) -> (Map<String, Value>, bool) {
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let rest: Vec<&Value> = any
            .iter()
            .filter(|v| v.get("type") != Some(&Value::String("null".into())))
            .collect();
        if rest.len() == 1 && rest.len() < any.len() {
            let mut inner = resolve(rest[0], defs);
            for k in ["description", "default"] {
                if let Some(v) = schema.get(k) {
                    inner.entry(k.to_string()).or_insert(v.clone());
                }
            }
            return (inner, true);
        }
    }
    if let Some(types) = schema.get("type").and_then(Value::as_array) {
        let rest: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
        if rest.len() == 1 && rest.len() < types.len() {
            let mut inner = schema.clone();
            inner.insert("type".into(), rest[0].clone());
            return (inner, true);
        }
    }
    (schema.clone(), false)
}

/// The type of a schema, in words.
fn type_name(schema: &Map<String, Value>, defs: &Map<String, Value>) -> String {
    let (schema, optional) = without_null(schema, defs);
    let base = if let Some(choices) = string_choices(&schema, defs) {
        format!(
            "one of {}",
            choices
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        match schema.get("type").and_then(Value::as_str) {
            Some("array") => match schema.get("items") {
                Some(items) => format!("list of {}", type_name(&resolve(items, defs), defs)),
                None => "list".into(),
            },
            Some("object") => match schema.get("additionalProperties") {
                Some(v) if v.is_object() => {
                    format!("table of name → {}", type_name(&resolve(v, defs), defs))
                }
                _ => "table".into(),
            },
            Some("integer") => "integer".into(),
            Some("number") => "number".into(),
            Some("string") => "string".into(),
            Some("boolean") => "boolean".into(),
            _ if schema.contains_key("oneOf") || schema.contains_key("anyOf") => "table".into(),
            _ => "value".into(),
        }
    };
    if optional {
        format!("{base} (optional)")
    } else {
        base
    }
}

/// "`a`: what a is. `b`: …" for a string enum whose values are documented.
fn choice_docs(schema: &Map<String, Value>, defs: &Map<String, Value>) -> Option<String> {
    let variants = schema.get("oneOf").and_then(Value::as_array)?;
    let docs: Vec<String> = variants
        .iter()
        .filter_map(|v| {
            let v = resolve(v, defs);
            let value = v.get("const").and_then(Value::as_str)?;
            let doc = description(&v);
            (!doc.is_empty()).then(|| format!("`{value}`: {doc}"))
        })
        .collect();
    (!docs.is_empty()).then(|| docs.join(" "))
}

/// The values of a string enum (`enum`, or `oneOf` of `const`s).
fn string_choices(schema: &Map<String, Value>, defs: &Map<String, Value>) -> Option<Vec<String>> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    let variants = schema.get("oneOf").and_then(Value::as_array)?;
    let mut out = Vec::new();
    for v in variants {
        let v = resolve(v, defs);
        if let Some(c) = v.get("const").and_then(Value::as_str) {
            out.push(c.to_string());
        } else if let Some(e) = v.get("enum").and_then(Value::as_array) {
            out.extend(e.iter().filter_map(Value::as_str).map(str::to_string));
        } else {
            return None;
        }
    }
    Some(out)
}

/// A JSON value written as a TOML inline value.
pub fn toml_inline(value: &Value) -> String {
    match value {
        Value::Null => "none".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            // An f32 widened to f64 (0.20000000298023224) is written as the f32 it was.
            Some(v) if n.is_f64() && f64::from(v as f32) == v => {
                let text = (v as f32).to_string();
                if text.contains(['.', 'e', 'i', 'N']) {
                    text
                } else {
                    format!("{text}.0")
                }
            }
            _ => n.to_string(),
        },
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_inline).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k} = {}", toml_inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
