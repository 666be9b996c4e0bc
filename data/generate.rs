//! Deterministic generator of realistic FluxKart checkout events for idrecon.
//!
//! Every line it writes is one `POST /identify` request body (SPEC.md §3), e.g.
//! `{"email":"marty.mcfly1@gmail.com","phoneNumber":"+1 555-010-1234"}`. The output is a pure
//! function of the flags: one `ChaCha8Rng` per purpose (`seed_from_u64(--seed)` with a fixed
//! `set_stream`), integer-only sampling (`random_range` on `u64`), no hash-map iteration and no
//! clock, so the same flags give byte-identical output on every machine.
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
//! All values are valid per SPEC.md §4 (short ASCII or Latin emails with one `@`; phones of
//! 10–15 characters from digits, space and `+ - ( ) .`). Requests then use *variants* that
//! normalize to the same value: Title-Case or UPPER-CASE emails (only when the service's
//! lowercasing gives back the stored value, checked with `idrecon::contact::Email`), surrounding
//! spaces, tabs or newlines, and all-digit phones without a leading zero sent as JSON integers.
//! Requests that carry only one field sometimes carry the other as `null`, `""` or `"   "`.
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
//! `linkedId` is its primary, and distinct identities share no email or phone (SPEC.md §3).
//! The preload depends only on `--seed` and `--preload-contacts` (its own random stream), so
//! the CSV written by one run matches the requests of another run with other `--events`.
//! `--preload-out PATH` writes it as an import CSV (SPEC.md §7): header
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
//! Hidden checking flags, all built on a small reference model of SPEC.md §3 (hash maps from
//! normalized value to contact id, union-find whose root is the identity's primary):
//!
//! - `--stats` replays the generated events (after the in-memory preload) through the model
//!   and prints generator and model counts to stderr; the events still go to `--out`.
//! - `--replay FILE [--import CSV]` loads an import CSV into the model, replays a JSONL file of
//!   request bodies and writes the model's answers (default response key) to `--out`.
//! - `--emit-spec DIR` writes `spec-requests.jsonl`, `spec-rows.csv` and `spec-expected.jsonl`
//!   (SPEC.md §5), failing if the model's answers differ from the hand-transcribed table.
//!
//! # Regenerating the committed files (from the crate root)
//!
//! ```text
//! export CARGO_TARGET_DIR=/work/scratch/target   # optional
//! cargo run --release --example generate -- --emit-spec data
//!     # → data/spec-requests.jsonl, data/spec-expected.jsonl, data/spec-rows.csv
//! cargo run --release --example generate -- --workload sample --events 100000 --seed 42 \
//!     --out data/checkout-sample.jsonl
//!     # → data/checkout-sample.jsonl
//! cargo run --release --example generate -- --workload sample --events 100000 --seed 42 \
//!     --stats --out /dev/null
//!     # → the expected figures in data/README.md
//! ```
//!
//! Benchmark inputs (not committed), e.g.:
//!
//! ```text
//! cargo run --release --example generate -- --workload checkout-mix --events 1000000 \
//!     --preload-contacts 1000000 --preload-out /tmp/preload.csv --out /tmp/mix.jsonl
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use idrecon::contact::{Email, Phone, Timestamp};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

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
    /// Replay the generated events through the reference model; counts go to stderr.
    #[arg(long, hide = true)]
    stats: bool,
    /// Replay a JSONL file of request bodies through the reference model; answers to --out.
    #[arg(long, hide = true)]
    replay: Option<PathBuf>,
    /// With --replay: load this import CSV into the reference model first.
    #[arg(long, hide = true, requires = "replay")]
    import: Option<PathBuf>,
    /// Write the SPEC.md §5 files into this directory, checked against the reference model.
    #[arg(long, hide = true)]
    emit_spec: Option<PathBuf>,
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
/// Random stream of the preload; independent of the events.
const PRELOAD_STREAM: u64 = 1;
/// Random stream of the events.
const EVENTS_STREAM: u64 = 2;
/// `2024-01-01T00:00:00.000Z` in milliseconds since the epoch.
const PRELOAD_EPOCH_MS: i64 = 1_704_067_200_000;
const DAY_MS: u64 = 86_400_000;

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
    if let Some(dir) = &args.emit_spec {
        return emit_spec(dir);
    }
    if let Some(requests) = &args.replay {
        let mut out = open_out(args.out.as_deref())?;
        return replay(requests, args.import.as_deref(), &mut out);
    }
    let mut out = open_out(args.out.as_deref())?;
    let mut model = args.stats.then(|| Model::new(false));
    let mut st = GenStats::default();
    let mut g = Gen::new(args.seed, EVENTS_STREAM);
    let mut line = String::with_capacity(256);
    let mut customers = 0;
    match args.workload {
        Workload::Sample => {
            customers = args.customers.unwrap_or((args.events / 4).max(1));
            let mut w = Sample::new(customers, args.events);
            for i in 0..args.events {
                let req = w.next(i, &mut g, &mut st);
                emit(&req, &mut line, &mut out, model.as_mut())?;
            }
        }
        workload => {
            let n = args.preload_contacts.unwrap_or(DEFAULT_PRELOAD_CONTACTS);
            let pre = if workload != Workload::New || args.preload_out.is_some() {
                let mut csv = match &args.preload_out {
                    Some(p) => Some(BufWriter::with_capacity(
                        1 << 16,
                        File::create(p).map_err(|e| annotate(e, p))?,
                    )),
                    None => None,
                };
                let pre = Preload::build(args.seed, n, csv.as_mut().map(|w| w as &mut dyn Write))?;
                if let Some(mut w) = csv {
                    w.flush()?;
                }
                Some(pre)
            } else {
                None
            };
            if let (Some(m), Some(p)) = (model.as_mut(), pre.as_ref()) {
                m.load_preload(p);
            }
            let mut w = Mix::new(workload, pre, n);
            for _ in 0..args.events {
                let req = w.next(&mut g, &mut st);
                emit(&req, &mut line, &mut out, model.as_mut())?;
            }
        }
    }
    out.flush()?;
    if let Some(m) = &model {
        let mut report = String::new();
        st.report(&mut report, args, customers);
        m.report(&mut report);
        eprint!("{report}");
    }
    Ok(())
}

