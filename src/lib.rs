//! idrecon: identity reconciliation for checkout events.
//!
//! A shop sends every checkout's email and/or phone number to `POST /identify`; idrecon links
//! every contact detail of one customer into an identity (the oldest contact is the primary, the
//! others are secondaries) and answers with the consolidated identity. The contacts live in
//! memory; every change is in a checksummed write-ahead log before any answer reveals it. What
//! the service does is in `docs/behaviour.md` (the `§N` that comments cite), the file formats in
//! `docs/format.md`, the reasons behind the design in `docs/design.md`.
//!
//! Dependencies run one way, with no cycle:
//!
//! ```text
//! cli ──► http ──┬──► store ──┬──► graph      memory: union-find forest + email/phone indexes
//!  │             │            ├──► wal        disk: checksummed records, group commit
//!  │             │            └──► snapshot   disk: the whole state at one LSN, atomic rename
//!  │             └──► cluster ──► graph, wal, snapshot, the store's answer types (openraft)
//!  └──► rows                               import planning and export of Contact rows
//!
//! graph, snapshot, rows ──► contact, event        wal, snapshot ──► storage
//! metrics: metric names only, a leaf any layer may use
//! alloc: the global allocator of the binary and the HTTP ceiling, a leaf
//! ```
//!
//! The domain types:
//! - [`contact`]: the Contact row and its value types (`Email`, `Phone`, `Timestamp`,
//!   `ValidationError`);
//! - [`phone_region`]: opt-in E.164 phone canonicalization and the [`phone_region::Normalizer`]
//!   every outside value goes through;
//! - [`event`]: the events that change the graph and the persisted forms of its state (log and
//!   snapshot payloads).
//!
//! The core:
//! - [`graph`]: the identity graph, pure (no I/O, no clock, no locks): `plan`/`decide` work out
//!   what a request does, `apply` is the only code that changes state, views render answers;
//! - [`wal`]: log segments, record framing, the group-commit writer thread, the recovery scan;
//! - [`snapshot`]: snapshot files: format, streamed writer, verifying reader, the directory;
//! - [`storage`]: the file-system interface under the log and snapshots (the real one, and
//!   `FaultFs` for fault-injection tests);
//! - [`store`]: graph + log + snapshots: locking, durability waits, recovery, and one
//!   maintenance task for snapshots and compaction;
//! - [`cluster`]: cluster mode: a Raft group on openraft whose log is a write-ahead log, whose
//!   state machine is the graph and whose snapshots are snapshot files (docs/behaviour.md §9);
//! - [`rows`]: CSV / JSON Lines reading, import planning and export of Contact rows;
//! - [`metrics`]: the names, help texts and buckets of every metric, and the Prometheus recorder;
//! - [`alloc`]: the global allocator: blocks under 256 KiB from mimalloc, larger ones from glibc.
//!
//! The HTTP layer, [`http`]: the axum router and one module per resource, whose handlers
//! extract and validate input into domain types, call the store and map errors to the JSON error
//! shape; the `/identify` body parser, the admin-token guard, the OpenAPI document served at
//! `/openapi.json`, and the connection loop with its timeouts and graceful drain.
//!
//! The command line, [`cli`]: the `serve`, `import`, `export`, `check` and `feed` subcommands
//! (`feed` is the client that replays checkout events), the `--config` TOML file layered under
//! flags and environment variables, the `tracing` subscriber and the progress of long jobs.
#![warn(missing_docs)]

pub mod alloc;
pub mod cli;
pub mod cluster;
pub mod contact;
pub mod event;
pub mod graph;
pub mod http;
pub mod metrics;
pub mod phone_region;
pub mod rows;
pub mod snapshot;
pub mod storage;
pub mod store;
pub mod wal;
