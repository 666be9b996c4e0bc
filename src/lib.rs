//! idrecon: identity reconciliation for checkout events.
//!
//! A shop sends every checkout's email and/or phone number to `POST /identify`; idrecon links
//! every contact detail of the same customer into one identity (oldest contact primary, the
//! rest secondary) and answers with the consolidated identity. The behaviour contract is
//! `SPEC.md`; the architecture (DESIGN.md):
//!
//! ```text
//! http ──► store ──► graph           memory: union-find + email/phone indexes
//!            │
//!            ├────► wal               disk: checksummed records, group commit
//!            └────► snapshot          disk: whole state at an LSN, atomic rename
//! ```
//!
//! Modules, one job each:
//! - [`alloc`]: the global allocator (small blocks from mimalloc, large ones from glibc);
//! - [`contact`]: the Contact row and its value types (`Email`, `Phone`, `Timestamp`);
//! - [`phone_region`]: opt-in E.164 phone canonicalization and the [`phone_region::Normalizer`];
//! - [`event`]: the events that change the graph (log payloads);
//! - [`graph`]: the identity graph: `plan`, `apply`, answers;
//! - [`wal`]: log segments, framing, group commit, recovery scan;
//! - [`snapshot`]: snapshot files;
//! - [`storage`]: the file-system interface under both (real, and `FaultFs` for tests);
//! - [`store`]: graph + log + snapshots, locking and durability waits;
//! - [`http`]: the axum API: router, handlers, `/identify` body parsing, the admin guard, the
//!   OpenAPI document and the connection loop (timeouts, graceful drain);
//! - [`metrics`]: Prometheus metric names and the recorder behind `GET /metrics`;
//! - [`telemetry`]: the logging flags and the `tracing` subscriber;
//! - [`progress`]: progress bars / lines of long command-line jobs;
//! - [`rows`]: CSV / JSON Lines import and export of Contact rows;
//! - [`feed`]: a client that replays checkout events against a running service;
//! - [`cli`]: the command line;
//! - [`config`]: the `--config` TOML file layered under flags and environment variables.
#![warn(missing_docs)]

pub mod alloc;
pub mod arena;
pub mod blocklist;
pub mod cli;
pub mod config;
pub mod contact;
pub mod cpu_load;
pub mod event;
pub mod feed;
pub mod graph;
pub mod history;
pub mod http;
pub mod metrics;
pub mod phone_region;
pub mod progress;
pub mod rows;
pub mod snapshot;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod value_index;
pub mod wal;