fn emit(
    req: &Request,
    line: &mut String,
    out: &mut dyn Write,
    model: Option<&mut Model>,
) -> io::Result<()> {
    line.clear();
    req.render(line);
    if let Some(m) = model {
        // Rejections are counted by the model and reported; a correct sample has none.
        let _ = m.identify(line);
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/// A seeded ChaCha8 stream with integer-only helpers (portable across platforms: no `usize`
/// ranges, no floating point).
struct Gen {
    rng: ChaCha8Rng,
}

impl Gen {
    fn new(seed: u64, stream: u64) -> Gen {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Gen { rng }
    }

    /// Uniform in `0..n` (0 when `n` ≤ 1, without drawing).
    fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            0
        } else {
            self.rng.random_range(0..n)
        }
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn weighted(&mut self, weights: &[u64]) -> usize {
        let total = weights.iter().sum();
        pick_weighted(self.below(total), weights)
    }
}

/// The index whose weight interval contains `x` (`x < sum(weights)`).
fn pick_weighted(mut x: u64, weights: &[u64]) -> usize {
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// SplitMix64 finalizer: a fixed bijective hash, used to render values from serials.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

#[rustfmt::skip]
const FIRST: &[&str] = &[
    "james", "mary", "john", "patricia", "robert", "jennifer", "michael", "linda", "david",
    "elizabeth", "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas", "sarah",
    "carlos", "maria", "wei", "fatima", "aarav", "priya", "olga", "kenji", "amara", "liam", "noah",
    "emma", "olivia", "ava", "lucas", "sofia", "mateo", "yuki", "ahmed", "chloe", "marty",
    "lorraine", "george", "emmett", "dave", "nadia", "zoë", "josé", "søren", "björn", "renée",
];

#[rustfmt::skip]
const LAST: &[&str] = &[
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez",
    "martinez", "hernandez", "lopez", "gonzalez", "wilson", "anderson", "taylor", "moore",
    "jackson", "martin", "lee", "perez", "thompson", "white", "harris", "sanchez", "clark",
    "ramirez", "lewis", "robinson", "walker", "young", "allen", "king", "wright", "scott",
    "nguyen", "kim", "patel", "singh", "chen", "wang", "mcfly", "tannen", "baines", "strickland",
    "müller", "østergaard",
];

const DOMAINS: &[(&str, u64)] = &[
    ("gmail.com", 300),
    ("yahoo.com", 90),
    ("outlook.com", 80),
    ("hotmail.com", 70),
    ("icloud.com", 70),
    ("proton.me", 30),
    ("aol.com", 20),
    ("comcast.net", 30),
    ("gmx.de", 30),
    ("web.de", 20),
    ("orange.fr", 20),
    ("yandex.ru", 20),
    ("qq.com", 30),
    ("rediffmail.com", 20),
    ("btinternet.com", 10),
    ("hillvalley.edu", 20),
    ("fluxkart.example", 10),
];

/// The canonical (normalized) email with serial `serial` of the person `person`.
///
/// The local part always ends in the decimal serial after a non-digit, so distinct serials give
/// distinct addresses whatever the style or name.
fn email_text(serial: u64, person: u64) -> String {
    let p = mix64(person ^ 0x0050_4552_534F_4E00);
    let h = mix64(serial ^ 0x0045_4D41_494C_0000);
    let first = FIRST[(p % FIRST.len() as u64) as usize];
    let last = LAST[((p >> 24) % LAST.len() as u64) as usize];
    let initial = first.chars().next().unwrap_or('x');
    let domain_weights: Vec<u64> = DOMAINS.iter().map(|d| d.1).collect();
    let total: u64 = domain_weights.iter().sum();
    let domain = DOMAINS[pick_weighted((h >> 32) % total, &domain_weights)].0;
    match h % 100 {
        0..=29 => format!("{first}.{last}{serial}@{domain}"),
        30..=44 => format!("{first}{last}{serial}@{domain}"),
        45..=59 => format!("{initial}{last}{serial}@{domain}"),
        60..=71 => format!("{first}_{last}{serial}@{domain}"),
        72..=81 => format!("{last}.{first}{serial}@{domain}"),
        82..=91 => format!("{first}{serial}@{domain}"),
        _ => format!("{first}.{last}+shop{serial}@{domain}"),
    }
}

/// Phone serials must stay below this (the scramble is a bijection of `0..PHONE_SPACE`).
const PHONE_SPACE: u64 = 1_000_000_000;

/// The canonical phone number with serial `serial`, and its value when it may be sent as a JSON
/// integer (all digits, no leading zero).
fn phone_text(serial: u64) -> (String, Option<u64>) {
    // 387 420 489 = 3^18 is coprime to 10^9, so this is a bijection of 0..10^9.
    let core = ((serial % PHONE_SPACE) * 387_420_489 + 123_456_789) % PHONE_SPACE;
    let h = mix64(serial ^ 0x0050_484F_4E45_0000);
    let core = format!("{core:09}");
    let ten = format!("{}{core}", 2 + h % 8);
    let (a, b, c) = (&ten[0..3], &ten[3..6], &ten[6..10]);
    let style = pick_weighted((h >> 8) % 1000, &[300, 120, 120, 80, 100, 80, 100, 100]);
    let text = match style {
        0 => ten.clone(),
        1 => format!("+1 {a}-{b}-{c}"),
        2 => format!("({a}) {b}-{c}"),
        3 => format!("{a}.{b}.{c}"),
        4 => format!("+1{ten}"),
        5 => format!("+44 7{} {}", &core[0..3], &core[3..9]),
        6 => format!("07{core}"),
        _ => format!("+91 {}{} {}", 6 + (h >> 40) % 4, &core[0..4], &core[4..9]),
    };
    let int = if style == 0 { ten.parse().ok() } else { None };
    (text, int)
}

/// One field of a request body.
enum Field {
    /// The key is left out.
    Omit,
    /// `null`.
    Null,
    /// A JSON string.
    Text(String),
    /// A JSON integer (phones only).
    Int(u64),
}

/// One `/identify` request body.
struct Request {
    email: Field,
    phone: Field,
}

impl Request {
    /// Appends the body as compact JSON (keys `email`, `phoneNumber` in that order).
    fn render(&self, out: &mut String) {
        out.push('{');
        let mut first = true;
        for (key, field) in [("email", &self.email), ("phoneNumber", &self.phone)] {
            if matches!(field, Field::Omit) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            push_json_str(out, key);
            out.push(':');
            match field {
                Field::Omit => {}
                Field::Null => out.push_str("null"),
                Field::Text(s) => push_json_str(out, s),
                Field::Int(n) => {
                    let _ = write!(out, "{n}");
                }
            }
        }
        out.push('}');
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Counts of what the generator meant to do (the model counts what it did).
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

/// Surrounding white space that normalization trims.
const PADS: &[(&str, &str)] = &[
    (" ", ""),
    ("", " "),
    ("  ", "  "),
    ("\t", ""),
    ("", "\n"),
    (" ", "\t"),
];

fn pad(g: &mut Gen, text: &str) -> String {
    let (before, after) = PADS[g.index(PADS.len())];
    format!("{before}{text}{after}")
}

fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut up = true;
    for ch in s.chars() {
        if up && ch.is_alphabetic() {
            out.extend(ch.to_uppercase());
        } else {
            out.push(ch);
        }
        up = matches!(ch, '.' | '_' | '-' | '+' | '@');
    }
    out
}

/// The email field for the canonical address `canon`, maybe in a variant that normalizes back.
fn email_field(g: &mut Gen, st: &mut GenStats, canon: &str) -> Field {
    let mut text = match g.weighted(&[930, 40, 30]) {
        0 => canon.to_owned(),
        1 => title_case(canon),
        _ => canon.to_uppercase(),
    };
    if text != canon {
        let same = Email::parse(&text)
            .ok()
            .flatten()
            .is_some_and(|e| e.as_str() == canon);
        if same {
            st.case_variants += 1;
        } else {
            text = canon.to_owned();
        }
    }
    if g.chance(50) {
        text = pad(g, &text);
        st.space_variants += 1;
    }
    Field::Text(text)
}

/// The phone field for serial `serial`: maybe a JSON integer, maybe padded.
fn phone_field(g: &mut Gen, st: &mut GenStats, serial: u64) -> Field {
    let (text, int) = phone_text(serial);
    if let Some(n) = int
        && g.chance(300)
    {
        st.int_phones += 1;
        return Field::Int(n);
    }
    if g.chance(40) {
        st.space_variants += 1;
        return Field::Text(pad(g, &text));
    }
    Field::Text(text)
}

/// The field a single-value request leaves out: usually omitted, sometimes `null`, `""` or
/// `"   "` (all normalize to absent).
fn absent_field(g: &mut Gen, st: &mut GenStats) -> Field {
    match g.weighted(&[895, 70, 25, 10]) {
        0 => Field::Omit,
        1 => {
            st.nulls += 1;
            Field::Null
        }
        2 => {
            st.empties += 1;
            Field::Text(String::new())
        }
        _ => {
            st.blanks += 1;
            Field::Text("   ".to_owned())
        }
    }
}

/// Builds requests from canonical values, applying variants.
fn request_both(g: &mut Gen, st: &mut GenStats, email: &str, phone: u64) -> Request {
    Request {
        email: email_field(g, st, email),
        phone: phone_field(g, st, phone),
    }
}

fn request_email(g: &mut Gen, st: &mut GenStats, email: &str) -> Request {
    Request {
        email: email_field(g, st, email),
        phone: absent_field(g, st),
    }
}

fn request_phone(g: &mut Gen, st: &mut GenStats, phone: u64) -> Request {
    Request {
        email: absent_field(g, st),
        phone: phone_field(g, st, phone),
    }
}

// ---------------------------------------------------------------------------------------------
// Workload `sample`
// ---------------------------------------------------------------------------------------------

/// One value a customer has used, and the persona (group of values the service has linked, as
/// far as this customer's own requests go) it belongs to.
#[derive(Clone, Copy, Default)]
struct Val {
    serial: u32,
    persona: u8,
}

#[derive(Clone, Default)]
struct Customer {
    emails: [Val; 4],
    n_emails: u8,
    phones: [Val; 3],
    n_phones: u8,
    target_emails: u8,
    target_phones: u8,
    next_persona: u8,
    in_split: bool,
}

impl Customer {
    fn emails(&self) -> &[Val] {
        &self.emails[..self.n_emails as usize]
    }

    fn phones(&self) -> &[Val] {
        &self.phones[..self.n_phones as usize]
    }

    fn push_email(&mut self, v: Val) {
        self.emails[self.n_emails as usize] = v;
        self.n_emails += 1;
    }

    fn push_phone(&mut self, v: Val) {
        self.phones[self.n_phones as usize] = v;
        self.n_phones += 1;
    }

    fn personas(&self) -> u32 {
        let mut mask = 0u32;
        for v in self.emails().iter().chain(self.phones()) {
            mask |= 1 << v.persona;
        }
        mask.count_ones()
    }

    fn relabel(&mut self, from: u8, to: u8) {
        let n_e = self.n_emails as usize;
        let n_p = self.n_phones as usize;
        for v in self.emails[..n_e].iter_mut().chain(&mut self.phones[..n_p]) {
            if v.persona == from {
                v.persona = to;
            }
        }
    }
}

struct Sample {
    target: u64,
    events: u64,
    customers: Vec<Customer>,
    /// Customers with two or more personas (candidates for a late link).
    split: Vec<u32>,
    next_email: u64,
    next_phone: u64,
}

impl Sample {
    fn new(target: u64, events: u64) -> Sample {
        Sample {
            target,
            events,
            customers: Vec::new(),
            split: Vec::new(),
            next_email: 0,
            next_phone: 0,
        }
    }

    fn fresh_email(&mut self) -> u32 {
        self.next_email += 1;
        self.next_email as u32
    }

    fn fresh_phone(&mut self) -> u32 {
        self.next_phone += 1;
        self.next_phone as u32
    }

    fn email(idx: usize, serial: u32) -> String {
        email_text(u64::from(serial), idx as u64 | 1 << 40)
    }

    fn next(&mut self, i: u64, g: &mut Gen, st: &mut GenStats) -> Request {
        let introduced = self.customers.len() as u64;
        let remaining = self.target.saturating_sub(introduced);
        // On schedule (exactly `target` customers by the end), plus a warm-up that makes a
        // young shop's events mostly first purchases.
        if remaining > 0 && (g.below(self.events - i) < remaining || g.below(introduced + 16) < 16)
        {
            return self.new_customer(g, st);
        }
        if !self.split.is_empty() && g.chance(15) {
            return self.late_link(g, st);
        }
        let n = self.customers.len() as u64;
        let idx = g.below(n).min(g.below(n)) as usize;
        self.repeat(idx, g, st)
    }

    fn new_customer(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        st.new_customers += 1;
        let idx = self.customers.len();
        let mut c = Customer {
            target_emails: g.weighted(&[550, 250, 130, 70]) as u8 + 1,
            target_phones: g.weighted(&[700, 220, 80]) as u8 + 1,
            next_persona: 1,
            ..Customer::default()
        };
        if idx > 0 && g.chance(60) {
            let other = &self.customers[g.index(idx)];
            if other.n_phones > 0 {
                let shared = other.phones()[g.index(other.phones().len())].serial;
                let e = self.fresh_email();
                c.push_email(Val {
                    serial: e,
                    persona: 0,
                });
                c.push_phone(Val {
                    serial: shared,
                    persona: 0,
                });
                self.customers.push(c);
                st.family_joins += 1;
                return request_both(g, st, &Self::email(idx, e), u64::from(shared));
            }
        }
        let shape = g.weighted(&[850, 100, 50]);
        let e = (shape != 2).then(|| self.fresh_email());
        let p = (shape != 1).then(|| self.fresh_phone());
        if let Some(serial) = e {
            c.push_email(Val { serial, persona: 0 });
        }
        if let Some(serial) = p {
            c.push_phone(Val { serial, persona: 0 });
        }
        self.customers.push(c);
        match (e, p) {
            (Some(e), Some(p)) => request_both(g, st, &Self::email(idx, e), u64::from(p)),
            (Some(e), None) => request_email(g, st, &Self::email(idx, e)),
            (_, p) => request_phone(g, st, u64::from(p.unwrap_or(0))),
        }
    }

    fn repeat(&mut self, idx: usize, g: &mut Gen, st: &mut GenStats) -> Request {
        let c = &self.customers[idx];
        let under_e = c.n_emails < c.target_emails;
        let under_p = c.n_phones < c.target_phones;
        if (under_e || under_p) && g.chance(250) {
            let kind_email = if under_e && under_p {
                g.chance(600)
            } else {
                under_e
            };
            return self.acquire(idx, kind_email, g, st);
        }
        self.plain(idx, g, st)
    }

    /// The customer starts using a value they had not used before.
    fn acquire(&mut self, idx: usize, kind_email: bool, g: &mut Gen, st: &mut GenStats) -> Request {
        let serial = if kind_email {
            self.fresh_email()
        } else {
            self.fresh_phone()
        };
        let c = &mut self.customers[idx];
        let others = if kind_email { c.phones() } else { c.emails() };
        if !others.is_empty() && g.chance(850) {
            let other = others[g.index(others.len())];
            let v = Val {
                serial,
                persona: other.persona,
            };
            st.acquired_linked += 1;
            if kind_email {
                c.push_email(v);
                request_both(g, st, &Self::email(idx, serial), u64::from(other.serial))
            } else {
                c.push_phone(v);
                request_both(g, st, &Self::email(idx, other.serial), u64::from(serial))
            }
        } else {
            let v = Val {
                serial,
                persona: c.next_persona,
            };
            c.next_persona += 1;
            if kind_email {
                c.push_email(v);
            } else {
                c.push_phone(v);
            }
            if c.personas() >= 2 && !c.in_split {
                c.in_split = true;
                self.split.push(idx as u32);
            }
            st.acquired_alone += 1;
            if kind_email {
                request_email(g, st, &Self::email(idx, serial))
            } else {
                request_phone(g, st, u64::from(serial))
            }
        }
    }

    /// A repeat purchase with values of one persona.
    fn plain(&mut self, idx: usize, g: &mut Gen, st: &mut GenStats) -> Request {
        st.repeats += 1;
        let c = &self.customers[idx];
        let all = c.n_emails as usize + c.n_phones as usize;
        let k = g.index(all);
        let persona = if k < c.n_emails as usize {
            c.emails()[k].persona
        } else {
            c.phones()[k - c.n_emails as usize].persona
        };
        let es: Vec<u32> = c
            .emails()
            .iter()
            .filter(|v| v.persona == persona)
            .map(|v| v.serial)
            .collect();
        let ps: Vec<u32> = c
            .phones()
            .iter()
            .filter(|v| v.persona == persona)
            .map(|v| v.serial)
            .collect();
        let shape = match (es.is_empty(), ps.is_empty()) {
            (false, false) => g.weighted(&[700, 150, 150]),
            (false, true) => 1,
            _ => 2,
        };
        let e = (shape != 2).then(|| es[g.index(es.len())]);
        let p = (shape != 1).then(|| ps[g.index(ps.len())]);
        match (e, p) {
            (Some(e), Some(p)) => request_both(g, st, &Self::email(idx, e), u64::from(p)),
            (Some(e), None) => request_email(g, st, &Self::email(idx, e)),
            (_, p) => request_phone(g, st, u64::from(p.unwrap_or(0))),
        }
    }

    /// The email of one persona with the phone of another: the service merges them.
    fn late_link(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        let j = g.index(self.split.len());
        let idx = self.split[j] as usize;
        let c = &mut self.customers[idx];
        let mut pairs = Vec::new();
        for (ei, e) in c.emails().iter().enumerate() {
            for (pi, p) in c.phones().iter().enumerate() {
                if e.persona != p.persona {
                    pairs.push((ei, pi));
                }
            }
        }
        if pairs.is_empty() {
            return self.plain(idx, g, st);
        }
        let (ei, pi) = pairs[g.index(pairs.len())];
        let (e, p) = (c.emails()[ei], c.phones()[pi]);
        c.relabel(p.persona, e.persona);
        if c.personas() < 2 {
            c.in_split = false;
            self.split.swap_remove(j);
        }
        st.late_links += 1;
        request_both(g, st, &Self::email(idx, e.serial), u64::from(p.serial))
    }
}

// ---------------------------------------------------------------------------------------------
// Preload and the workloads that use it
// ---------------------------------------------------------------------------------------------

const NONE: u32 = u32::MAX;

/// The preloaded Contact rows, compactly: row `r` has id `r + 1`; email/phone are serials
/// (0 = null); rows of one identity are chained through `prev`.
struct Preload {
    email: Vec<u32>,
    phone: Vec<u32>,
    ident: Vec<u32>,
    prev: Vec<u32>,
    /// Per identity: its primary row and its newest row.
    primary: Vec<u32>,
    last: Vec<u32>,
}

impl Preload {
    fn person(ident: u32) -> u64 {
        u64::from(ident) | 1 << 41
    }

    fn email_of(ident: u32, serial: u32) -> String {
        email_text(u64::from(serial), Self::person(ident))
    }

    fn build(seed: u64, n: u64, mut csv: Option<&mut dyn Write>) -> io::Result<Preload> {
        let mut g = Gen::new(seed, PRELOAD_STREAM);
        let cap = n as usize;
        let mut p = Preload {
            email: Vec::with_capacity(cap),
            phone: Vec::with_capacity(cap),
            ident: Vec::with_capacity(cap),
            prev: Vec::with_capacity(cap),
            primary: Vec::new(),
            last: Vec::new(),
        };
        if let Some(w) = csv.as_mut() {
            w.write_all(
                b"id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt\n",
            )?;
        }
        let (mut next_e, mut next_p) = (0u32, 0u32);
        let mut fresh_e = || {
            next_e += 1;
            next_e
        };
        let mut fresh_p = || {
            next_p += 1;
            next_p
        };
        let (mut es, mut ps) = (Vec::new(), Vec::new());
        let mut t = PRELOAD_EPOCH_MS;
        let mut line = String::with_capacity(256);
        for r in 0..n as u32 {
            t += 1 + g.below(10_000) as i64;
            let mut updated = t;
            let new_ident = p.primary.is_empty() || g.chance(650);
            let (ident, e, ph) = if new_ident {
                let ident = p.primary.len() as u32;
                p.primary.push(r);
                p.last.push(NONE);
                match g.weighted(&[940, 40, 20]) {
                    0 => (ident, fresh_e(), fresh_p()),
                    1 => (ident, fresh_e(), 0),
                    _ => (ident, 0, fresh_p()),
                }
            } else {
                let ident = g.index(p.primary.len()) as u32;
                p.values(ident, &mut es, &mut ps);
                match g.weighted(&[500, 400, 100]) {
                    0 if !ps.is_empty() => (ident, fresh_e(), ps[g.index(ps.len())]),
                    0 | 1 if !es.is_empty() => (ident, es[g.index(es.len())], fresh_p()),
                    0 | 1 => (ident, fresh_e(), ps[g.index(ps.len())]),
                    _ => {
                        updated = t + 1 + g.below(30 * DAY_MS) as i64;
                        match g.weighted(&[800, 100, 100]) {
                            0 => (ident, fresh_e(), fresh_p()),
                            1 => (ident, fresh_e(), 0),
                            _ => (ident, 0, fresh_p()),
                        }
                    }
                }
            };
            p.email.push(e);
            p.phone.push(ph);
            p.ident.push(ident);
            p.prev.push(p.last[ident as usize]);
            p.last[ident as usize] = r;
            if let Some(w) = csv.as_mut() {
                line.clear();
                let _ = write!(line, "{},", r + 1);
                if ph != 0 {
                    push_csv(&mut line, &phone_text(u64::from(ph)).0);
                }
                line.push(',');
                if e != 0 {
                    push_csv(&mut line, &Self::email_of(ident, e));
                }
                let primary = p.primary[ident as usize];
                let created = Timestamp(t);
                if primary == r {
                    let _ = write!(line, ",,primary,{created},");
                } else {
                    let _ = write!(line, ",{},secondary,{created},", primary + 1);
                }
                let _ = writeln!(line, "{},", Timestamp(updated));
                w.write_all(line.as_bytes())?;
            }
        }
        Ok(p)
    }

    /// The email and phone serials of identity `ident` (with repeats).
    fn values(&self, ident: u32, es: &mut Vec<u32>, ps: &mut Vec<u32>) {
        es.clear();
        ps.clear();
        let mut r = self.last[ident as usize];
        while r != NONE {
            let (e, p) = (self.email[r as usize], self.phone[r as usize]);
            if e != 0 {
                es.push(e);
            }
            if p != 0 {
                ps.push(p);
            }
            r = self.prev[r as usize];
        }
    }
}

/// A CSV field as psql writes it: quoted only when it must be.
fn push_csv(out: &mut String, s: &str) {
    if s.is_empty() || s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Workloads `returning`, `checkout-mix` and `new`.
struct Mix {
    workload: Workload,
    pre: Option<Preload>,
    /// Union-find over preload identities linked by this workload's requests.
    uf: Vec<u32>,
    next_email: u64,
    next_phone: u64,
    es: Vec<u32>,
    ps: Vec<u32>,
}

impl Mix {
    fn new(workload: Workload, pre: Option<Preload>, base: u64) -> Mix {
        let idents = pre.as_ref().map_or(0, |p| p.primary.len());
        Mix {
            workload,
            pre,
            uf: (0..idents as u32).collect(),
            next_email: base,
            next_phone: base,
            es: Vec::new(),
            ps: Vec::new(),
        }
    }

    fn next(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        match self.workload {
            Workload::Returning => self.returning(g, st),
            Workload::CheckoutMix => match g.weighted(&[700, 200, 80, 20]) {
                0 => self.returning(g, st),
                1 => self.new_customer(g, st),
                2 => self.new_value(g, st),
                _ => self.link(g, st),
            },
            Workload::New | Workload::Sample => self.new_customer(g, st),
        }
    }

    fn new_customer(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        st.new_customers += 1;
        self.next_email += 1;
        self.next_phone += 1;
        let email = email_text(self.next_email, self.next_email | 1 << 42);
        request_both(g, st, &email, self.next_phone)
    }

    /// A random preload identity (weighted by its row count) with its values in `es`/`ps`.
    fn pick_ident(&mut self, g: &mut Gen) -> Option<u32> {
        let pre = self.pre.as_ref()?;
        let ident = pre.ident[g.index(pre.ident.len())];
        pre.values(ident, &mut self.es, &mut self.ps);
        Some(ident)
    }

    fn returning(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        let Some(ident) = self.pick_ident(g) else {
            return self.new_customer(g, st);
        };
        st.returning += 1;
        let (es, ps) = (&self.es, &self.ps);
        let shape = match (es.is_empty(), ps.is_empty()) {
            (false, false) => g.weighted(&[700, 150, 150]),
            (false, true) => 1,
            _ => 2,
        };
        let e = (shape != 2).then(|| es[g.index(es.len())]);
        let p = (shape != 1).then(|| ps[g.index(ps.len())]);
        match (e, p) {
            (Some(e), Some(p)) => request_both(g, st, &Preload::email_of(ident, e), u64::from(p)),
            (Some(e), None) => request_email(g, st, &Preload::email_of(ident, e)),
            (_, p) => request_phone(g, st, u64::from(p.unwrap_or(0))),
        }
    }

    fn new_value(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        let Some(ident) = self.pick_ident(g) else {
            return self.new_customer(g, st);
        };
        st.new_values += 1;
        let new_email = match (self.es.is_empty(), self.ps.is_empty()) {
            (false, false) => g.chance(600),
            (true, _) => true,
            (false, true) => false,
        };
        if new_email {
            self.next_email += 1;
            let p = self.ps[g.index(self.ps.len())];
            let e = email_text(self.next_email, Preload::person(ident));
            request_both(g, st, &e, u64::from(p))
        } else {
            self.next_phone += 1;
            let e = self.es[g.index(self.es.len())];
            request_both(g, st, &Preload::email_of(ident, e), self.next_phone)
        }
    }

    /// The email of one preload identity with the phone of another not yet linked to it.
    fn link(&mut self, g: &mut Gen, st: &mut GenStats) -> Request {
        let Some(pre) = self.pre.as_ref() else {
            return self.new_customer(g, st);
        };
        let (mut es, mut ps) = (Vec::new(), Vec::new());
        let (mut es2, mut ps2) = (Vec::new(), Vec::new());
        for _ in 0..1000 {
            let a = pre.ident[g.index(pre.ident.len())];
            let b = pre.ident[g.index(pre.ident.len())];
            let (ra, rb) = (uf_find(&mut self.uf, a), uf_find(&mut self.uf, b));
            if ra == rb {
                continue;
            }
            pre.values(a, &mut es, &mut ps);
            pre.values(b, &mut es2, &mut ps2);
            let pair = if !es.is_empty() && !ps2.is_empty() {
                Some((a, es[g.index(es.len())], ps2[g.index(ps2.len())]))
            } else if !es2.is_empty() && !ps.is_empty() {
                Some((b, es2[g.index(es2.len())], ps[g.index(ps.len())]))
            } else {
                None
            };
            if let Some((owner, e, p)) = pair {
                self.uf[ra.max(rb) as usize] = ra.min(rb);
                st.links += 1;
                return request_both(g, st, &Preload::email_of(owner, e), u64::from(p));
            }
        }
        st.link_fallbacks += 1;
        self.returning(g, st)
    }
}

/// Union-find root of `x` with path halving.
fn uf_find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let grand = parent[parent[x as usize] as usize];
        parent[x as usize] = grand;
        x = grand;
    }
    x
}

// ---------------------------------------------------------------------------------------------
// Reference model of SPEC.md §3
// ---------------------------------------------------------------------------------------------

/// A deliberately simple reference implementation of `/identify` (SPEC.md §3), for checking the
/// generator and, later, the service. Contacts are ids; every identity is a union-find tree
/// whose root is its primary. Age order is taken to be id order (true for a fresh service, the
/// preload, and any import whose `createdAt` does not decrease with id, which is checked).
/// Because every contact with a value is in the identity of the first contact that had it, a
/// value → first-contact map answers "which identity has this value".
struct Model {
    answers: bool,
    parent: Vec<u32>,
    size: Vec<u32>,
    members: Vec<Vec<u32>>,
    email_of: Vec<Option<Box<str>>>,
    phone_of: Vec<Option<Box<str>>>,
    by_email: HashMap<Box<str>, u32>,
    by_phone: HashMap<Box<str>, u32>,
    next_id: u32,
    c: ModelCounts,
}

#[derive(Default)]
struct ModelCounts {
    preload_rows: u64,
    preload_identities: u64,
    preload_inconsistent: u64,
    preload_value_joins: u64,
    requests: u64,
    rejected: u64,
    email_only: u64,
    phone_only: u64,
    both: u64,
    new_primaries: u64,
    new_secondaries: u64,
    merge_requests: u64,
    demoted: u64,
    pure_reads: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AnswerContact<'a> {
    primary_contact_id: u32,
    emails: Vec<&'a str>,
    phone_numbers: Vec<&'a str>,
    secondary_contact_ids: Vec<u32>,
}

#[derive(Serialize)]
struct Answer<'a> {
    contact: AnswerContact<'a>,
}

impl Model {
    fn new(answers: bool) -> Model {
        Model {
            answers,
            parent: vec![0],
            size: vec![0],
            members: vec![Vec::new()],
            email_of: vec![None],
            phone_of: vec![None],
            by_email: HashMap::new(),
            by_phone: HashMap::new(),
            next_id: 1,
            c: ModelCounts::default(),
        }
    }

    fn find(&mut self, x: u32) -> u32 {
        uf_find(&mut self.parent, x)
    }

    /// Joins the identities of `a` and `b`; the smaller (older) root stays primary.
    fn union(&mut self, a: u32, b: u32) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        let (w, l) = (ra.min(rb), ra.max(rb));
        self.parent[l as usize] = w;
        self.size[w as usize] += self.size[l as usize];
        if self.answers {
            let moved = std::mem::take(&mut self.members[l as usize]);
            self.members[w as usize].extend(moved);
        }
        true
    }

    /// Adds contact `id` as an identity of its own.
    fn add(&mut self, id: u32, email: Option<&str>, phone: Option<&str>) {
        let i = id as usize;
        if self.parent.len() <= i {
            self.parent.resize(i + 1, 0);
            self.size.resize(i + 1, 0);
            if self.answers {
                self.members.resize(i + 1, Vec::new());
                self.email_of.resize(i + 1, None);
                self.phone_of.resize(i + 1, None);
            }
        }
        self.parent[i] = id;
        self.size[i] = 1;
        if self.answers {
            self.members[i] = vec![id];
            self.email_of[i] = email.map(Into::into);
            self.phone_of[i] = phone.map(Into::into);
        }
        self.next_id = self.next_id.max(id + 1);
    }

    /// Registers `id`'s values; returns the contacts that already had them (other identities
    /// sharing a value are joined by the caller).
    fn index_values(
        &mut self,
        id: u32,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> [Option<u32>; 2] {
        let mut seen = [None, None];
        if let Some(e) = email {
            match self.by_email.get(e) {
                Some(&other) => seen[0] = Some(other),
                None => {
                    self.by_email.insert(e.into(), id);
                }
            }
        }
        if let Some(p) = phone {
            match self.by_phone.get(p) {
                Some(&other) => seen[1] = Some(other),
                None => {
                    self.by_phone.insert(p.into(), id);
                }
            }
        }
        seen
    }

    fn load_preload(&mut self, pre: &Preload) {
        for r in 0..pre.ident.len() {
            let id = r as u32 + 1;
            let ident = pre.ident[r];
            let email = (pre.email[r] != 0).then(|| Preload::email_of(ident, pre.email[r]));
            let phone = (pre.phone[r] != 0).then(|| phone_text(u64::from(pre.phone[r])).0);
            self.add(id, email.as_deref(), phone.as_deref());
            let primary = pre.primary[ident as usize] + 1;
            if primary != id {
                self.union(primary, id);
            }
            for other in self
                .index_values(id, email.as_deref(), phone.as_deref())
                .into_iter()
                .flatten()
            {
                if self.union(other, id) {
                    self.c.preload_inconsistent += 1;
                }
            }
        }
        self.c.preload_rows = pre.ident.len() as u64;
        self.c.preload_identities = pre.primary.len() as u64;
    }

    /// Loads an import CSV (SPEC.md §7) and checks that it is already consistent: every row a
    /// primary (oldest of its identity) or a secondary whose `linkedId` is its primary.
    fn import_csv(&mut self, path: &Path) -> io::Result<()> {
        struct Row {
            line: usize,
            id: u32,
            email: Option<String>,
            phone: Option<String>,
            linked: Option<u32>,
            primary: bool,
            created: Timestamp,
        }
        let bad = |line: usize, what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{line}: {what}", path.display()),
            )
        };
        let mut rdr = csv::Reader::from_path(path).map_err(io::Error::other)?;
        let header = rdr.headers().map_err(io::Error::other)?.clone();
        if !header.iter().eq(idrecon::rows::COLUMNS) {
            return Err(bad(1, "unexpected header"));
        }
        let mut rows = Vec::new();
        for (i, rec) in rdr.records().enumerate() {
            let line = i + 2;
            let rec = rec.map_err(io::Error::other)?;
            let field = |k: usize| rec.get(k).unwrap_or("");
            let id: u32 = field(0).parse().map_err(|_| bad(line, "bad id"))?;
            if id == 0 || id > 200_000_000 {
                return Err(bad(line, "id outside what the model supports"));
            }
            let email = Email::parse(field(2))
                .map_err(|_| bad(line, "invalid email"))?
                .map(|e| e.as_str().to_owned());
            let phone = Phone::parse(field(1))
                .map_err(|_| bad(line, "invalid phone"))?
                .map(|p| p.as_str().to_owned());
            let linked = match field(3) {
                "" => None,
                s => Some(s.parse().map_err(|_| bad(line, "bad linkedId"))?),
            };
            let primary = match field(4) {
                "primary" => true,
                "secondary" => false,
                _ => return Err(bad(line, "bad linkPrecedence")),
            };
            let created = Timestamp::parse(field(5)).map_err(|_| bad(line, "bad createdAt"))?;
            Timestamp::parse(field(6)).map_err(|_| bad(line, "bad updatedAt"))?;
            if !field(7).is_empty() {
                return Err(bad(line, "the model does not support deleted rows"));
            }
            rows.push(Row {
                line,
                id,
                email,
                phone,
                linked,
                primary,
                created,
            });
        }
        rows.sort_by_key(|r| r.id);
        for w in rows.windows(2) {
            if w[0].id == w[1].id {
                return Err(bad(w[1].line, "duplicate id"));
            }
            if w[1].created < w[0].created {
                return Err(bad(
                    w[1].line,
                    "createdAt decreases with id (model needs id order)",
                ));
            }
        }
        for r in &rows {
            self.add(r.id, r.email.as_deref(), r.phone.as_deref());
        }
        for r in &rows {
            if let Some(l) = r.linked {
                if self.parent.get(l as usize).is_none_or(|&p| p == 0) {
                    return Err(bad(r.line, "dangling linkedId"));
                }
                self.union(l, r.id);
            }
        }
        for r in &rows {
            for other in self
                .index_values(r.id, r.email.as_deref(), r.phone.as_deref())
                .into_iter()
                .flatten()
            {
                if self.union(other, r.id) {
                    self.c.preload_value_joins += 1;
                }
            }
        }
        for r in &rows {
            let root = self.find(r.id);
            let ok = if root == r.id {
                r.primary && r.linked.is_none()
            } else {
                !r.primary && r.linked == Some(root)
            };
            if !ok {
                self.c.preload_inconsistent += 1;
            }
        }
        self.c.preload_rows = rows.len() as u64;
        self.c.preload_identities = rows
            .iter()
            .filter(|r| self.parent[r.id as usize] == r.id)
            .count() as u64;
        Ok(())
    }

    /// Applies one request body; returns the identity's primary, or the 400 error code.
    fn identify(&mut self, body: &str) -> Result<u32, &'static str> {
        self.c.requests += 1;
        let parsed = parse_request(body);
        let (email, phone) = match parsed {
            Ok(v) => v,
            Err(code) => {
                self.c.rejected += 1;
                return Err(code);
            }
        };
        let (e, p) = (
            email.as_ref().map(Email::as_str),
            phone.as_ref().map(Phone::as_str),
        );
        match (e, p) {
            (Some(_), Some(_)) => self.c.both += 1,
            (Some(_), None) => self.c.email_only += 1,
            _ => self.c.phone_only += 1,
        }
        let by_e = e.and_then(|e| self.by_email.get(e).copied());
        let by_p = p.and_then(|p| self.by_phone.get(p).copied());
        let re = by_e.map(|c| self.find(c));
        let rp = by_p.map(|c| self.find(c));
        let mut merged = false;
        let root = match (re, rp) {
            (None, None) => None,
            (Some(a), None) | (None, Some(a)) => Some(a),
            (Some(a), Some(b)) if a == b => Some(a),
            (Some(a), Some(b)) => {
                self.union(a, b);
                merged = true;
                self.c.merge_requests += 1;
                self.c.demoted += 1;
                Some(a.min(b))
            }
        };
        let new_info = (e.is_some() && by_e.is_none()) || (p.is_some() && by_p.is_none());
        let Some(root) = root else {
            let id = self.next_id;
            self.add(id, e, p);
            self.index_values(id, e, p);
            self.c.new_primaries += 1;
            return Ok(id);
        };
        if new_info {
            let id = self.next_id;
            self.add(id, e, p);
            self.union(root, id);
            self.index_values(id, e, p);
            self.c.new_secondaries += 1;
        } else if !merged {
            self.c.pure_reads += 1;
        }
        Ok(root)
    }

    /// The `/identify` answer for the identity whose primary is `root` (answers mode only).
    fn answer(&self, root: u32) -> String {
        let mut ids = self.members[root as usize].clone();
        ids.sort_unstable();
        let mut emails: Vec<&str> = Vec::new();
        let mut phones: Vec<&str> = Vec::new();
        // The primary is the smallest id, so its values come first.
        for &id in &ids {
            if let Some(e) = self.email_of[id as usize].as_deref()
                && !emails.contains(&e)
            {
                emails.push(e);
            }
            if let Some(p) = self.phone_of[id as usize].as_deref()
                && !phones.contains(&p)
            {
                phones.push(p);
            }
        }
        let answer = Answer {
            contact: AnswerContact {
                primary_contact_id: root,
                emails,
                phone_numbers: phones,
                secondary_contact_ids: ids[1..].to_vec(),
            },
        };
        serde_json::to_string(&answer).unwrap_or_default()
    }

    fn report(&self, out: &mut String) {
        let mut identities = 0u64;
        let mut contacts = 0u64;
        let mut largest = 0u32;
        for (id, &p) in self.parent.iter().enumerate().skip(1) {
            if p != 0 {
                contacts += 1;
            }
            if p == id as u32 {
                identities += 1;
                largest = largest.max(self.size[id]);
            }
        }
        let c = &self.c;
        let _ = writeln!(out, "# reference model (SPEC.md §3)");
        let mut line = |k: &str, v: u64| {
            let _ = writeln!(out, "{k:<34}{v}");
        };
        if c.preload_rows > 0 {
            line("preload rows", c.preload_rows);
            line("preload identities", c.preload_identities);
            line("preload value joins", c.preload_value_joins);
            line("preload inconsistent rows", c.preload_inconsistent);
        }
        line("requests", c.requests);
        line("rejected (4xx)", c.rejected);
        line("email only", c.email_only);
        line("phone only", c.phone_only);
        line("both", c.both);
        line("new primaries (new identities)", c.new_primaries);
        line("new secondaries", c.new_secondaries);
        line("merge requests", c.merge_requests);
        line("primaries demoted", c.demoted);
        line("pure reads", c.pure_reads);
        line("contacts at end", contacts);
        line("identities at end", identities);
        line("secondaries at end", contacts - identities);
        line("distinct emails", self.by_email.len() as u64);
        line("distinct phones", self.by_phone.len() as u64);
        line("largest identity (contacts)", u64::from(largest));
    }
}

