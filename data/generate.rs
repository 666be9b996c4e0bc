//! Deterministic generator of realistic FluxKart checkout events for idrecon.
//!
//! Every line it writes is one `POST /identify` request body (docs/behaviour.md §3), e.g.
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
use idrecon::contact::{Email, Timestamp};
use idrecon::rows::COLUMNS;
use petgraph::unionfind::UnionFind;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

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

/// One field of a request body, as serde_json writes it: a string, an integer or `null`.
#[derive(Serialize)]
#[serde(untagged)]
enum Field {
    /// The key is left out (see [`Request`]).
    Omit,
    /// `null`.
    Null,
    /// A JSON string.
    Text(String),
    /// A JSON integer (phones only).
    Int(u64),
}

impl Field {
    fn is_omitted(&self) -> bool {
        matches!(self, Field::Omit)
    }
}

/// One `/identify` request body: keys `email`, `phoneNumber` in that order, each left out when
/// [`Field::Omit`].
#[derive(Serialize)]
struct Request {
    #[serde(skip_serializing_if = "Field::is_omitted")]
    email: Field,
    #[serde(rename = "phoneNumber", skip_serializing_if = "Field::is_omitted")]
    phone: Field,
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

    /// Draws the `n` preload rows from their own random stream, writing each to `csv` (an
    /// import CSV with the header [`COLUMNS`]) when given.
    fn build(seed: u64, n: u64, mut csv: Option<&mut csv::Writer<File>>) -> io::Result<Preload> {
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
            w.write_record(COLUMNS)?;
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
                // NULL is an empty field, as `psql \copy … CSV HEADER` writes it.
                let phone = if ph != 0 {
                    phone_text(u64::from(ph)).0
                } else {
                    String::new()
                };
                let email = if e != 0 {
                    Self::email_of(ident, e)
                } else {
                    String::new()
                };
                let primary = p.primary[ident as usize];
                let (linked_id, precedence) = if primary == r {
                    (String::new(), "primary")
                } else {
                    ((primary + 1).to_string(), "secondary")
                };
                w.write_record([
                    (r + 1).to_string().as_str(),
                    &phone,
                    &email,
                    &linked_id,
                    precedence,
                    &Timestamp(t).to_string(),
                    &Timestamp(updated).to_string(),
                    "",
                ])?;
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

/// Workloads `returning`, `checkout-mix` and `new`.
struct Mix {
    workload: Workload,
    pre: Option<Preload>,
    /// Preload identities linked by this workload's requests.
    linked: UnionFind<u32>,
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
            linked: UnionFind::new(idents),
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
            if self.linked.equiv(a, b) {
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
                self.linked.union(a, b);
                st.links += 1;
                return request_both(g, st, &Preload::email_of(owner, e), u64::from(p));
            }
        }
        st.link_fallbacks += 1;
        self.returning(g, st)
    }
}
