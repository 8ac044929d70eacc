//! The guard on the repository's real tables (accepted, with the rows the parquet crate
//! reports) and on footers and pages written by hand to break each rule.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int32Array, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::ParquetMetaDataReader;

use super::footer::{DATA_START, MAGIC, TAIL_BYTES};
use super::*;

/// The Thrift compact protocol, written: enough to build footers by hand.
#[derive(Default)]
struct Thrift {
    out: Vec<u8>,
    /// The last field id of each open struct, innermost last.
    last: Vec<i16>,
}

const I32: u8 = 5;
const I64: u8 = 6;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const STRUCT: u8 = 12;

impl Thrift {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn zigzag(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn header(&mut self, id: i16, wire: u8) {
        let last = self.last.last_mut().expect("inside a struct");
        let delta = id - *last;
        *last = id;
        if (1..=15).contains(&delta) {
            self.out.push((delta as u8) << 4 | wire);
        } else {
            self.out.push(wire);
            self.zigzag(i64::from(id));
        }
    }

    /// Starts a struct (the top one, or a list's element).
    fn begin(&mut self) -> &mut Self {
        self.last.push(0);
        self
    }

    /// Starts a struct field.
    fn open(&mut self, id: i16) -> &mut Self {
        self.header(id, STRUCT);
        self.begin()
    }

    fn end(&mut self) -> &mut Self {
        self.out.push(0);
        self.last.pop();
        self
    }

    fn int(&mut self, id: i16, wire: u8, v: i64) -> &mut Self {
        self.header(id, wire);
        self.zigzag(v);
        self
    }

    fn bytes(&mut self, id: i16, v: &[u8]) -> &mut Self {
        self.header(id, BINARY);
        self.varint(v.len() as u64);
        self.out.extend_from_slice(v);
        self
    }

    fn list(&mut self, id: i16, element: u8, len: usize) -> &mut Self {
        self.header(id, LIST);
        if len < 15 {
            self.out.push((len as u8) << 4 | element);
        } else {
            self.out.push(0xf0 | element);
            self.varint(len as u64);
        }
        self
    }
}

/// A schema element: name, children (None for a leaf), physical type (None for a group).
type Element<'a> = (&'a str, Option<i32>, Option<i32>);

/// A column chunk: (dictionary_page_offset, data_page_offset, total_compressed_size).
type Chunk = (Option<i64>, i64, i64);

fn schema(t: &mut Thrift, elements: &[Element]) {
    t.list(2, STRUCT, elements.len());
    for &(name, children, physical) in elements {
        t.begin();
        if let Some(physical) = physical {
            t.int(1, I32, i64::from(physical));
            t.int(3, I32, 0);
        }
        t.bytes(4, name.as_bytes());
        if let Some(children) = children {
            t.int(5, I32, i64::from(children));
        }
        t.end();
    }
}

fn row_groups(t: &mut Thrift, groups: &[(i64, Vec<Chunk>)]) {
    t.list(4, STRUCT, groups.len());
    for (rows, chunks) in groups {
        t.begin().list(1, STRUCT, chunks.len());
        for &(dictionary, data, size) in chunks {
            t.begin().int(2, I64, 0).open(3);
            t.int(1, I32, 1).list(2, I32, 1);
            t.zigzag(0);
            t.int(4, I32, 0)
                .int(5, I64, (*rows).max(0))
                .int(6, I64, size.max(0))
                .int(7, I64, size)
                .int(9, I64, data);
            if let Some(dictionary) = dictionary {
                t.int(11, I64, dictionary);
            }
            t.end().end();
        }
        t.int(2, I64, 0).int(3, I64, *rows).end();
    }
}

/// A `FileMetaData` of `elements` and `groups`, claiming `num_rows`.
fn metadata(elements: &[Element], num_rows: i64, groups: &[(i64, Vec<Chunk>)]) -> Vec<u8> {
    let mut t = Thrift::default();
    t.begin().int(1, I32, 2);
    schema(&mut t, elements);
    t.int(3, I64, num_rows);
    row_groups(&mut t, groups);
    t.end();
    t.out
}

