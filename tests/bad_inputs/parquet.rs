//! Bad inputs: Parquet files whose footers lie — to `mmflow show`, and in a finished run whose
//! recorded table was replaced (its lock entry rewritten to vouch for the new file), to `run`,
//! `compare` and `report`. Each is refused by the footer guard, naming the file, before the
//! parquet crate allocates or recurses on what the footer says.

use mmflow_pipeline::manifest::{hash_file, stat};

use super::runs::{edit_lock, finished, RUN};
use super::{check, write_bytes, Case};
use crate::thrift::{element, file_metadata, parquet_file, row_group, string, Value};
use crate::util::Dir;

/// A footer whose root declares 2^31 − 1 children (and nothing follows it): the crate used
/// to reserve 16 GiB for them.
fn children_bomb() -> Vec<u8> {
    parquet_file(
        &[],
        &file_metadata(vec![element("schema", Some(i32::MAX.into()))], 0, vec![]),
    )
}

/// A schema of `depth` nested groups above one INT32 leaf, no row groups.
fn nested(depth: usize) -> Vec<u8> {
    let mut schema = vec![element("schema", Some(1))];
    schema.extend((1..depth).map(|level| element(&format!("g{level}"), Some(1))));
    schema.push(element("leaf", None));
    parquet_file(&[], &file_metadata(schema, 0, vec![]))
}

/// A schema two thousand levels deep: 16 KB that overflowed the stack.
fn deep() -> Vec<u8> {
    nested(2000)
}

/// One INT32 column, 10 bytes of data; `edit` changes the footer before it is written.
fn flat(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut meta = file_metadata(
        vec![element("schema", Some(1)), element("x", None)],
        3,
        vec![row_group(3, 4, 10)],
    );
    edit(&mut meta);
    parquet_file(&[0; 10], &meta)
}

/// Writes `bytes` in place of the run's `rel` and rewrites its lock record to vouch for them
/// (size, modification time, content hash), as one who tampers with a run would.
fn replace_recorded(d: &Dir, stage: &str, output: &str, rel: &str, bytes: &[u8]) {
    finished(d);
    let path = d.join(&format!("{RUN}/{rel}"));
    std::fs::write(&path, bytes).unwrap();
    let (size, mtime_ns) = stat(&path).unwrap();
    let hash = hash_file(&path).unwrap();
    edit_lock(d, |lock| {
        let record = &mut lock["stages"][stage]["outputs"][output];
        record["size"] = size.into();
        record["mtime_ns"] = serde_json::Value::from(mtime_ns as u64);
        record["hash"] = hash.into();
    });
}

/// The run's segments (read by `model` and `eval`) replaced by `bytes`. The lock is left as a
/// run that fails in `model` leaves it — the modification times of the copied outputs, which
/// a run refreshes, recorded; `mosei` and `mosi` the last started run's completed stages —
/// so the run finds the lock it will write, and any other change shows.
fn segments_replaced(d: &Dir, bytes: &[u8]) {
    replace_recorded(d, "mosei", "segments", "mosei/segments.parquet", bytes);
    let run = d.join(RUN);
    edit_lock(d, |lock| {
        for entry in lock["stages"].as_object_mut().unwrap().values_mut() {
            for record in entry["outputs"].as_object_mut().unwrap().values_mut() {
                let (_, mtime_ns) = stat(&run.join(record["path"].as_str().unwrap())).unwrap();
                record["mtime_ns"] = serde_json::Value::from(mtime_ns as u64);
            }
        }
        let started = lock["started"]["stages"].as_object_mut().unwrap();
        started.remove("model");
        started.remove("eval");
    });
}

/// The run's metrics (read by `compare` and `report`) replaced by `bytes`.
fn metrics_replaced(d: &Dir, bytes: &[u8]) {
    replace_recorded(d, "eval", "metrics", "eval/metrics.parquet", bytes);
}

const BOMB_SAYS: &str = "declares 2147483647 children, but only 0 schema elements follow";
const DEEP_SAYS: &str = "the schema nests deeper than 100 levels";

