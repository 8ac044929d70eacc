//! The `parquet` target: the repository's own tables with their footers (and page headers)
//! taken apart as Thrift values and mutated where the guard must hold — child counts, list
//! lengths, field ids and wire types, schema depth, row counts, offsets and sizes, the
//! footer's length — then opened as every table is (`mmflow_schemas::open_parquet`) and read
//! through as `mmflow show` reads it, and by the typed reader of the table it says it is.

use std::path::Path;

use arrow_cast::display::{ArrayFormatter, FormatOptions};
use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::mutate::{self, havoc_once, interesting_u64, number_positions, rounds};
use super::targets::{Seed, Target};
use crate::thrift::{self, wire, Value};

pub const PARQUET: Target = Target {
    name: "parquet",
    ext: "parquet",
    in_directory: false,
    max_seed: 1 << 20,
    seeds: super::targets::seed_files,
    numbers: number_positions,
    mutate: mutate_parquet,
    run: run_parquet,
};

/// Depths a schema is nested to around the limit (100) and far beyond it.
const DEPTHS: &[usize] = &[1, 2, 50, 98, 99, 100, 101, 500, 2000];

fn mutate_parquet(rng: &mut ChaCha8Rng, seeds: &[Seed]) -> Vec<u8> {
    let seed = seeds.choose(rng).unwrap();
    let other = seeds.choose(rng).unwrap();
    let (Some((mut meta, start)), Some((donor, _))) =
        (thrift::footer(&seed.bytes), thrift::footer(&other.bytes))
    else {
        let mut data = seed.bytes.clone();
        havoc_once(rng, &mut data, &other.bytes, &seed.numbers);
        return data;
    };
    let mut body = seed.bytes[..start].to_vec();
    let size = seed.bytes.len() as i64;
    for _ in 0..rounds(rng) {
        match rng.random_range(0..10) {
            0..=6 => edit_footer(rng, &mut meta, &donor, size),
            7 => nest_schema(rng, &mut meta),
            8 => edit_page_header(rng, &mut body, &meta, size),
            _ => havoc_once(rng, &mut body, &other.bytes, &seed.numbers),
        }
    }
    let footer = meta.to_bytes();
    let mut len = footer.len() as u32;
    if rng.random_ratio(1, 12) {
        len = match rng.random_range(0..3) {
            0 => interesting_u64(rng) as u32,
            1 => len.wrapping_add(rng.random_range(1..=16)),
            _ => len.wrapping_sub(rng.random_range(1..=16)),
        };
    }
    body.extend_from_slice(&footer);
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(b"PAR1");
    body.truncate(mutate::MAX_INPUT);
    body
}

/// Where a value sits in a tree: the index of a struct's field or a list's element, level by
/// level.
type Route = Vec<usize>;

/// Every value below `value` (itself included), with its path.
fn paths(value: &Value, at: &mut Route, out: &mut Vec<Route>) {
    out.push(at.clone());
    let children: Vec<&Value> = match value {
        Value::Struct(fields) => fields.iter().map(|(_, v)| v).collect(),
        Value::List { items, .. } => items.iter().collect(),
        _ => return,
    };
    for (i, child) in children.into_iter().enumerate() {
        at.push(i);
        paths(child, at, out);
        at.pop();
    }
}

fn at_mut<'a>(value: &'a mut Value, path: &[usize]) -> &'a mut Value {
    let Some((&first, rest)) = path.split_first() else {
        return value;
    };
    let child = match value {
        Value::Struct(fields) => &mut fields[first].1,
        Value::List { items, .. } => &mut items[first],
        _ => unreachable!("a path leads through structs and lists"),
    };
    at_mut(child, rest)
}

/// A random value of `meta` for which `pick` holds, to change.
fn random_node<'a>(
    rng: &mut ChaCha8Rng,
    meta: &'a mut Value,
    pick: impl Fn(&Value) -> bool,
) -> Option<&'a mut Value> {
    let mut all = Vec::new();
    paths(meta, &mut Vec::new(), &mut all);
    let chosen: Vec<Route> = all.into_iter().filter(|p| pick(at_mut(meta, p))).collect();
    let path = chosen.choose(rng)?.clone();
    Some(at_mut(meta, &path))
}

/// An integer a size, count or offset field is interesting at: limits, signs, the file's
/// size and near it, or near the old value.
fn interesting_int(rng: &mut ChaCha8Rng, old: i64, size: i64) -> i64 {
    let near = rng.random_range(1..=16);
    *[
        0,
        1,
        -1,
        i64::from(i32::MAX),
        i64::from(i32::MIN),
        i64::MAX,
        i64::MIN,
        1 << 31,
        1 << 32,
        size,
        size + near,
        size - near,
        old.wrapping_add(near),
        old.wrapping_sub(near),
        old.wrapping_mul(2),
        interesting_u64(rng) as i64,
    ]
    .choose(rng)
    .unwrap()
}