/// A Parquet file: the magic, `data`, the footer's `metadata`, its length, the magic.
fn file_bytes(data: &[u8], metadata: &[u8]) -> Vec<u8> {
    let mut out = b"PAR1".to_vec();
    out.extend_from_slice(data);
    out.extend_from_slice(metadata);
    out.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
    out.extend_from_slice(b"PAR1");
    out
}

/// Runs the guard on `bytes` written to a file; the opened file or the error's message.
fn guard(bytes: &[u8]) -> Result<Opened, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    std::fs::write(&path, bytes).unwrap();
    open_and_read(&path)
}

fn open_and_read(path: &Path) -> Result<Opened, String> {
    open(path).map_err(|e| e.to_string())
}

/// Asserts the guard refuses `bytes`, saying each of `says`.
fn refused(bytes: &[u8], says: &[&str]) {
    let err = guard(bytes).expect_err("refused");
    for s in says {
        assert!(err.contains(s), "`{s}` not in: {err}");
    }
    assert!(
        err.contains("t.parquet: not a readable Parquet file"),
        "{err}"
    );
}

/// One root and one INT32 leaf.
const FLAT: &[Element] = &[("root", Some(1), None), ("x", None, Some(1))];

/// A file of [`FLAT`] with one row group whose chunk is 10 bytes at byte 4.
fn flat(num_rows: i64, group_rows: i64, chunk: Chunk) -> Vec<u8> {
    file_bytes(
        &[0; 10],
        &metadata(FLAT, num_rows, &[(group_rows, vec![chunk])]),
    )
}

/// A schema of `depth` nested groups above one INT32 leaf.
fn nested(depth: usize) -> Vec<(String, Option<i32>, Option<i32>)> {
    let mut elements: Vec<(String, Option<i32>, Option<i32>)> =
        vec![("root".into(), Some(1), None)];
    for level in 1..depth {
        elements.push((format!("g{level}"), Some(1), None));
    }
    elements.push(("leaf".into(), None, Some(1)));
    elements
}

fn borrowed(elements: &[(String, Option<i32>, Option<i32>)]) -> Vec<Element<'_>> {
    elements
        .iter()
        .map(|(n, c, t)| (n.as_str(), *c, *t))
        .collect()
}

fn tables() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tables");
    let mut tables: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    tables.sort();
    assert!(tables.len() >= 10, "{tables:?}");
    tables
}

#[test]
fn the_repositorys_tables_pass_with_the_rows_the_crate_reports() {
    for path in tables() {
        let footer = open_and_read(&path).unwrap_or_else(|e| panic!("{e}"));
        let theirs = ParquetMetaDataReader::new()
            .parse_and_finish(&File::open(&path).unwrap())
            .unwrap();
        assert_eq!(
            footer.rows as i64,
            theirs.file_metadata().num_rows(),
            "{}",
            path.display()
        );
        // The checked bytes decode to what the crate reads from the file itself.
        let ours = ParquetMetaDataReader::decode_metadata(&footer.metadata).unwrap();
        assert_eq!(ours, theirs, "{}", path.display());
    }
}

#[test]
fn hand_written_footers_that_follow_the_rules_pass() {
    let footer = guard(&flat(3, 3, (None, 4, 10))).unwrap();
    assert_eq!(footer.rows, 3);
    let footer = guard(&flat(0, 0, (Some(4), 8, 10))).unwrap();
    assert_eq!(footer.rows, 0);
    // A root alone: no columns, no row groups.
    let bytes = file_bytes(&[], &metadata(&[("root", None, None)], 0, &[]));
    assert_eq!(guard(&bytes).unwrap().rows, 0);
    let deepest = nested(MAX_SCHEMA_DEPTH);
    guard(&file_bytes(&[], &metadata(&borrowed(&deepest), 0, &[]))).unwrap();
}

#[test]
fn the_file_and_its_tail_are_checked_first() {
    refused(b"PAR1PAR1", &["8 bytes long", "shorter than the 12 bytes"]);
    refused(b"PAR1\0\0\0\0PAR0", &["does not end with `PAR1`"]);
    refused(b"PAR1\0\0\0\0PARE", &["encrypted"]);
    // 2^31 - 1 bytes of footer claimed by a file of 12 bytes.
    refused(
        b"PAR1\xff\xff\xff\x7fPAR1",
        &[
            "footer claims 2147483647 bytes",
            "only 0 bytes before its last 8",
        ],
    );
}

