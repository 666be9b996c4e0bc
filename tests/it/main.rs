//! Every integration test of idrecon, in one test binary so the crate links once.
//!
//! One module per area; `common` holds the shared helpers (a real server on `127.0.0.1:0`, the
//! real binary for command-line tests) and the naive model of the `/identify` rules.

mod common;

mod admin;
mod architecture;
mod bit_flips;
mod capacity;
mod cluster;
mod cluster_limits;
mod cluster_linearizability;
mod cluster_membership;
mod cluster_storage;
mod config_cli;
mod crash;
mod data_files;
mod disk_space;
mod docs_drift;
mod erasure_memory;
mod erasure_traces;
mod fault_injection;
mod feed_cli;
mod fuzz_smoke;
mod graph_apply;
mod graph_merges;
mod graph_model;
mod graph_rules;
mod hostile_input;
mod http_api;
mod http_input;
mod identities_api;
mod identity_cap;
mod import_cli;
mod large_reads;
mod leftovers;
mod linearizability;
mod logs;
mod merge_guards;
mod metrics;
mod openapi;
mod phone_region;
mod recovery;
mod rows;
mod slow_clients;
mod split_api;
mod split_model;
mod unicode_email;
mod value_index;
mod wal;
mod wal_head;
mod wal_torn_tail;
