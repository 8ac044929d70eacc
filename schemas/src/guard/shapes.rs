//! The structs of a Parquet footer and of a page header as the parquet crate reads them:
//! for each, the fields it knows and the type it reads each one as, whatever the wire says.
//! A field missing here is skipped by its wire type, as the crate skips it.
//!
//! Transcribed from the parquet crate's readers (`file/metadata/thrift`, `basic.rs`,
//! `file/metadata/mod.rs`); field ids and types are those of `parquet.thrift`.

/// What the crate reads a field as.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Bool,
    Byte,
    I16,
    /// Also every enum.
    I32,
    I64,
    Double,
    /// Also every string.
    Binary,
    List(&'static Kind),
    Struct(&'static Shape),
    /// A struct without fields, read as a single zero byte.
    Empty,
    /// A field mmflow refuses, and why.
    Refused(&'static str),
}

impl Kind {
    /// The kind's name, for messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean",
            Kind::Byte => "a byte",
            Kind::I16 => "an i16",
            Kind::I32 => "an i32",
            Kind::I64 => "an i64",
            Kind::Double => "a double",
            Kind::Binary => "a string",
            Kind::List(_) => "a list",
            Kind::Struct(shape) => shape.name,
            Kind::Empty => "an empty struct",
            Kind::Refused(_) => "nothing",
        }
    }
}

/// Whether a struct is a union, and what the crate does with a variant it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Union {
    /// A plain struct.
    No,
    /// A union whose unknown variants the crate refuses.
    Closed,
    /// A union whose unknown variants the crate skips.
    Open,
}

/// One field the crate knows.
#[derive(Debug)]
pub(super) struct Field {
    pub(super) id: i16,
    pub(super) name: &'static str,
    pub(super) kind: Kind,
}

/// A struct the crate reads.
#[derive(Debug)]
pub(super) struct Shape {
    pub(super) name: &'static str,
    pub(super) union: Union,
    pub(super) fields: &'static [Field],
}

impl Shape {
    /// The known field of id `id`, with its index in [`Shape::fields`].
    pub(super) fn field(&self, id: i16) -> Option<(usize, &Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.id == id)
    }
}

const fn field(id: i16, name: &'static str, kind: Kind) -> Field {
    Field { id, name, kind }
}

const fn plain(name: &'static str, fields: &'static [Field]) -> Shape {
    Shape {
        name,
        union: Union::No,
        fields,
    }
}

const ENCRYPTED: Kind =
    Kind::Refused("an encrypted Parquet file (mmflow reads plaintext Parquet only)");

pub(super) const FILE_META_DATA: Shape = plain(
    "FileMetaData",
    &[
        field(1, "version", Kind::I32),
        field(2, "schema", Kind::List(&Kind::Struct(&SCHEMA_ELEMENT))),
        field(3, "num_rows", Kind::I64),
        field(4, "row_groups", Kind::List(&Kind::Struct(&ROW_GROUP))),
        field(
            5,
            "key_value_metadata",
            Kind::List(&Kind::Struct(&KEY_VALUE)),
        ),
        field(6, "created_by", Kind::Binary),
        field(7, "column_orders", Kind::List(&Kind::Struct(&COLUMN_ORDER))),
        field(8, "encryption_algorithm", ENCRYPTED),
        field(9, "footer_signing_key_metadata", ENCRYPTED),
    ],
);

pub(super) const SCHEMA_ELEMENT: Shape = plain(
    "SchemaElement",
    &[
        field(1, "type", Kind::I32),
        field(2, "type_length", Kind::I32),
        field(3, "repetition_type", Kind::I32),
        field(4, "name", Kind::Binary),
        field(5, "num_children", Kind::I32),
        field(6, "converted_type", Kind::I32),
        field(7, "scale", Kind::I32),
        field(8, "precision", Kind::I32),
        field(9, "field_id", Kind::I32),
        field(10, "logical_type", Kind::Struct(&LOGICAL_TYPE)),
    ],
);

const LOGICAL_TYPE: Shape = Shape {
    name: "LogicalType",
    union: Union::Open,
    fields: &[
        field(1, "STRING", Kind::Empty),
        field(2, "MAP", Kind::Empty),
        field(3, "LIST", Kind::Empty),
        field(4, "ENUM", Kind::Empty),
        field(5, "DECIMAL", Kind::Struct(&DECIMAL_TYPE)),
        field(6, "DATE", Kind::Empty),
        field(7, "TIME", Kind::Struct(&TIME_TYPE)),
        field(8, "TIMESTAMP", Kind::Struct(&TIME_TYPE)),
        field(10, "INTEGER", Kind::Struct(&INT_TYPE)),
        field(11, "UNKNOWN", Kind::Empty),
        field(12, "JSON", Kind::Empty),
        field(13, "BSON", Kind::Empty),
        field(14, "UUID", Kind::Empty),
        field(15, "FLOAT16", Kind::Empty),
        field(16, "VARIANT", Kind::Struct(&VARIANT_TYPE)),
        field(17, "GEOMETRY", Kind::Struct(&GEOMETRY_TYPE)),
        field(18, "GEOGRAPHY", Kind::Struct(&GEOGRAPHY_TYPE)),
        field(19, "FILE", Kind::Empty),
    ],
};