#[test]
fn a_footer_over_the_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let len = MAX_FOOTER_BYTES + 1;
    let file = File::create(&path).unwrap();
    // Sparse: nothing but the tail is written.
    file.set_len(DATA_START + len + TAIL_BYTES).unwrap();
    let mut tail = (len as u32).to_le_bytes().to_vec();
    tail.extend_from_slice(MAGIC);
    file.write_all_at(&tail, DATA_START + len).unwrap();
    let err = open_and_read(&path).unwrap_err();
    assert!(err.contains("more than the 16777216 bytes"), "{err}");
}

#[test]
fn a_footer_that_ends_before_its_length_says_is_refused() {
    let full = metadata(FLAT, 3, &[(3, vec![(None, 4, 10)])]);
    let cut = &full[..full.len() - 6];
    refused(&file_bytes(&[0; 10], cut), &["the footer ends inside"]);
}

#[test]
fn a_child_count_larger_than_the_elements_that_follow_is_refused() {
    let bomb = [("root", Some(i32::MAX), None)];
    refused(
        &file_bytes(&[], &metadata(&bomb, 0, &[])),
        &[
            "schema element 0 (`root`)",
            "declares 2147483647 children, but only 0 schema elements follow",
        ],
    );
    let negative = [("root", Some(1), None), ("g", Some(-3), None)];
    refused(
        &file_bytes(&[], &metadata(&negative, 0, &[])),
        &["schema element 1 (`g`)", "declares -3 children"],
    );
}

#[test]
fn a_schema_tree_must_close_exactly() {
    // The root expects two children; its first is a group holding the only leaf.
    let open = [
        ("root", Some(2), None),
        ("g", Some(1), None),
        ("x", None, Some(1)),
    ];
    refused(
        &file_bytes(&[], &metadata(&open, 0, &[])),
        &["does not close", "expects 1 more children"],
    );
    // A second root after the first closes.
    let two = [
        ("root", Some(1), None),
        ("x", None, Some(1)),
        ("y", None, Some(1)),
    ];
    refused(
        &file_bytes(&[], &metadata(&two, 0, &[])),
        &[
            "schema element 2 (`y`)",
            "follows the end of the schema tree",
        ],
    );
}

#[test]
fn schemas_deeper_than_the_limit_are_refused() {
    for depth in [MAX_SCHEMA_DEPTH + 1, 2000] {
        let deep = nested(depth);
        refused(
            &file_bytes(&[], &metadata(&borrowed(&deep), 0, &[])),
            &["nests deeper than 100 levels"],
        );
    }
}

#[test]
fn lists_and_strings_longer_than_the_bytes_left_are_refused() {
    let mut t = Thrift::default();
    t.begin().int(1, I32, 2).list(2, STRUCT, 1_000);
    t.out.extend_from_slice(&[0; 20]);
    refused(
        &file_bytes(&[], &t.out),
        &["a list of 1000 elements, but only 20 bytes of the footer are left"],
    );
    let mut t = Thrift::default();
    t.begin().int(1, I32, 2).list(2, STRUCT, 1).begin();
    t.header(4, BINARY);
    t.varint(1 << 20);
    t.out.extend_from_slice(b"root\0");
    refused(
        &file_bytes(&[], &t.out),
        &["schema element 0", "a string of 1048576 bytes"],
    );
}

#[test]
fn too_many_elements_or_too_long_column_paths_are_refused() {
    let mut elements = vec![("root".to_string(), Some(MAX_SCHEMA_ELEMENTS as i32), None)];
    elements.extend((0..MAX_SCHEMA_ELEMENTS).map(|_| (String::new(), None, None)));
    refused(
        &file_bytes(&[], &metadata(&borrowed(&elements), 0, &[])),
        &["1000001 elements, more than the 1000000"],
    );
    // A 4 MiB group name above 100 leaves: every leaf's path holds a copy of it.
    let name = "n".repeat(4 << 20);
    let mut elements: Vec<Element> = vec![("root", Some(1), None), (&name, Some(100), None)];
    elements.extend((0..100).map(|_| ("x", None, Some(1))));
    refused(
        &file_bytes(&[], &metadata(&elements, 0, &[])),
        &["columns' paths take more than"],
    );
}

