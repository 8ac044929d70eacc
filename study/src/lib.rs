//! Studying finished mmflow runs: their results read back, several runs compared side by side,
//! and the report of one run.
//!
//! Runs are read only through [`mmflow_pipeline::record::RunRecord`] (an unfinished run is
//! refused, naming its stages), and their tables are found by the table kind the lock records
//! for every output (`metrics`, `history`, …; the names are the schema crate's table-name
//! constants), never by the names of stage kinds or outputs.
//!
//! - [`runs`]: the evaluations of finished runs (every recorded `metrics` table) with the
//!   settings each run completed.
//! - [`compare`]: evaluations grouped by settings (runs differing only by seed form one
//!   group), metrics with intervals, changes from the first group, the best group; as
//!   Markdown and as the `comparison` table.
//! - [`report`]: a self-contained report folder of one run (Markdown and SVG plots).
//! - [`staging`]: how both write beside a user's files without ever losing one.

pub mod compare;
pub mod report;
pub mod runs;
pub mod staging;