const DECIMAL_TYPE: Shape = plain(
    "DecimalType",
    &[
        field(1, "scale", Kind::I32),
        field(2, "precision", Kind::I32),
    ],
);

/// `TimeType` and `TimestampType` are the same struct.
const TIME_TYPE: Shape = plain(
    "TimestampType",
    &[
        field(1, "isAdjustedToUTC", Kind::Bool),
        field(2, "unit", Kind::Struct(&TIME_UNIT)),
    ],
);

const TIME_UNIT: Shape = Shape {
    name: "TimeUnit",
    union: Union::Closed,
    fields: &[
        field(1, "MILLIS", Kind::Empty),
        field(2, "MICROS", Kind::Empty),
        field(3, "NANOS", Kind::Empty),
    ],
};

const INT_TYPE: Shape = plain(
    "IntType",
    &[
        field(1, "bitWidth", Kind::Byte),
        field(2, "isSigned", Kind::Bool),
    ],
);

const VARIANT_TYPE: Shape = plain(
    "VariantType",
    &[field(1, "specification_version", Kind::Byte)],
);

const GEOMETRY_TYPE: Shape = plain("GeometryType", &[field(1, "crs", Kind::Binary)]);

const GEOGRAPHY_TYPE: Shape = plain(
    "GeographyType",
    &[
        field(1, "crs", Kind::Binary),
        field(2, "algorithm", Kind::I32),
    ],
);

pub(super) const ROW_GROUP: Shape = plain(
    "RowGroup",
    &[
        field(1, "columns", Kind::List(&Kind::Struct(&COLUMN_CHUNK))),
        field(2, "total_byte_size", Kind::I64),
        field(3, "num_rows", Kind::I64),
        field(
            4,
            "sorting_columns",
            Kind::List(&Kind::Struct(&SORTING_COLUMN)),
        ),
        field(5, "file_offset", Kind::I64),
        // 6 (total_compressed_size): skipped by the crate.
        field(7, "ordinal", Kind::I16),
    ],
);

pub(super) const COLUMN_CHUNK: Shape = plain(
    "ColumnChunk",
    &[
        field(1, "file_path", Kind::Binary),
        field(2, "file_offset", Kind::I64),
        field(3, "meta_data", Kind::Struct(&COLUMN_META_DATA)),
        field(4, "offset_index_offset", Kind::I64),
        field(5, "offset_index_length", Kind::I32),
        field(6, "column_index_offset", Kind::I64),
        field(7, "column_index_length", Kind::I32),
        field(8, "crypto_metadata", ENCRYPTED),
        field(9, "encrypted_column_metadata", ENCRYPTED),
    ],
);

pub(super) const COLUMN_META_DATA: Shape = plain(
    "ColumnMetaData",
    &[
        field(1, "type", Kind::I32),
        field(2, "encodings", Kind::List(&Kind::I32)),
        // 3 (path_in_schema) and 8 (key_value_metadata): skipped by the crate.
        field(4, "codec", Kind::I32),
        field(5, "num_values", Kind::I64),
        field(6, "total_uncompressed_size", Kind::I64),
        field(7, "total_compressed_size", Kind::I64),
        field(9, "data_page_offset", Kind::I64),
        field(10, "index_page_offset", Kind::I64),
        field(11, "dictionary_page_offset", Kind::I64),
        field(12, "statistics", Kind::Struct(&STATISTICS)),
        field(
            13,
            "encoding_stats",
            Kind::List(&Kind::Struct(&PAGE_ENCODING_STATS)),
        ),
        field(14, "bloom_filter_offset", Kind::I64),
        field(15, "bloom_filter_length", Kind::I32),
        field(16, "size_statistics", Kind::Struct(&SIZE_STATISTICS)),
        field(
            17,
            "geospatial_statistics",
            Kind::Struct(&GEOSPATIAL_STATISTICS),
        ),
    ],
);