#[test]
fn row_counts_must_be_non_negative_and_add_up() {
    refused(&flat(-1, 0, (None, 4, 10)), &["num_rows is negative (-1)"]);
    refused(
        &flat(0, -5, (None, 4, 10)),
        &["row group 0", "num_rows is negative (-5)"],
    );
    refused(
        &flat(7, 3, (None, 4, 10)),
        &["num_rows is 7, but its row groups hold 3 rows"],
    );
}

#[test]
fn column_chunks_must_lie_inside_the_file() {
    // The data is bytes 4..14; the footer starts at 14.
    for (chunk, says) in [
        (
            (None, 4, 11),
            "bytes 4..15 are outside the file's data (bytes 4..14)",
        ),
        ((None, 2, 4), "bytes 2..6 are outside"),
        ((None, 1 << 40, 10), "are outside"),
        ((Some(-8), 4, 4), "the offset of its pages is negative (-8)"),
        ((None, 4, -1), "the size of its pages is negative (-1)"),
        ((None, i64::MAX, i64::MAX), "are outside"),
    ] {
        refused(&flat(1, 1, chunk), &["row group 0", "column 0", says]);
    }
}

#[test]
fn a_row_group_must_have_one_chunk_per_column() {
    let two_chunks = vec![(None, 4, 5), (None, 9, 5)];
    let bytes = file_bytes(&[0; 10], &metadata(FLAT, 1, &[(1, two_chunks)]));
    refused(
        &bytes,
        &[
            "row group 0",
            "2 column chunks, but the schema has 1 columns",
        ],
    );
}

#[test]
fn fields_the_crate_would_misread_are_refused() {
    // num_children written as a string: the crate would read its length as the count.
    let mut t = Thrift::default();
    t.begin().int(1, I32, 2).list(2, STRUCT, 1).begin();
    t.bytes(4, b"root").bytes(5, b"\x02\x02");
    t.end().end();
    refused(
        &file_bytes(&[], &t.out),
        &["SchemaElement.num_children is written as Binary, not as an i32"],
    );
    // The schema twice: the crate would read both, and keep the second.
    let mut t = Thrift::default();
    t.begin();
    schema(&mut t, FLAT);
    schema(&mut t, &[("root", Some(i32::MAX), None)]);
    t.end();
    refused(
        &file_bytes(&[], &t.out),
        &["FileMetaData.schema appears twice"],
    );
    // Row groups before the schema.
    let mut t = Thrift::default();
    t.begin().list(4, STRUCT, 0);
    schema(&mut t, FLAT);
    t.end();
    refused(
        &file_bytes(&[], &t.out),
        &["row groups come before its schema"],
    );
}

#[test]
fn unknown_fields_are_skipped_but_not_without_bound() {
    // An unknown field 20 of FileMetaData holding a string: skipped.
    let mut good = metadata(FLAT, 0, &[]);
    good.pop();
    good.extend_from_slice(&[0x08, 0x28, 3, b'a', b'b', b'c', 0]);
    guard(&file_bytes(&[], &good)).unwrap();
    // An unknown field holding structs nested 100 deep.
    let mut deep = metadata(FLAT, 0, &[]);
    deep.pop();
    deep.extend_from_slice(&[0x0c, 0x28]);
    deep.extend_from_slice(&[0x1c; 100]);
    deep.extend_from_slice(&[0; 102]);
    refused(&file_bytes(&[], &deep), &["nested deeper than 64 levels"]);
}

/// A real file with a schema exactly [`MAX_SCHEMA_DEPTH`] deep (nested structs above one
/// INT32 leaf), written by the parquet crate. Without the Arrow schema in its metadata: the
/// crate refuses to decode one nested this deep (its flatbuffer verifier stops at 64 tables).
fn deepest_table(path: &Path) {
    let mut field = Field::new("leaf", DataType::Int32, false);
    let mut array: ArrayRef = Arc::new(Int32Array::from(vec![7, 8]));
    for level in 1..MAX_SCHEMA_DEPTH {
        let column = StructArray::new(vec![field.clone()].into(), vec![array], None);
        field = Field::new(format!("g{level}"), column.data_type().clone(), false);
        array = Arc::new(column);
    }
    let schema = Arc::new(Schema::new(vec![field]));
    let batch = RecordBatch::try_new(schema.clone(), vec![array]).unwrap();
    let options = ArrowWriterOptions::new().with_skip_arrow_metadata(true);
    let mut writer =
        ArrowWriter::try_new_with_options(File::create(path).unwrap(), schema, options).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn the_deepest_schema_allowed_reads_through_on_a_small_stack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.parquet");
    deepest_table(&path);
    assert_eq!(open_and_read(&path).unwrap().rows, 2);
    // Stage threads have 2 MiB stacks; building and running the readers must fit.
    let rows = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let builder = crate::open_parquet(&path).unwrap();
            builder
                .build()
                .unwrap()
                .map(|b| b.unwrap().num_rows())
                .sum::<usize>()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(rows, 2);
}

