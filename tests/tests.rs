//! End-to-end tests through the `mmflow` binary: one test binary, each test in its own
//! temporary directory (see `util`).

mod util;

mod bad_inputs;
mod cli;
mod compare;
mod embed_text;
mod fuzz;
mod hostile;
mod interop;
mod json;
mod modules;
mod normalize;
mod readers;
mod report;
mod slurm;
mod sources;
mod synthetic;
mod targets;
mod text_finetune;
mod thrift;
mod training;
mod zoo;