const STATISTICS: Shape = plain(
    "Statistics",
    &[
        field(1, "max", Kind::Binary),
        field(2, "min", Kind::Binary),
        field(3, "null_count", Kind::I64),
        field(4, "distinct_count", Kind::I64),
        field(5, "max_value", Kind::Binary),
        field(6, "min_value", Kind::Binary),
        field(7, "is_max_value_exact", Kind::Bool),
        field(8, "is_min_value_exact", Kind::Bool),
        field(9, "nan_count", Kind::I64),
    ],
);

const PAGE_ENCODING_STATS: Shape = plain(
    "PageEncodingStats",
    &[
        field(1, "page_type", Kind::I32),
        field(2, "encoding", Kind::I32),
        field(3, "count", Kind::I32),
    ],
);

const SIZE_STATISTICS: Shape = plain(
    "SizeStatistics",
    &[
        field(1, "unencoded_byte_array_data_bytes", Kind::I64),
        field(2, "repetition_level_histogram", Kind::List(&Kind::I64)),
        field(3, "definition_level_histogram", Kind::List(&Kind::I64)),
    ],
);

const GEOSPATIAL_STATISTICS: Shape = plain(
    "GeospatialStatistics",
    &[
        field(1, "bbox", Kind::Struct(&BOUNDING_BOX)),
        field(2, "geospatial_types", Kind::List(&Kind::I32)),
    ],
);

const BOUNDING_BOX: Shape = plain(
    "BoundingBox",
    &[
        field(1, "xmin", Kind::Double),
        field(2, "xmax", Kind::Double),
        field(3, "ymin", Kind::Double),
        field(4, "ymax", Kind::Double),
        field(5, "zmin", Kind::Double),
        field(6, "zmax", Kind::Double),
        field(7, "mmin", Kind::Double),
        field(8, "mmax", Kind::Double),
    ],
);

const SORTING_COLUMN: Shape = plain(
    "SortingColumn",
    &[
        field(1, "column_idx", Kind::I32),
        field(2, "descending", Kind::Bool),
        field(3, "nulls_first", Kind::Bool),
    ],
);

const KEY_VALUE: Shape = plain(
    "KeyValue",
    &[
        field(1, "key", Kind::Binary),
        field(2, "value", Kind::Binary),
    ],
);

const COLUMN_ORDER: Shape = Shape {
    name: "ColumnOrder",
    union: Union::Open,
    fields: &[
        field(1, "TYPE_ORDER", Kind::Empty),
        field(2, "IEEE_754_TOTAL_ORDER", Kind::Empty),
        field(3, "INT96_TIMESTAMP_ORDER", Kind::Empty),
    ],
};

/// A page header as the crate reads it by default (page statistics skipped).
pub(super) const PAGE_HEADER: Shape = plain(
    "PageHeader",
    &[
        field(1, "type", Kind::I32),
        field(2, "uncompressed_page_size", Kind::I32),
        field(3, "compressed_page_size", Kind::I32),
        field(4, "crc", Kind::I32),
        field(5, "data_page_header", Kind::Struct(&DATA_PAGE_HEADER)),
        field(6, "index_page_header", Kind::Struct(&INDEX_PAGE_HEADER)),
        field(
            7,
            "dictionary_page_header",
            Kind::Struct(&DICTIONARY_PAGE_HEADER),
        ),
        field(8, "data_page_header_v2", Kind::Struct(&DATA_PAGE_HEADER_V2)),
    ],
);

pub(super) const DATA_PAGE_HEADER: Shape = plain(
    "DataPageHeader",
    &[
        field(1, "num_values", Kind::I32),
        field(2, "encoding", Kind::I32),
        field(3, "definition_level_encoding", Kind::I32),
        field(4, "repetition_level_encoding", Kind::I32),
        // 5 (statistics): skipped by the crate.
    ],
);

const INDEX_PAGE_HEADER: Shape = plain("IndexPageHeader", &[]);

pub(super) const DICTIONARY_PAGE_HEADER: Shape = plain(
    "DictionaryPageHeader",
    &[
        field(1, "num_values", Kind::I32),
        field(2, "encoding", Kind::I32),
        field(3, "is_sorted", Kind::Bool),
    ],
);

pub(super) const DATA_PAGE_HEADER_V2: Shape = plain(
    "DataPageHeaderV2",
    &[
        field(1, "num_values", Kind::I32),
        field(2, "num_nulls", Kind::I32),
        field(3, "num_rows", Kind::I32),
        field(4, "encoding", Kind::I32),
        field(5, "definition_levels_byte_length", Kind::I32),
        field(6, "repetition_levels_byte_length", Kind::I32),
        field(7, "is_compressed", Kind::Bool),
        // 8 (statistics): skipped by the crate.
    ],
);