// ---------------------------------------------------------------- pages

/// A page header: type, uncompressed and compressed sizes, and its kind's header as
/// `(field id, [(id, value)])` of i32 fields.
fn page_header(
    kind: i64,
    uncompressed: i64,
    compressed: i64,
    inner: (i16, &[(i16, i64)]),
) -> Vec<u8> {
    let mut t = Thrift::default();
    t.begin()
        .int(1, I32, kind)
        .int(2, I32, uncompressed)
        .int(3, I32, compressed)
        .open(inner.0);
    for &(id, v) in inner.1 {
        t.int(id, I32, v);
    }
    t.end().end();
    t.out
}

/// A data page of INT32 `values` (a required column: no levels) in `encoding`, its level
/// encodings `levels`.
fn data_page(values: &[i32], encoding: i64, levels: i64) -> Vec<u8> {
    let size = 4 * values.len() as i64;
    let data_header = [
        (1, values.len() as i64),
        (2, encoding),
        (3, levels),
        (4, levels),
    ];
    let mut page = page_header(0, size, size, (5, &data_header));
    page.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    page
}

/// A dictionary page of INT32 `values`, claiming `num_values`.
fn dictionary_page(values: &[i32], num_values: i64) -> Vec<u8> {
    let size = 4 * values.len() as i64;
    let mut page = page_header(2, size, size, (7, &[(1, num_values), (2, 0)]));
    page.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    page
}

/// A file of [`FLAT`] whose one uncompressed column chunk is `pages` (starting with a
/// dictionary page when `dictionary`), holding `rows` rows.
fn paged(pages: &[u8], rows: i64, dictionary: bool) -> Vec<u8> {
    let chunk = (dictionary.then_some(4), 4, pages.len() as i64);
    file_bytes(pages, &metadata(FLAT, rows, &[(rows, vec![chunk])]))
}

/// The INT32 values of a file read through the guard, or the error's message.
fn values(bytes: &[u8]) -> Result<Vec<i32>, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    std::fs::write(&path, bytes).unwrap();
    let builder = crate::open_parquet(&path).map_err(|e| e.to_string())?;
    let batches = crate::parquet_io::read_batches(&path, builder).map_err(|e| e.to_string())?;
    Ok(batches
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
            column.values().to_vec()
        })
        .collect())
}

/// Asserts reading `bytes` through the guard fails, saying each of `says`.
fn page_refused(bytes: &[u8], says: &[&str]) {
    let err = values(bytes).expect_err("refused");
    for s in says {
        assert!(err.contains(s), "`{s}` not in: {err}");
    }
    assert!(err.contains("t.parquet"), "{err}");
}

#[test]
fn hand_written_pages_that_follow_the_rules_are_read() {
    assert_eq!(
        values(&paged(&data_page(&[7, 8, 9], 0, 3), 3, false)),
        Ok(vec![7, 8, 9])
    );
    // A dictionary, then indices into it: bit width 2, one bit-packed group of 8 (3 used).
    let mut pages = dictionary_page(&[10, 20, 30], 3);
    let indices = [2u8, 0b11, 0b10_01_00, 0b0000_0000];
    let header = page_header(0, 4, 4, (5, &[(1, 3), (2, 8), (3, 3), (4, 3)]));
    pages.extend(header);
    pages.extend(indices);
    assert_eq!(values(&paged(&pages, 3, true)), Ok(vec![10, 20, 30]));
}

