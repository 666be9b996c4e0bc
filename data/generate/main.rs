//! Deterministic generator of realistic FluxKart checkout events for idrecon.
//!
//! Every line it writes is one `POST /identify` request body (docs/behaviour.md §3), e.g.
//! `{"email":"marty.mcfly1@gmail.com","phoneNumber":"+1 555-010-1234"}`. The output is a pure
//! function of the flags: one `ChaCha8Rng` per purpose (`seed_from_u64(--seed)` with a fixed
//! `set_stream`), integer-only sampling (`random_range` on `u64`), no hash-map iteration and no
//! clock, so the same flags give byte-identical output on every machine. Benchmarks depend on
//! that: a change here must leave the output for the same flags unchanged.
//!
//! Request bodies are written by serde_json, the preload CSV by the csv crate under the
//! columns `idrecon import` reads (`idrecon::rows::COLUMNS`).
//!
//! # Files
//!
//! - `main.rs`: the flags, the output files and the `--stats` counts;
//! - `values.rs`: the seeded random streams, emails and phones rendered from serial numbers,
//!   the variants a request sends them in, and the request body;
//! - `sample.rs`: the `sample` workload;
//! - `preload.rs`: the preload and the workloads that use it (`returning`, `checkout-mix`,
//!   `new`).
//!
//! # Values
//!
//! Every email and phone number is rendered from a *serial number* that the generator hands
//! out once per new value, so values are unique by construction (no set of "used" values):
//!
//! - an email is `<name style><serial>@<domain>`, e.g. `marty.mcfly17@gmail.com`,
//!   `mmcfly17@icloud.com`, `zoë.tannen+shop17@yahoo.com`; the local part ends in the decimal
//!   serial after a non-digit, so two serials never give the same address. Names come from
//!   the customer, so one person's addresses look alike; a few names are non-ASCII (`zoë`,
//!   `søren`, …).
//! - a phone is a bijective scramble of the serial into 9 digits, printed in one of eight
//!   national styles (`5550101234`, `+1 555-010-1234`, `(555) 010-1234`, `555.010.1234`,
//!   `+15550101234`, `+44 7700 900123`, `07700900123`, `+91 98765 43210`). The styles have
//!   distinct shapes, so two serials never give the same number.
//!
//! All values are valid per docs/behaviour.md §4 (short ASCII or Latin emails with one `@`;
//! phones of 10–15 characters from digits, space and `+ - ( ) .`). Requests then use
//! *variants* that normalize to the same value: Title-Case or UPPER-CASE emails (only when the
//! service's lowercasing gives back the stored value, checked with `idrecon::contact::Email`),
//! surrounding spaces, tabs or newlines, and all-digit phones without a leading zero sent as
//! JSON integers. Requests that carry only one field sometimes carry the other as `null`, `""`
//! or `"   "`.
//!
//! # Workloads (`--workload`)
//!
//! - `sample` (default): a shop's event stream, for a fresh service. A population of
//!   `--customers` people (default `--events / 4`) arrives spread evenly over the stream (each
//!   event is a new customer with probability remaining-customers / remaining-events, so exactly
//!   `--customers` appear); every other event is a repeat purchase by an existing customer,
//!   older customers being likelier (minimum of two uniform draws). A customer owns 1–4 emails
//!   (55/25/13/7 %) and 1–3 phones (70/22/8 %) but reveals them over time: a repeat purchase by a
//!   customer who has not used all of them yet brings a new one with probability 25 %, 85 % of the
//!   time together with a value the customer already used (the service links it at once), else
//!   alone (the service sees a new, separate identity: a "persona" of the customer). 6 % of new
//!   customers join a family: their first phone is a phone of an existing customer, so the
//!   service merges the two people. New customers send both fields 85 %, email only 10 %, phone
//!   only 5 %; repeats send both 70 %, email only 15 %, phone only 15 %, always from one
//!   persona. With probability 1.5 % an event is a **late link**: a customer with two or more
//!   personas sends the email of one with the phone of another, so two earlier identities merge.
//! - `new`: every request is a brand-new customer, email and phone never seen before (both
//!   fields). Serials start above `--preload-contacts` (default 1 000 000), so the requests are
//!   new even against a preload of that size from any seed.
//! - `returning`: every request repeats values of one identity of the preload (below): both
//!   fields 70 %, email only 15 %, phone only 15 %, with the usual variants. Writes nothing.
//! - `checkout-mix`: 70 % returning unchanged (as `returning`), 20 % new customers (as `new`),
//!   8 % a preloaded customer with a new email or phone next to one of their known values (one
//!   new secondary), 2 % the email of one preloaded identity with the phone of another that the
//!   workload has not yet linked (one merge).
//!
//! # Preload (`returning`, `checkout-mix`; also `new` with `--preload-out`)
//!
//! `--preload-contacts N` rows (default 1 000 000) with ids 1..N, created in id order from
//! `2024-01-01T00:00:00.000Z` with 1–10 000 ms between rows. Each row is a new identity
//! (65 %: both values 94 %, email only 4 %, phone only 2 %) or joins a uniformly chosen existing
//! identity as a secondary: new email with a phone of the identity (50 %), a known email with a
//! new phone (40 %), or a demoted former primary (10 %: new values only, `updatedAt` up to 30
//! days after `createdAt`). So every identity's primary is its oldest row, every secondary's
//! `linkedId` is its primary, and distinct identities share no email or phone
//! (docs/behaviour.md §3).
//! The preload depends only on `--seed` and `--preload-contacts` (its own random stream), so
//! the CSV written by one run matches the requests of another run with other `--events`.
//! `--preload-out PATH` writes it as an import CSV (docs/behaviour.md §7): header
//! `id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt`, NULL as an
//! empty field, RFC 3339 timestamps with milliseconds.
//!
//! # Flags
//!
//! `--events N` (default 100000), `--seed S` (default 42), `--customers N` (sample only),
//! `--out PATH` (default stdout; `-` is stdout), `--workload sample|returning|checkout-mix|new`,
//! `--preload-out PATH`, `--preload-contacts N` (not with sample). Bad or conflicting flags are
//! clap errors (exit status 2).
//!
//! `--stats` prints to stderr how many events of each kind the generator produced (new
//! customers, repeats, late links, variants, ...); the events still go to `--out`. It counts
//! what was generated, not what a service makes of it: the identities the committed sample
//! produces are checked by `tests/it/data_files.rs`, against the naive model of the rules and
//! the real identity graph.
//!
//! # Regenerating the committed sample (from the crate root)
//!
//! ```text
//! cargo run --release --example generate -- --workload sample --events 100000 --seed 42 \
//!     --out data/checkout-sample.jsonl
//! cargo run --release --example generate -- --workload sample --events 100000 --seed 42 \
//!     --stats --out /dev/null
//!     # → the generator counts in data/README.md
//! ```
//!
//! Benchmark inputs (not committed), e.g.:
//!
//! ```text
//! cargo run --release --example generate -- --workload checkout-mix --events 1000000 \
//!     --preload-contacts 1000000 --preload-out /tmp/preload.csv --out /tmp/mix.jsonl
//! ```

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};