/// One structure-aware change of the footer.
fn edit_footer(rng: &mut ChaCha8Rng, meta: &mut Value, donor: &Value, size: i64) {
    match rng.random_range(0..8) {
        0 | 1 => {
            // Any integer: counts, row counts, offsets, sizes, enums, field ids of the schema.
            if let Some(Value::Int(_, v)) = random_node(rng, meta, |v| matches!(v, Value::Int(..)))
            {
                *v = interesting_int(rng, *v, size);
            }
        }
        2 => {
            // A list's length, claimed.
            if let Some(Value::List { items, claimed, .. }) =
                random_node(rng, meta, |v| matches!(v, Value::List { .. }))
            {
                let len = items.len() as i64;
                *claimed = Some(interesting_int(rng, len, size) as u64 & 0xffff_ffff);
            }
        }
        3 => {
            // A list's elements: one removed, repeated or moved.
            if let Some(Value::List { items, .. }) = random_node(
                rng,
                meta,
                |v| matches!(v, Value::List { items, .. } if !items.is_empty()),
            ) {
                let i = rng.random_range(0..items.len());
                match rng.random_range(0..3) {
                    0 => {
                        items.remove(i);
                    }
                    1 => {
                        let copies = *[1, 2, 100].choose(rng).unwrap();
                        let item = items[i].clone();
                        items.splice(i..i, std::iter::repeat_n(item, copies));
                    }
                    _ => {
                        let j = rng.random_range(0..items.len());
                        items.swap(i, j);
                    }
                }
            }
        }
        4 => {
            // A field's id (another field's, a neighbour's, out of range) or its wire type.
            if let Some(Value::Struct(fields)) = random_node(
                rng,
                meta,
                |v| matches!(v, Value::Struct(f) if !f.is_empty()),
            ) {
                let i = rng.random_range(0..fields.len());
                if rng.random_bool(0.5) {
                    let j = rng.random_range(0..fields.len());
                    let id = fields[i].0;
                    fields[i].0 = *[
                        fields[j].0,
                        id.wrapping_add(1),
                        id.wrapping_sub(1),
                        0,
                        -1,
                        100,
                        i16::MAX,
                    ]
                    .choose(rng)
                    .unwrap();
                } else {
                    let value = &mut fields[i].1;
                    let payload = payload(value);
                    let lie = *[
                        wire::TRUE,
                        wire::BYTE,
                        wire::I32,
                        wire::I64,
                        wire::DOUBLE,
                        wire::BINARY,
                        wire::LIST,
                        wire::STRUCT,
                        wire::UUID,
                        11,
                        14,
                    ]
                    .choose(rng)
                    .unwrap();
                    *value = Value::Raw(lie, payload);
                }
            }
        }
        5 => {
            // A field removed or repeated.
            if let Some(Value::Struct(fields)) = random_node(
                rng,
                meta,
                |v| matches!(v, Value::Struct(f) if !f.is_empty()),
            ) {
                let i = rng.random_range(0..fields.len());
                if rng.random_bool(0.5) {
                    fields.remove(i);
                } else {
                    let field = fields[i].clone();
                    fields.insert(rng.random_range(0..=fields.len()), field);
                }
            }
        }
        6 => {
            // A string: its length claimed, or its bytes changed.
            if let Some(value) = random_node(rng, meta, |v| matches!(v, Value::Binary(_))) {
                let Value::Binary(bytes) = value else {
                    unreachable!()
                };
                if rng.random_bool(0.5) {
                    let claimed = interesting_int(rng, bytes.len() as i64, size) as u64;
                    let mut raw = Vec::new();
                    let mut v = claimed & 0xffff_ffff_ffff;
                    while v >= 0x80 {
                        raw.push(v as u8 | 0x80);
                        v >>= 7;
                    }
                    raw.push(v as u8);
                    raw.extend_from_slice(bytes);
                    *value = Value::Raw(wire::BINARY, raw);
                } else if !bytes.is_empty() {
                    let (s, e) = mutate::chunk(rng, bytes.len());
                    for b in &mut bytes[s..e] {
                        *b = rng.random();
                    }
                }
            }
        }
        _ => {
            // A value of the other seed's footer in place of one of ours.
            let mut all = Vec::new();
            paths(donor, &mut Vec::new(), &mut all);
            let Some(from) = all.choose(rng) else { return };
            let mut donor = donor.clone();
            let piece = at_mut(&mut donor, from).clone();
            if let Some(slot) = random_node(rng, meta, |v| v.wire() == piece.wire()) {
                *slot = piece;
            }
        }
    }
}