#[test]
fn a_page_header_longer_than_the_first_read_is_read_whole() {
    // Statistics (skipped by the crate) with a 20 KB maximum: more than the first window.
    let mut t = Thrift::default();
    t.begin()
        .int(1, I32, 0)
        .int(2, I32, 12)
        .int(3, I32, 12)
        .open(5);
    t.int(1, I32, 3)
        .int(2, I32, 0)
        .int(3, I32, 3)
        .int(4, I32, 3);
    t.open(5).bytes(1, &[7; 20_000]).end().end().end();
    let mut pages = t.out;
    assert!(pages.len() as u64 > super::pages::HEADER_WINDOW);
    pages.extend([7, 8, 9].iter().flat_map(|v: &i32| v.to_le_bytes()));
    assert_eq!(values(&paged(&pages, 3, false)), Ok(vec![7, 8, 9]));
}

#[test]
fn page_sizes_beyond_the_chunk_or_the_cap_are_refused() {
    let mut pages = page_header(
        0,
        i64::from(i32::MAX),
        12,
        (5, &[(1, 3), (2, 0), (3, 3), (4, 3)]),
    );
    pages.extend([0; 12]);
    page_refused(
        &paged(&pages, 3, false),
        &[
            "the page header at byte 4",
            "uncompressed_page_size is 2147483647, more than",
        ],
    );
    let mut pages = page_header(0, 12, 1000, (5, &[(1, 3), (2, 0), (3, 3), (4, 3)]));
    pages.extend([0; 12]);
    page_refused(
        &paged(&pages, 3, false),
        &["compressed_page_size is 1000, but its column chunk has 12 bytes left"],
    );
}

#[test]
fn a_dictionary_larger_than_its_bytes_is_refused() {
    let mut pages = dictionary_page(&[10, 20, 30], i64::from(i32::MAX));
    pages.extend(data_page(&[1], 0, 3));
    page_refused(
        &paged(&pages, 1, true),
        &["a dictionary of 2147483647 values in 12 bytes"],
    );
}

#[test]
fn dictionary_indices_without_a_dictionary_are_refused() {
    // Indices first: the crate would panic for want of a dictionary decoder.
    let mut pages = page_header(0, 4, 4, (5, &[(1, 3), (2, 8), (3, 3), (4, 3)]));
    pages.extend([2u8, 0b11, 0, 0]);
    page_refused(
        &paged(&pages, 3, false),
        &["dictionary indices, but its column chunk has no dictionary page before"],
    );
    // A dictionary page after a data page.
    let mut pages = data_page(&[1], 0, 3);
    pages.extend(dictionary_page(&[10], 1));
    page_refused(
        &paged(&pages, 1, false),
        &["a dictionary page that is not its column chunk's first"],
    );
}

#[test]
fn levels_in_an_encoding_the_crate_cannot_decode_are_refused() {
    page_refused(
        &paged(&data_page(&[7, 8, 9], 0, 0), 3, false),
        &["levels in encoding 0"],
    );
}

/// A list column over many small pages, read in batches that end inside pages: the crate
/// peeks at the next page's header to find where records end, then asks for a reader past
/// it, where it reads nothing.
#[test]
fn many_pages_of_a_list_column_read_back_in_small_batches() {
    use arrow_array::builder::{Float32Builder, ListBuilder};
    use parquet::file::properties::WriterProperties;
    let mut lists = ListBuilder::new(Float32Builder::new());
    for row in 0..500 {
        for i in 0..row % 13 {
            lists.values().append_value((row * 13 + i) as f32);
        }
        lists.append(true);
    }
    let column: ArrayRef = Arc::new(lists.finish());
    let schema = Arc::new(Schema::new(vec![Field::new(
        "frames",
        column.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![column]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.parquet");
    let props = WriterProperties::builder()
        .set_data_page_size_limit(256)
        .set_write_batch_size(16)
        .set_dictionary_enabled(false)
        .build();
    let mut writer =
        ArrowWriter::try_new(File::create(&path).unwrap(), schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let builder = crate::open_parquet(&path).unwrap();
    let pages = builder.metadata().row_group(0).column(0).compressed_size();
    assert!(pages > 20 * 256, "{pages} bytes: too few pages");
    let read: Vec<RecordBatch> = builder
        .with_batch_size(7)
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut offset = 0;
    for part in &read {
        assert_eq!(part, &batch.slice(offset, part.num_rows()));
        offset += part.num_rows();
    }
    assert_eq!(offset, batch.num_rows());
}
