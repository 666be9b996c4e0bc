//! Randomness, values and request bodies: seeded streams with integer-only draws, emails and
//! phone numbers rendered from serial numbers, the variants a request may send them in, and the
//! serde form of an `/identify` body.

use idrecon::contact::Email;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::GenStats;

/// A seeded ChaCha8 stream with integer-only helpers (portable across platforms: no `usize`
/// ranges, no floating point).
pub struct Gen {
    rng: ChaCha8Rng,
}

impl Gen {
    pub fn new(seed: u64, stream: u64) -> Gen {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Gen { rng }
    }

    /// Uniform in `0..n` (0 when `n` ≤ 1, without drawing).
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            0
        } else {
            self.rng.random_range(0..n)
        }
    }

    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total = weights.iter().sum();
        pick_weighted(self.below(total), weights)
    }
}

/// The index whose weight interval contains `x` (`x < sum(weights)`).
pub fn pick_weighted(mut x: u64, weights: &[u64]) -> usize {
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// SplitMix64 finalizer: a fixed bijective hash, used to render values from serials.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[rustfmt::skip]
pub const FIRST: &[&str] = &[
    "james", "mary", "john", "patricia", "robert", "jennifer", "michael", "linda", "david",
    "elizabeth", "william", "barbara", "richard", "susan", "joseph", "jessica", "thomas", "sarah",
    "carlos", "maria", "wei", "fatima", "aarav", "priya", "olga", "kenji", "amara", "liam", "noah",
    "emma", "olivia", "ava", "lucas", "sofia", "mateo", "yuki", "ahmed", "chloe", "marty",
    "lorraine", "george", "emmett", "dave", "nadia", "zoë", "josé", "søren", "björn", "renée",
];

#[rustfmt::skip]
pub const LAST: &[&str] = &[
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez",
    "martinez", "hernandez", "lopez", "gonzalez", "wilson", "anderson", "taylor", "moore",
    "jackson", "martin", "lee", "perez", "thompson", "white", "harris", "sanchez", "clark",
    "ramirez", "lewis", "robinson", "walker", "young", "allen", "king", "wright", "scott",
    "nguyen", "kim", "patel", "singh", "chen", "wang", "mcfly", "tannen", "baines", "strickland",
    "müller", "østergaard",
];

pub const DOMAINS: &[(&str, u64)] = &[
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
pub fn email_text(serial: u64, person: u64) -> String {
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
pub const PHONE_SPACE: u64 = 1_000_000_000;

/// The canonical phone number with serial `serial`, and its value when it may be sent as a JSON
/// integer (all digits, no leading zero).
pub fn phone_text(serial: u64) -> (String, Option<u64>) {
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
pub enum Field {
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
pub struct Request {
    #[serde(skip_serializing_if = "Field::is_omitted")]
    email: Field,
    #[serde(rename = "phoneNumber", skip_serializing_if = "Field::is_omitted")]
    phone: Field,
}

/// Surrounding white space that normalization trims.
pub const PADS: &[(&str, &str)] = &[
    (" ", ""),
    ("", " "),
    ("  ", "  "),
    ("\t", ""),
    ("", "\n"),
    (" ", "\t"),
];

pub fn pad(g: &mut Gen, text: &str) -> String {
    let (before, after) = PADS[g.index(PADS.len())];
    format!("{before}{text}{after}")
}

pub fn title_case(s: &str) -> String {
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
pub fn email_field(g: &mut Gen, st: &mut GenStats, canon: &str) -> Field {
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
pub fn phone_field(g: &mut Gen, st: &mut GenStats, serial: u64) -> Field {
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
pub fn absent_field(g: &mut Gen, st: &mut GenStats) -> Field {
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
pub fn request_both(g: &mut Gen, st: &mut GenStats, email: &str, phone: u64) -> Request {
    Request {
        email: email_field(g, st, email),
        phone: phone_field(g, st, phone),
    }
}

pub fn request_email(g: &mut Gen, st: &mut GenStats, email: &str) -> Request {
    Request {
        email: email_field(g, st, email),
        phone: absent_field(g, st),
    }
}

pub fn request_phone(g: &mut Gen, st: &mut GenStats, phone: u64) -> Request {
    Request {
        email: absent_field(g, st),
        phone: phone_field(g, st, phone),
    }
}
