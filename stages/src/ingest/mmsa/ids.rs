//! Segment ids from a split's `id` key: MMSA's `video$_$clip` strings and MulT's
//! `[video, start, end]` rows, read as rows of strings exactly as numpy holds them
//! ([`take_id_rows`]), parsed ([`SegmentKey`]) and numbered over the whole file
//! ([`number_segments`]).
//!
//! An id is its text, whole: a NUL inside it is part of it (numpy strips only the trailing
//! NULs of a fixed-width `S`/`U` item, which the pickle reader already did), so two ids that
//! differ anywhere stay two segments. An id that cannot become a segment id is an error naming
//! it, never merged with another: bytes that are not UTF-8 (a Parquet string is UTF-8), a
//! split mixing `str` and `bytes` ids, `$_$` twice (which part is the video?), an empty video,
//! and two different ids that would become the same segment id.

use std::collections::{BTreeMap, BTreeSet};

use mmflow_schemas::segment_id;

use super::super::pickle::{ArrayData, NdArray, PyValue};
use super::values::owned;

/// The key of every layout's segment ids.
pub(super) const ID: &str = "id";

/// What separates the video from the clip in MMSA's ids.
const CLIP_SEPARATOR: &str = "$_$";

/// Where a segment comes from, as its id tells: its video and, when the id says so, its clip
/// number (MMSA's `video$_$clip`) or its interval (MulT's `[video, start, end]` rows).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SegmentKey {
    /// The id as the file holds it: one string, or MulT's row of strings.
    pub(super) row: Vec<String>,
    pub(super) video: String,
    pub(super) clip: Option<String>,
    pub(super) start: Option<f64>,
    pub(super) end: Option<f64>,
}

impl SegmentKey {
    /// One id: a string (`video$_$clip` or a video), or a row of strings whose first is the
    /// video and whose second and third, when both are finite numbers, its start and end.
    pub(super) fn of_row(row: Vec<String>) -> Result<SegmentKey, String> {
        let (video, clip, start, end) = match row.as_slice() {
            [] => return Err("is an empty id row".into()),
            [one] => {
                let (video, clip) = split_id(one)?;
                (video.to_string(), clip.map(str::to_string), None, None)
            }
            [video, rest @ ..] => {
                let (start, end) = interval(rest);
                (video.clone(), None, start, end)
            }
        };
        if video.is_empty() {
            return Err(format!("`{}` names no video", shown(&row)));
        }
        Ok(SegmentKey {
            row,
            video,
            clip,
            start,
            end,
        })
    }

    /// The id as the file holds it, for messages: `video$_$clip`, or `(video, start, end)`.
    pub(super) fn shown(&self) -> String {
        shown(&self.row)
    }
}

/// An id row for messages, control characters (a NUL, say) escaped: one string as it is, a
/// row of several as `(a, b, c)`.
fn shown(row: &[String]) -> String {
    let parts: Vec<String> = row.iter().map(|s| escaped(s)).collect();
    match parts.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", parts.join(", ")),
    }
}

/// `text` for messages: control characters escaped (`\0`, `\n`, …), the rest as it is.
pub(super) fn escaped(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A MulT row's start and end: its second and third strings, when both are finite numbers.
fn interval(rest: &[String]) -> (Option<f64>, Option<f64>) {
    let number = |s: Option<&String>| {
        s.and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|x| x.is_finite())
    };
    match (number(rest.first()), number(rest.get(1))) {
        (Some(s), Some(e)) => (Some(s), Some(e)),
        _ => (None, None),
    }
}

/// `video$_$clip` → (`video`, Some(`clip`)); an id holding the separator twice is ambiguous.
fn split_id(id: &str) -> Result<(&str, Option<&str>), String> {
    match id.split_once(CLIP_SEPARATOR) {
        Some((_, clip)) if clip.contains(CLIP_SEPARATOR) => Err(format!(
            "`{}` holds `{CLIP_SEPARATOR}` more than once: which part is the video and which the clip is ambiguous",
            escaped(id)
        )),
        Some((video, clip)) => Ok((video, Some(clip))),
        None => Ok((id, None)),
    }
}

/// Two different ids that would become one segment id: the later one's split and place, and
/// what to say.
#[derive(Debug, PartialEq)]
pub(super) struct Collision {
    pub(super) split: usize,
    pub(super) message: String,
}