mod preload;
mod sample;
mod values;

use preload::{Mix, Preload};
use sample::Sample;
use values::{Gen, Request};

/// Deterministic generator of FluxKart checkout events (JSON lines of `/identify` bodies).
#[derive(Parser, Debug)]
#[command(name = "generate", version, about)]
struct Args {
    /// Number of request lines to write.
    #[arg(long, default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=500_000_000))]
    events: u64,
    /// Seed of every random stream; same flags → byte-identical output.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Customers in the sample population (sample only; default events / 4).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=500_000_000))]
    customers: Option<u64>,
    /// Where to write the requests (default stdout; `-` is stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Which kind of traffic to generate.
    #[arg(long, value_enum, default_value_t = Workload::Sample)]
    workload: Workload,
    /// Write the preloaded state as an import CSV (returning, checkout-mix, new).
    #[arg(long)]
    preload_out: Option<PathBuf>,
    /// Contacts in the preload (default 1000000); fresh values are numbered above it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    preload_contacts: Option<u64>,
    /// Print how many events of each kind were generated to stderr.
    #[arg(long)]
    stats: bool,
}

/// The kinds of traffic (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// A shop's event stream for a fresh service.
    Sample,
    /// Only values of preloaded identities; writes nothing.
    Returning,
    /// 70 % returning, 20 % new, 8 % new value of a known customer, 2 % links.
    CheckoutMix,
    /// Every request a brand-new customer.
    New,
}