/// The bytes that follow a field's header for `value`.
fn payload(value: &Value) -> Vec<u8> {
    let wrapped = Value::Struct(vec![(1, value.clone())]);
    let bytes = wrapped.to_bytes();
    // One header byte before, the struct's stop byte after.
    bytes[1..bytes.len() - 1].to_vec()
}

/// Nests the schema: groups of one child inserted above one of its elements (the tree stays
/// closed), to a depth around or far beyond the limit.
fn nest_schema(rng: &mut ChaCha8Rng, meta: &mut Value) {
    let Some(schema) = meta.field_mut(2).and_then(Value::items_mut) else {
        return;
    };
    if schema.len() < 2 {
        return;
    }
    let at = rng.random_range(1..schema.len());
    let depth = *DEPTHS.choose(rng).unwrap();
    let groups = (0..depth).map(|level| thrift::element(&format!("n{level}"), Some(1)));
    schema.splice(at..at, groups);
}

/// Changes an integer of one column chunk's first page header (sizes, counts, encodings)
/// and writes the header back in place of the old one.
fn edit_page_header(rng: &mut ChaCha8Rng, body: &mut Vec<u8>, meta: &Value, size: i64) {
    let mut offsets = Vec::new();
    let Some(Value::List { items: groups, .. }) = meta.field(4) else {
        return;
    };
    for group in groups {
        let Some(Value::List { items: chunks, .. }) = group.field(1) else {
            continue;
        };
        for chunk in chunks {
            let Some(chunk_meta) = chunk.field(3) else {
                continue;
            };
            for id in [9, 11] {
                if let Some(Value::Int(_, offset)) = chunk_meta.field(id) {
                    offsets.push(*offset);
                }
            }
        }
    }
    let Some(&offset) = offsets.choose(rng) else {
        return;
    };
    let Some(at) = usize::try_from(offset).ok().filter(|&at| at < body.len()) else {
        return;
    };
    let Some((mut header, len)) = Value::read_struct(&body[at..]) else {
        return;
    };
    if let Some(Value::Int(_, v)) = random_node(rng, &mut header, |v| matches!(v, Value::Int(..))) {
        *v = interesting_int(rng, *v, size);
    }
    body.splice(at..at + len, header.to_bytes());
}

/// What the target checks for one input: no panic, abort, hang or allocation bomb while it is
/// opened and read as `mmflow show` and the table's own reader read it.
fn run_parquet(path: &Path) {
    let _ = mmflow_schemas::row_count(path);
    let table = mmflow_schemas::read_file_meta(path).map(|m| m.table);
    show(path);
    if let Ok(table) = table {
        read_as(path, &table);
    }
}

/// As `mmflow show`: the schema, the first rows formatted.
fn show(path: &Path) {
    let Ok(builder) = mmflow_schemas::open_parquet(path) else {
        return;
    };
    let _ = mmflow_schemas::FileMeta::of(path, builder.metadata());
    for field in builder.schema().fields() {
        let _ = field.data_type().to_string();
    }
    let Ok(reader) = builder.with_limit(20).with_batch_size(20).build() else {
        return;
    };
    let options = FormatOptions::default().with_null("null");
    for batch in reader {
        let Ok(batch) = batch else { return };
        for column in batch.columns() {
            let Ok(formatter) = ArrayFormatter::try_new(column.as_ref(), &options) else {
                continue;
            };
            for row in 0..batch.num_rows() {
                let _ = formatter.value(row).to_string();
            }
        }
    }
}

/// The typed reader of the table the file says it is.
fn read_as(path: &Path, table: &str) {
    use mmflow_schemas::{
        diagnostics, evaluation, features, history, norm_stats, segments, targets,
    };
    if table == segments::TABLE {
        if let Ok(t) = segments::SegmentTable::read(path) {
            let _ = t.check(path);
        }
        let _ = segments::read_texts(path);
    } else if table == features::TABLE {
        for open in [
            features::FeatureReader::open,
            features::FeatureReader::open_pooled,
        ] {
            let Ok(batch) = open(path).and_then(features::FeatureReader::read_all) else {
                continue;
            };
            for i in 0..batch.len() {
                let _ = (
                    batch.frames_of(i),
                    batch.pooled_of(i),
                    batch.intervals_of(i),
                );
            }
        }
    } else if table == targets::TABLE {
        if let Ok(t) = targets::TargetTable::read(path) {
            for i in 0..t.rows.len() {
                let _ = t.vector(i);
            }
        }
    } else if table == norm_stats::TABLE {
        let _ = norm_stats::NormStatsTable::read(path);
    } else if table == diagnostics::TABLE {
        let _ = diagnostics::read(path);
    } else if table == history::TABLE {
        let _ = history::read(path);
    } else if table == evaluation::PREDICTIONS {
        let _ = evaluation::read_predictions(path);
    } else if table == evaluation::METRICS {
        let _ = evaluation::read_metrics(path);
    }
}