/// Segment ids for every split's ids (`names` the splits', for messages), in the same order.
///
/// An id with a clip becomes `video[clip]`. The segments of a video whose ids all carry an
/// interval (MulT) are numbered `video[0]`, `video[1]`, … in the order of their start (then
/// end, then place in the file) over the whole file, so the aligned and unaligned files of one
/// dataset give the same ids. Other ids without a clip are numbered by occurrence within their
/// split. An id met again (in this or an earlier split) gets a `~2`, `~3`, … suffix; a
/// different id that would become the same segment id is a [`Collision`].
pub(super) fn number_segments(
    names: &[&str],
    splits: &[Vec<SegmentKey>],
) -> Result<Vec<Vec<String>>, Collision> {
    let timed = timed_numbers(splits);
    // Segment id → the first id that became it (split, key) and how many times it was met.
    let mut seen: BTreeMap<String, (usize, &SegmentKey, usize)> = BTreeMap::new();
    let mut out = Vec::with_capacity(splits.len());
    for (s, keys) in splits.iter().enumerate() {
        let mut unnumbered: BTreeMap<&str, usize> = BTreeMap::new();
        let mut ids = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let base = match (&key.clip, timed.get(&(s, i))) {
                (Some(clip), _) => format!("{}[{clip}]", key.video),
                (None, Some(&k)) => segment_id(&key.video, k),
                (None, None) => {
                    let k = unnumbered.entry(&key.video).or_default();
                    *k += 1;
                    segment_id(&key.video, *k - 1)
                }
            };
            let (first_split, first, n) = seen.entry(base.clone()).or_insert((s, key, 0));
            if first.row != key.row {
                return Err(Collision {
                    split: s,
                    message: format!(
                        "id {i} `{}` and id `{}` of split `{}` would both become segment `{}`: two different ids cannot be one segment (rename one)",
                        key.shown(),
                        first.shown(),
                        names.get(*first_split).copied().unwrap_or_default(),
                        escaped(&base)
                    ),
                });
            }
            *n += 1;
            ids.push(if *n == 1 { base } else { format!("{base}~{n}") });
        }
        out.push(ids);
    }
    Ok(out)
}

/// For the videos whose ids all carry an interval and no clip: each id's (split, place) → its
/// rank among the video's segments by (start, end, place in the file).
fn timed_numbers(splits: &[Vec<SegmentKey>]) -> BTreeMap<(usize, usize), usize> {
    let mut by_video: BTreeMap<&str, Vec<(f64, f64, usize, usize)>> = BTreeMap::new();
    let mut untimed: BTreeSet<&str> = BTreeSet::new();
    for (s, keys) in splits.iter().enumerate() {
        for (i, key) in keys.iter().enumerate() {
            match (key.start, key.end, &key.clip) {
                (Some(start), Some(end), None) => by_video
                    .entry(&key.video)
                    .or_default()
                    .push((start, end, s, i)),
                _ => {
                    untimed.insert(&key.video);
                }
            }
        }
    }
    let mut ranks = BTreeMap::new();
    for (video, mut segments) in by_video {
        if untimed.contains(video) {
            continue;
        }
        segments.sort_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then(a.1.total_cmp(&b.1))
                .then((a.2, a.3).cmp(&(b.2, b.3)))
        });
        for (rank, (_, _, s, i)) in segments.into_iter().enumerate() {
            ranks.insert((s, i), rank);
        }
    }
    ranks
}

/// A split's ids: its `id` key's rows of strings, each parsed (an error names the id).
pub(super) fn take_keys(items: &mut BTreeMap<String, PyValue>) -> Result<Vec<SegmentKey>, String> {
    take_id_rows(items)?
        .into_iter()
        .enumerate()
        .map(|(i, row)| SegmentKey::of_row(row).map_err(|e| format!("id {i} {e}")))
        .collect()
}

/// The ids of a split, each as a row of strings: one string per id (MMSA), or several
/// (MulT's `[video, start, end]`), from a string array `[N]` or `[N, k]` (`U` or `S`), an
/// object array or a list. Each string is the item exactly as numpy reads it.
fn take_id_rows(items: &mut BTreeMap<String, PyValue>) -> Result<Vec<Vec<String>>, String> {
    let value = items.remove(ID).ok_or("is missing")?;
    let (shape, values) = match value {
        PyValue::Array(a) => match owned(a) {
            NdArray {
                shape,
                data: ArrayData::Str(v),
            } => (shape, v.into_iter().map(PyValue::Str).collect()),
            NdArray {
                shape,
                data: ArrayData::Bytes(v),
            } => (shape, v.into_iter().map(PyValue::Bytes).collect()),
            NdArray {
                shape,
                data: ArrayData::Object(v),
            } => (shape, v),
            other => return Err(format!("is a {} array, expected strings", other.kind())),
        },
        PyValue::List(v) | PyValue::Tuple(v) => (vec![v.len()], v),
        other => return Err(format!("is a {}, expected strings", other.type_name())),
    };
    let per_row = match shape.as_slice() {
        [_] => 1,
        [_, k] if *k > 0 => *k,
        other => {
            return Err(format!(
                "has shape {other:?}, expected N ids or N rows of strings"
            ))
        }
    };
    let mut texts = IdTexts::default();
    let mut rows = Vec::with_capacity(values.len() / per_row);
    let mut values = values.into_iter();
    while let Some(first) = values.next() {
        let row = if per_row == 1 {
            match first {
                PyValue::List(row) | PyValue::Tuple(row) => row,
                one => vec![one],
            }
        } else {
            std::iter::once(first)
                .chain(values.by_ref().take(per_row - 1))
                .collect()
        };
        let id = rows.len();
        let row = row
            .into_iter()
            .map(|v| texts.text(v, id))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row);
    }
    Ok(rows)
}