const DEFAULT_PRELOAD_CONTACTS: u64 = 1_000_000;
/// Random stream of the events.
const EVENTS_STREAM: u64 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    let conflict = |message: &str| -> ! {
        Args::command()
            .error(ErrorKind::ArgumentConflict, message)
            .exit()
    };
    if args.workload != Workload::Sample && args.customers.is_some() {
        conflict("--customers applies only to --workload sample");
    }
    if let Some(customers) = args.customers
        && customers > args.events
    {
        conflict("--customers must not exceed --events");
    }
    if args.workload == Workload::Sample
        && (args.preload_out.is_some() || args.preload_contacts.is_some())
    {
        conflict("--preload-out and --preload-contacts do not apply to --workload sample");
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("generate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_out(path: Option<&Path>) -> io::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) if p != Path::new("-") => Box::new(BufWriter::with_capacity(
            1 << 16,
            File::create(p).map_err(|e| annotate(e, p))?,
        )),
        _ => Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
    })
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn run(args: &Args) -> io::Result<()> {
    let mut out = open_out(args.out.as_deref())?;
    let mut st = GenStats::default();
    let mut g = Gen::new(args.seed, EVENTS_STREAM);
    let mut customers = 0;
    match args.workload {
        Workload::Sample => {
            customers = args.customers.unwrap_or((args.events / 4).max(1));
            let mut w = Sample::new(customers, args.events);
            for i in 0..args.events {
                let req = w.next(i, &mut g, &mut st);
                emit(&req, &mut out)?;
            }
        }
        workload => {
            let n = args.preload_contacts.unwrap_or(DEFAULT_PRELOAD_CONTACTS);
            let pre = if workload != Workload::New || args.preload_out.is_some() {
                let mut csv = match &args.preload_out {
                    Some(p) => Some(
                        csv::WriterBuilder::new()
                            .has_headers(false)
                            .buffer_capacity(1 << 16)
                            .from_writer(File::create(p).map_err(|e| annotate(e, p))?),
                    ),
                    None => None,
                };
                let pre = Preload::build(args.seed, n, csv.as_mut())?;
                if let Some(mut w) = csv {
                    w.flush()?;
                }
                Some(pre)
            } else {
                None
            };
            let mut w = Mix::new(workload, pre, n);
            for _ in 0..args.events {
                let req = w.next(&mut g, &mut st);
                emit(&req, &mut out)?;
            }
        }
    }
    out.flush()?;
    if args.stats {
        let mut report = String::new();
        st.report(&mut report, args, customers);
        eprint!("{report}");
    }
    Ok(())
}

/// Writes one request body as a line of compact JSON.
fn emit(req: &Request, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer(&mut *out, req)?;
    out.write_all(b"\n")
}

/// Counts of what the generator produced, by kind (`--stats`).
#[derive(Default)]
struct GenStats {
    new_customers: u64,
    family_joins: u64,
    repeats: u64,
    acquired_linked: u64,
    acquired_alone: u64,
    late_links: u64,
    returning: u64,
    new_values: u64,
    links: u64,
    link_fallbacks: u64,
    nulls: u64,
    empties: u64,
    blanks: u64,
    int_phones: u64,
    case_variants: u64,
    space_variants: u64,
}

impl GenStats {
    fn report(&self, out: &mut String, args: &Args, customers: u64) {
        let w = args.workload.to_possible_value();
        let name = w.as_ref().map_or("?", |v| v.get_name());
        let _ = writeln!(
            out,
            "# generator: --workload {name} --events {} --seed {}",
            args.events, args.seed
        );
        let mut line = |k: &str, v: u64| {
            let _ = writeln!(out, "{k:<34}{v}");
        };
        if args.workload == Workload::Sample {
            line("customers", customers);
            line("new-customer events", self.new_customers);
            line("  of which family joins", self.family_joins);
            line("repeat purchases", self.repeats);
            line("  new value linked to a known one", self.acquired_linked);
            line("  new value alone (new persona)", self.acquired_alone);
            line("late-link events", self.late_links);
        } else {
            line("returning requests", self.returning);
            line("new-customer requests", self.new_customers);
            line("known customer + new value", self.new_values);
            line("link requests", self.links);
            line("link fallbacks to returning", self.link_fallbacks);
        }
        line("explicit null fields", self.nulls);
        line("empty-string fields", self.empties);
        line("blank-string fields", self.blanks);
        line("phones sent as JSON integers", self.int_phones);
        line("emails in upper/title case", self.case_variants);
        line("values with surrounding space", self.space_variants);
    }
}
