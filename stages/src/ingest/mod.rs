//! Source stages: where data enters a pipeline.
//!
//! | kind | module |
//! |---|---|
//! | `synthetic` | [`synthetic`] |
//! | `csd`, `npz`, `csv` | [`feature_files`] (files via [`source`]: [`csd_file`], [`npz_file`], [`csv_dir`]; alignment in [`align`]) |
//! | `mmsa_pickle` | [`mmsa`] (safe pickle reading in [`pickle`]) |

pub mod align;
pub mod csd_file;
pub mod csv_dir;
pub mod feature_files;
pub mod mmsa;
pub mod npz_file;
pub mod pickle;
pub mod readers;
pub mod source;
pub mod synthetic;