const CASES: &[Case] = &[
    Case {
        what: "show of a FIFO",
        setup: |d| super::mkfifo(d, "table.parquet"),
        args: &["show", "table.parquet"],
        code: 1,
        says: &["table.parquet", "a FIFO"],
        may_write: &[],
    },
    Case {
        what: "show of a folder",
        setup: |d| std::fs::create_dir(d.join("table.parquet")).unwrap(),
        args: &["show", "table.parquet"],
        code: 1,
        says: &["table.parquet", "a directory"],
        may_write: &[],
    },
    Case {
        what: "show of /dev/zero",
        setup: |_| {},
        args: &["show", "/dev/zero"],
        code: 1,
        says: &["/dev/zero", "a character device"],
        may_write: &[],
    },
    Case {
        what: "show of a root declaring 2^31 - 1 children",
        setup: |d| write_bytes(d, "bomb.parquet", &children_bomb()),
        args: &["show", "bomb.parquet"],
        code: 1,
        says: &["bomb.parquet", "schema element 0 (`schema`)", BOMB_SAYS],
        may_write: &[],
    },
    Case {
        what: "show of a schema 2000 levels deep",
        setup: |d| write_bytes(d, "deep.parquet", &deep()),
        args: &["show", "deep.parquet"],
        code: 1,
        says: &["deep.parquet", "schema element 101 (`g101`)", DEEP_SAYS],
        may_write: &[],
    },
    Case {
        what: "show of a schema one level deeper than allowed",
        setup: |d| write_bytes(d, "deep.parquet", &nested(101)),
        args: &["show", "deep.parquet"],
        code: 1,
        says: &["deep.parquet", "schema element 101 (`leaf`)", DEEP_SAYS],
        may_write: &[],
    },
    Case {
        what: "show of a negative child count",
        setup: |d| {
            let bytes = flat(|meta| {
                let schema = meta.field_mut(2).unwrap().items_mut().unwrap();
                schema[1] = element("x", Some(-1));
            });
            write_bytes(d, "t.parquet", &bytes);
        },
        args: &["show", "t.parquet"],
        code: 1,
        says: &[
            "t.parquet",
            "schema element 1 (`x`)",
            "declares -1 children",
        ],
        may_write: &[],
    },
    Case {
        what: "show of a footer length beyond the file",
        setup: |d| {
            let mut bytes = flat(|_| {});
            let tail = bytes.len() - 8;
            bytes[tail..tail + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
            write_bytes(d, "t.parquet", &bytes);
        },
        args: &["show", "t.parquet"],
        code: 1,
        says: &["t.parquet", "its footer claims 1000000 bytes"],
        may_write: &[],
    },
    Case {
        what: "show of a footer shorter than its length says",
        // The footer's last 5 bytes cut, its length adjusted: its structs never close.
        setup: |d| {
            let bytes = flat(|_| {});
            let tail = bytes.len() - 8;
            let len = u32::from_le_bytes(bytes[tail..tail + 4].try_into().unwrap()) as usize;
            let mut cut = bytes[..tail - 5].to_vec();
            cut.extend_from_slice(&(len as u32 - 5).to_le_bytes());
            cut.extend_from_slice(b"PAR1");
            write_bytes(d, "t.parquet", &cut);
        },
        args: &["show", "t.parquet"],
        code: 1,
        says: &["t.parquet", "the footer ends inside"],
        may_write: &[],
    },
    Case {
        what: "show of a column chunk beyond the file",
        setup: |d| {
            let bytes = flat(|meta| {
                let groups = meta.field_mut(4).unwrap().items_mut().unwrap();
                groups[0] = row_group(3, 4, 1 << 30);
            });
            write_bytes(d, "t.parquet", &bytes);
        },
        args: &["show", "t.parquet"],
        code: 1,
        says: &[
            "t.parquet",
            "row group 0: column 0: its pages: bytes 4..1073741828 are outside the file's data",
        ],
        may_write: &[],
    },
    Case {
        what: "show of a negative row count",
        setup: |d| {
            let bytes = flat(|meta| *meta.field_mut(3).unwrap() = crate::thrift::int64(-1));
            write_bytes(d, "t.parquet", &bytes);
        },
        args: &["show", "t.parquet"],
        code: 1,
        says: &["t.parquet", "num_rows is negative (-1)"],
        may_write: &[],
    },
    Case {
        what: "show of row groups whose rows do not add up",
        setup: |d| {
            let bytes = flat(|meta| *meta.field_mut(3).unwrap() = crate::thrift::int64(5));
            write_bytes(d, "t.parquet", &bytes);
        },
        args: &["show", "t.parquet"],
        code: 1,
        says: &["t.parquet", "num_rows is 5, but its row groups hold 3 rows"],
        may_write: &[],
    },
    Case {
        what: "show of more column chunks than columns",
        setup: |d| {
            let bytes = flat(|meta| {
                let groups = meta.field_mut(4).unwrap().items_mut().unwrap();
                let chunks = groups[0].field_mut(1).unwrap().items_mut().unwrap();
                chunks.push(chunks[0].clone());
            });
            write_bytes(d, "t.parquet", &bytes);
        },
        args: &["show", "t.parquet"],
        code: 1,
        says: &[
            "t.parquet",
            "row group 0: it has 2 column chunks, but the schema has 1 columns",
        ],
        may_write: &[],
    },
    Case {
        what: "show of a string longer than the footer",
        setup: |d| {
            let bytes = flat(|meta| {
                let Value::Struct(fields) = meta else {
                    unreachable!()
                };
                // created_by, its length claiming 2^31 - 1 bytes.
                fields.push((6, Value::Raw(8, vec![0xff, 0xff, 0xff, 0xff, 0x07])));
            });
            write_bytes(d, "t.parquet", &bytes);
        },
        args: &["show", "t.parquet"],
        code: 1,
        says: &["t.parquet", "a string of 2147483647 bytes"],
        may_write: &[],
    },
    Case {
        what: "run over segments replaced by a root declaring 2^31 - 1 children",
        setup: |d| segments_replaced(d, &children_bomb()),
        args: &["run", "p.toml"],
        code: 1,
        says: &["stage `model`", "mosei/segments.parquet", BOMB_SAYS],
        may_write: &[],
    },
    Case {
        what: "run over segments replaced by a schema 2000 levels deep",
        setup: |d| segments_replaced(d, &deep()),
        args: &["run", "p.toml"],
        code: 1,
        says: &["stage `model`", "mosei/segments.parquet", DEEP_SAYS],
        may_write: &[],
    },
    Case {
        what: "compare of metrics replaced by a root declaring 2^31 - 1 children",
        setup: |d| metrics_replaced(d, &children_bomb()),
        args: &["compare", RUN],
        code: 1,
        says: &["stage `eval`", "eval/metrics.parquet", BOMB_SAYS],
        may_write: &[],
    },
    Case {
        what: "compare of metrics replaced by a schema 2000 levels deep",
        setup: |d| metrics_replaced(d, &deep()),
        args: &["compare", RUN],
        code: 1,
        says: &["stage `eval`", "eval/metrics.parquet", DEEP_SAYS],
        may_write: &[],
    },
    Case {
        what: "report of metrics replaced by a root declaring 2^31 - 1 children",
        setup: |d| metrics_replaced(d, &children_bomb()),
        args: &["report", RUN],
        code: 1,
        says: &["stage `eval`", "eval/metrics.parquet", BOMB_SAYS],
        may_write: &[],
    },
    Case {
        what: "report of metrics replaced by a schema 2000 levels deep",
        setup: |d| metrics_replaced(d, &deep()),
        args: &["report", RUN],
        code: 1,
        says: &["stage `eval`", "eval/metrics.parquet", DEEP_SAYS],
        may_write: &[],
    },
    Case {
        what: "compare --parquet over a user's file whose root declares 2^31 - 1 children",
        setup: |d| {
            finished(d);
            write_bytes(d, "mine.parquet", &children_bomb());
        },
        args: &["compare", RUN, "--parquet", "mine.parquet"],
        code: 1,
        says: &[
            "--parquet mine.parquet",
            "not a comparison table written by mmflow",
        ],
        may_write: &[],
    },
];

#[test]
fn bad_parquet_inputs_fail_cleanly() {
    check(CASES);
}

#[test]
fn the_bad_files_are_small_and_what_they_claim() {
    let bomb = children_bomb();
    assert!(bomb.len() < 200, "{}", bomb.len());
    let (meta, _) = crate::thrift::footer(&bomb).unwrap();
    let root = &meta.field(2).unwrap();
    let Value::List { items, .. } = root else {
        panic!("{root:?}")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].field(5),
        Some(&crate::thrift::int32(i32::MAX.into()))
    );
    assert_eq!(items[0].field(4), Some(&string("schema")));
    let deep = deep();
    assert!(deep.len() < 32 << 10, "{}", deep.len());
}