/// Whether a string came as a Python `str` or as `bytes`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TextKind {
    Str,
    Bytes,
}

impl TextKind {
    fn name(self) -> &'static str {
        match self {
            TextKind::Str => "a str",
            TextKind::Bytes => "bytes",
        }
    }
}

/// The strings of one split's ids, taken one by one: all `str` or all `bytes` (numpy and
/// Python keep `'a'` and `b'a'` apart; as text they would be one id).
#[derive(Default)]
struct IdTexts {
    /// The kind of the first string met, and its id.
    first: Option<(TextKind, usize)>,
}

impl IdTexts {
    /// The text of one string of id `id`: a `str` as it is, `bytes` as UTF-8 text.
    fn text(&mut self, value: PyValue, id: usize) -> Result<String, String> {
        let (kind, text) = match value {
            PyValue::Str(s) => (TextKind::Str, s),
            PyValue::Bytes(b) => match String::from_utf8(b) {
                Ok(s) => (TextKind::Bytes, s),
                Err(e) => {
                    return Err(format!(
                    "id {id} is bytes that are not UTF-8 text (b'{}'): a segment id must be text",
                    e.as_bytes().escape_ascii()
                ))
                }
            },
            other => {
                return Err(format!(
                    "id {id} holds a {}, expected strings",
                    other.type_name()
                ))
            }
        };
        match self.first {
            None => self.first = Some((kind, id)),
            Some((first, at)) if first != kind => {
                return Err(format!(
                    "id {id} is {} but id {at} is {}: a split's ids are all str or all bytes",
                    kind.name(),
                    first.name()
                ))
            }
            Some(_) => {}
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn strs(items: &[&str]) -> Vec<PyValue> {
        items.iter().map(|s| PyValue::Str(s.to_string())).collect()
    }

    fn array(shape: Vec<usize>, data: ArrayData) -> PyValue {
        PyValue::Array(Arc::new(NdArray { shape, data }))
    }

    fn ids(value: PyValue) -> BTreeMap<String, PyValue> {
        [(ID.to_string(), value)].into_iter().collect()
    }

    #[test]
    fn id_rows_come_from_string_arrays_object_arrays_and_lists() {
        let mut items = ids(array(
            vec![2, 3],
            ArrayData::Str(
                ["a", "1.5", "2.5", "b", "0", "1"]
                    .map(str::to_string)
                    .to_vec(),
            ),
        ));
        assert_eq!(
            take_id_rows(&mut items).unwrap(),
            [vec!["a", "1.5", "2.5"], vec!["b", "0", "1"]]
        );
        let mut items = ids(array(
            vec![1, 3],
            ArrayData::Bytes(vec![b"m\0a".to_vec(), b"1".to_vec(), b"2".to_vec()]),
        ));
        assert_eq!(take_id_rows(&mut items).unwrap(), [vec!["m\0a", "1", "2"]]);
        let mut items = ids(PyValue::List(vec![
            PyValue::Tuple(strs(&["v", "3", "4"])),
            PyValue::Str("w$_$2".into()),
        ]));
        assert_eq!(
            take_id_rows(&mut items).unwrap(),
            [vec!["v", "3", "4"], vec!["w$_$2"]]
        );
        let mut items = ids(array(
            vec![2],
            ArrayData::Object(vec![PyValue::Str("a".into()), PyValue::Int(3)]),
        ));
        let e = take_id_rows(&mut items).unwrap_err();
        assert!(e.contains("id 1 holds a int"), "{e}");
        let mut items = ids(array(vec![2], ArrayData::F32(vec![1.0, 2.0])));
        assert!(take_id_rows(&mut items)
            .unwrap_err()
            .contains("float32 array"));
        assert_eq!(take_id_rows(&mut items).unwrap_err(), "is missing");
    }

    #[test]
    fn bytes_ids_are_utf8_text_and_never_mixed_with_str_ids() {
        // Lossy decoding would make these two one id.
        let mut items = ids(array(
            vec![2],
            ArrayData::Bytes(vec![b"v\0\xff$_$1".to_vec(), b"v\0\xfe$_$1".to_vec()]),
        ));
        let e = take_id_rows(&mut items).unwrap_err();
        assert!(
            e.contains("id 0 is bytes that are not UTF-8 text (b'v\\x00\\xff$_$1')"),
            "{e}"
        );
        let mut items = ids(PyValue::List(vec![
            PyValue::Str("a$_$1".into()),
            PyValue::Bytes(b"a$_$1".to_vec()),
        ]));
        let e = take_id_rows(&mut items).unwrap_err();
        assert!(e.contains("id 1 is bytes but id 0 is a str"), "{e}");
    }

    fn key(row: &[&str]) -> SegmentKey {
        SegmentKey::of_row(row.iter().map(|s| s.to_string()).collect()).unwrap()
    }

    fn number(splits: &[Vec<SegmentKey>]) -> Result<Vec<Vec<String>>, Collision> {
        number_segments(&["train", "valid", "test"][..splits.len()], splits)
    }

    #[test]
    fn mult_rows_are_numbered_by_start_within_their_video_over_every_split() {
        let train = vec![
            key(&["v", "10.0", "12.0"]),
            key(&["w", "1", "2"]),
            key(&["v", "2.5", "4"]),
        ];
        let test = vec![key(&["v", "0", "1"]), key(&["v", "10.0", "11.0"])];
        assert_eq!(train[0].start, Some(10.0));
        assert_eq!(train[0].shown(), "(v, 10.0, 12.0)");
        let ids = number(&[train, test]).unwrap();
        assert_eq!(ids, [vec!["v[3]", "w[0]", "v[1]"], vec!["v[0]", "v[2]"]]);
    }

    #[test]
    fn mmsa_ids_keep_their_clip_and_repeats_get_a_suffix() {
        let train = vec![key(&["a$_$3"]), key(&["plain"]), key(&["plain"])];
        let valid = vec![key(&["a$_$3"]), key(&["plain"])];
        let ids = number(&[train, valid]).unwrap();
        assert_eq!(
            ids,
            [
                vec!["a[3]", "plain[0]", "plain[1]"],
                vec!["a[3]~2", "plain[0]~2"]
            ]
        );
        // A row whose times are not numbers: the video is numbered by occurrence.
        let rows = vec![key(&["m", "x", "y"]), key(&["m", "5", "6"])];
        assert_eq!(rows[0].start, None);
        assert_eq!(number(&[rows]).unwrap(), [vec!["m[0]", "m[1]"]]);
    }

    #[test]
    fn ids_that_differ_after_an_inner_nul_stay_apart() {
        let train = vec![key(&["v\0a$_$1"]), key(&["v\0b$_$1"]), key(&["v$_$1"])];
        let videos: Vec<&str> = train.iter().map(|k| k.video.as_str()).collect();
        assert_eq!(videos, ["v\0a", "v\0b", "v"]);
        assert_eq!(
            number(&[train]).unwrap(),
            [vec!["v\0a[1]", "v\0b[1]", "v[1]"]]
        );
        let rows = vec![key(&["m\0a", "0", "1"]), key(&["m\0b", "0", "1"])];
        assert_eq!(number(&[rows]).unwrap(), [vec!["m\0a[0]", "m\0b[0]"]]);
        assert_eq!(key(&["a\0b", "1", "2"]).shown(), "(a\\0b, 1, 2)");
    }

    #[test]
    fn ambiguous_ids_and_ids_that_would_share_a_segment_id_are_refused() {
        let of = |id: &str| SegmentKey::of_row(vec![id.to_string()]).unwrap_err();
        assert!(of("a$_$1$_$2").contains("holds `$_$` more than once"));
        assert!(of("$_$3").contains("`$_$3` names no video"));
        assert!(of("").contains("names no video"));
        let e = SegmentKey::of_row(vec![]).unwrap_err();
        assert!(e.contains("empty id row"), "{e}");
        // `v$_$0` and the first plain `v` would both be `v[0]`.
        let train = vec![key(&["v$_$0"])];
        let test = vec![key(&["w"]), key(&["v"])];
        let c = number(&[train, test]).unwrap_err();
        assert_eq!(c.split, 1);
        assert!(
            c.message.contains(
                "id 1 `v` and id `v$_$0` of split `train` would both become segment `v[0]`"
            ),
            "{}",
            c.message
        );
        // A clip that is itself an id's segment id: `a[1]` numbered, `a[1]$_$0` split.
        let c = number(&[vec![key(&["a[1]"]), key(&["a[1]$_$0"])]]).unwrap_err();
        assert!(c.message.contains("segment `a[1][0]`"), "{}", c.message);
    }
}
