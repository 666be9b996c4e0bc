//! Every integration test of idrecon, in one test binary so the crate links once.
//!
//! One module per area; `common` holds the shared helpers (a real server on `127.0.0.1:0`, the
//! real binary for command-line tests) and the naive model of the `/identify` rules.

mod common;

mod admin;
mod bit_flips;
mod config_cli;
mod crash;
mod data_files;
mod disk_space;
mod fault_injection;
mod fuzz_smoke;
mod graph_model;
mod graph_rules;
mod hostile_input;
mod http_api;
mod identities_api;
mod import_cli;
mod linearizability;
mod logs;
mod metrics;
mod openapi;
mod phone_region;
mod recovery;
mod rows;
mod value_index;
mod wal;