/// Normalizes a request body as SPEC.md §4 says; `Err` is the 400 error code.
fn parse_request(body: &str) -> Result<(Option<Email>, Option<Phone>), &'static str> {
    let value: Value = serde_json::from_str(body).map_err(|_| "invalid_json")?;
    let obj = value.as_object().ok_or("invalid_json")?;
    let email = match obj.get("email") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Email::parse(s).map_err(|e| e.code)?,
        Some(_) => return Err("invalid_email"),
    };
    let phone = match obj.get("phoneNumber") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Phone::parse(s).map_err(|e| e.code)?,
        Some(Value::Number(n)) => Some(Phone::from_u64(n.as_u64().ok_or("invalid_phone_number")?)),
        Some(_) => return Err("invalid_phone_number"),
    };
    if email.is_none() && phone.is_none() {
        return Err("missing_contact");
    }
    Ok((email, phone))
}

fn replay(requests: &Path, import: Option<&Path>, out: &mut dyn Write) -> io::Result<()> {
    let mut m = Model::new(true);
    if let Some(csv) = import {
        m.import_csv(csv)?;
    }
    let file = File::open(requests).map_err(|e| annotate(e, requests))?;
    for line in BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match m.identify(&line) {
            Ok(root) => writeln!(out, "{}", m.answer(root))?,
            Err(code) => writeln!(out, "{{\"error\":{{\"code\":\"{code}\"}}}}")?,
        }
    }
    out.flush()?;
    let mut report = String::new();
    m.report(&mut report);
    eprint!("{report}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SPEC.md §5 files
// ---------------------------------------------------------------------------------------------

/// The worked examples of SPEC.md §5, rows 1, 2, 3 (three requests), 4, 5, 6.
const SPEC_REQUESTS: &str = r#"{"email":"lorraine@hillvalley.edu","phoneNumber":"123456"}
{"email":"mcfly@hillvalley.edu","phoneNumber":"123456"}
{"email":null,"phoneNumber":"123456"}
{"email":"lorraine@hillvalley.edu"}
{"email":"mcfly@hillvalley.edu","phoneNumber":null}
{"email":"george@hillvalley.edu","phoneNumber":"919191"}
{"email":"biffsucks@hillvalley.edu","phoneNumber":"717171"}
{"email":"george@hillvalley.edu","phoneNumber":"717171"}
"#;

/// The answers of SPEC.md §5, transcribed by hand (the model must agree).
const SPEC_EXPECTED: &str = r#"{"contact":{"primaryContactId":1,"emails":["lorraine@hillvalley.edu"],"phoneNumbers":["123456"],"secondaryContactIds":[]}}
{"contact":{"primaryContactId":1,"emails":["lorraine@hillvalley.edu","mcfly@hillvalley.edu"],"phoneNumbers":["123456"],"secondaryContactIds":[2]}}
{"contact":{"primaryContactId":1,"emails":["lorraine@hillvalley.edu","mcfly@hillvalley.edu"],"phoneNumbers":["123456"],"secondaryContactIds":[2]}}
{"contact":{"primaryContactId":1,"emails":["lorraine@hillvalley.edu","mcfly@hillvalley.edu"],"phoneNumbers":["123456"],"secondaryContactIds":[2]}}
{"contact":{"primaryContactId":1,"emails":["lorraine@hillvalley.edu","mcfly@hillvalley.edu"],"phoneNumbers":["123456"],"secondaryContactIds":[2]}}
{"contact":{"primaryContactId":3,"emails":["george@hillvalley.edu"],"phoneNumbers":["919191"],"secondaryContactIds":[]}}
{"contact":{"primaryContactId":4,"emails":["biffsucks@hillvalley.edu"],"phoneNumbers":["717171"],"secondaryContactIds":[]}}
{"contact":{"primaryContactId":3,"emails":["george@hillvalley.edu","biffsucks@hillvalley.edu"],"phoneNumbers":["919191","717171"],"secondaryContactIds":[4]}}
"#;

/// The original task statement's rows, as `psql \copy "Contact" TO … CSV HEADER` writes them:
/// the state just before the request `george + 717171`.
const SPEC_ROWS: &str = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt
1,123456,lorraine@hillvalley.edu,,primary,2023-04-01 00:00:00.374+00,2023-04-01 00:00:00.374+00,
11,919191,george@hillvalley.edu,,primary,2023-04-11 00:00:00.374+00,2023-04-11 00:00:00.374+00,
23,123456,mcfly@hillvalley.edu,1,secondary,2023-04-20 05:30:00.11+00,2023-04-20 05:30:00.11+00,
27,717171,biffsucks@hillvalley.edu,,primary,2023-04-21 05:30:00.11+00,2023-04-21 05:30:00.11+00,
";

/// After importing [`SPEC_ROWS`], `george + 717171` must give this.
const SPEC_ROWS_ANSWER: &str = r#"{"contact":{"primaryContactId":11,"emails":["george@hillvalley.edu","biffsucks@hillvalley.edu"],"phoneNumbers":["919191","717171"],"secondaryContactIds":[27]}}"#;

fn emit_spec(dir: &Path) -> io::Result<()> {
    let mut m = Model::new(true);
    let mut answers = String::new();
    for line in SPEC_REQUESTS.lines() {
        let root = m
            .identify(line)
            .map_err(|code| io::Error::other(format!("spec request rejected: {code}")))?;
        answers.push_str(&m.answer(root));
        answers.push('\n');
    }
    if answers != SPEC_EXPECTED {
        return Err(io::Error::other(format!(
            "reference model disagrees with SPEC.md §5:\n{answers}"
        )));
    }
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| annotate(e, &path))
    };
    write("spec-requests.jsonl", SPEC_REQUESTS)?;
    write("spec-expected.jsonl", &answers)?;
    write("spec-rows.csv", SPEC_ROWS)?;
    let mut m = Model::new(true);
    m.import_csv(&dir.join("spec-rows.csv"))?;
    if m.c.preload_inconsistent != 0 || m.c.preload_value_joins != 0 {
        return Err(io::Error::other("spec-rows.csv is not consistent"));
    }
    let root = m
        .identify(r#"{"email":"george@hillvalley.edu","phoneNumber":"717171"}"#)
        .map_err(|code| io::Error::other(format!("rejected: {code}")))?;
    let got = m.answer(root);
    if got != SPEC_ROWS_ANSWER {
        return Err(io::Error::other(format!(
            "imported spec rows answer differently: {got}"
        )));
    }
    eprintln!(
        "wrote {0}/spec-requests.jsonl, {0}/spec-expected.jsonl, {0}/spec-rows.csv (checked)",
        dir.display()
    );
    Ok(())
}
