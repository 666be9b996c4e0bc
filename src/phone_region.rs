//! Opt-in phone canonicalization (`--phone-region`, docs/behaviour.md §4 "E.164 phone numbers
//! (opt-in)"): a canonical form is never imposed by default.
//!
//! By default a phone number is only trimmed and checked against docs/behaviour.md §4's character
//! set and length ([`Phone::parse`]), so `+91 98765 43210` and `9876543210` are two different
//! phones. With a [`PhoneRegion`] every phone number is first checked exactly as by default
//! (empty → absent, at most 32 characters, the same character set) and then parsed with the
//! `phonenumber` crate (a Rust port of Google's libphonenumber and its metadata), numbers without
//! a country code being read as numbers of that region, and stored in E.164 form
//! (`+919876543210`). A number the crate cannot parse, that is not a valid number of its
//! country, or that carries an extension (E.164 has none, and dropping it would merge two
//! extensions' customers) is a `400 invalid_phone_number`.
//!
//! The parser is guarded: its input is at most [`MAX_PHONE_CHARS`] characters (the limit of
//! docs/behaviour.md §4, checked first) and it runs under [`std::panic::catch_unwind`], so a panic
//! inside the crate is answered `400` like any other unparseable number and never takes the
//! service down.
//!
//! [`Normalizer`] bundles the setting for every place that normalizes request or import values
//! (`/identify` bodies, import rows, the `GET /identities` lookup), so they all normalize
//! identically.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use phonenumber::Mode;
use phonenumber::country::Id;

use crate::contact::{Email, MAX_PHONE_CHARS, Phone, ValidationError};

/// The region whose numbering plan applies to phone numbers written without a country code:
/// an ISO 3166-1 alpha-2 code (`IN`, `US`, `GB`, …) for which the `phonenumber` crate has
/// metadata. Parsed case-insensitively with [`FromStr`]; displayed in upper case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PhoneRegion(Id);

/// A `--phone-region` value that names no region with telephone numbering metadata.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown phone region {given:?}: expected an ISO 3166-1 alpha-2 code with telephone \
     numbering metadata, such as IN, US or GB"
)]
pub struct UnknownRegion {
    /// The text given (at most 40 characters of it).
    pub given: String,
}

impl FromStr for PhoneRegion {
    type Err = UnknownRegion;

    /// Parses an ISO 3166-1 alpha-2 code, in any case, surrounding white space ignored.
    ///
    /// Also loads the crate's metadata, so the first request does not pay for it and a broken
    /// metadata table stops start-up rather than every request.
    ///
    /// # Errors
    /// [`UnknownRegion`] when the text is not two ASCII letters or names no region the crate
    /// has metadata for (`XX`, `AQ`, `001`, …).
    fn from_str(text: &str) -> Result<PhoneRegion, UnknownRegion> {
        let code = text.trim();
        let unknown = || UnknownRegion {
            given: text.chars().take(40).collect(),
        };
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(unknown());
        }
        let id = code
            .to_ascii_uppercase()
            .parse::<Id>()
            .map_err(|_| unknown())?;
        let known = std::panic::catch_unwind(|| {
            phonenumber::metadata::DATABASE.by_id(id.as_ref()).is_some()
        });
        match known {
            Ok(true) => Ok(PhoneRegion(id)),
            _ => Err(unknown()),
        }
    }
}

impl fmt::Display for PhoneRegion {
    /// The upper-case ISO code (`IN`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

/// Why the `phonenumber` crate did not give a canonical number.
enum Rejection {
    /// Not a phone number, not a valid number of its country, or the parser panicked.
    Invalid,
    /// A valid number with an extension, which E.164 cannot hold.
    Extension,
}

impl PhoneRegion {
    /// Canonicalizes a phone number given as text (docs/behaviour.md §4 + this module's rule).
    ///
    /// Returns `Ok(None)` when it is empty after trimming (docs/behaviour.md §4: empty → absent),
    /// and otherwise the number in E.164 form (`"+919876543210"` for `"098765 43210"` with region
    /// `IN`). Canonicalizing an E.164 result gives it back unchanged.
    ///
    /// # Errors
    /// `invalid_phone_number` (field `phoneNumber`): the text breaks docs/behaviour.md §4's default
    /// rules (over 32 characters, a character outside the allowed set), the `phonenumber` crate
    /// cannot parse it, it is not a valid number of its country, it has an extension, or the parser
    /// panicked.
    pub fn canonicalize(&self, raw: &str) -> Result<Option<Phone>, ValidationError> {
        match Phone::parse(raw)? {
            None => Ok(None),
            Some(checked) => self.canonical(checked.as_str()).map(Some),
        }
    }

    /// Canonicalizes a phone number given as a non-negative JSON integer (docs/behaviour.md §4:
    /// `9876543210` ≡ `"9876543210"`), as [`PhoneRegion::canonicalize`] does its decimal digits.
    ///
    /// # Errors
    /// As [`PhoneRegion::canonicalize`].
    pub fn canonicalize_u64(&self, number: u64) -> Result<Phone, ValidationError> {
        self.canonical(Phone::from_u64(number).as_str())
    }

    /// The guarded parse of text that already passed [`Phone::parse`] (so at most
    /// [`MAX_PHONE_CHARS`] characters).
    fn canonical(&self, checked: &str) -> Result<Phone, ValidationError> {
        let invalid = || {
            ValidationError::new(
                "invalid_phone_number",
                format!("phoneNumber is not a valid phone number (region {self})"),
                Some("phoneNumber"),
            )
        };
        if checked.chars().count() > MAX_PHONE_CHARS {
            return Err(invalid());
        }
        let region = self.0;
        let parsed =
            std::panic::catch_unwind(|| e164(region, checked)).unwrap_or(Err(Rejection::Invalid));
        let text = match parsed {
            Ok(text) => text,
            Err(Rejection::Invalid) => return Err(invalid()),
            Err(Rejection::Extension) => {
                return Err(ValidationError::new(
                    "invalid_phone_number",
                    "phoneNumber must not have an extension when numbers are stored in E.164 form",
                    Some("phoneNumber"),
                ));
            }
        };
        // E.164: `+` and at most 15 digits. Anything else from the crate is treated as invalid
        // rather than stored.
        let well_formed = text.len() >= 3
            && text.len() <= 16
            && text.starts_with('+')
            && text[1..].bytes().all(|b| b.is_ascii_digit());
        match Phone::parse(&text) {
            Ok(Some(phone)) if well_formed => Ok(phone),
            _ => Err(invalid()),
        }
    }
}

/// Parses `text` as a number of `region` (or of the country its `+` prefix names) and formats
/// it as E.164. May panic inside the crate: call under `catch_unwind`.
fn e164(region: Id, text: &str) -> Result<String, Rejection> {
    // A leading `+` names the country itself, and the region must not be applied to it: the
    // crate would otherwise strip the region's national prefix from the digits after the
    // country code (`+49 1640` read with region US lost its `1`).
    let default_region = if text.starts_with('+') {
        None
    } else {
        Some(region)
    };
    let number = phonenumber::parse(default_region, text).map_err(|_| Rejection::Invalid)?;
    if !phonenumber::is_valid(&number) {
        return Err(Rejection::Invalid);
    }
    if number.extension().is_some() {
        return Err(Rejection::Extension);
    }
    let out = format_e164(&number)?;
    // The crate's metadata is not always consistent between the national and the international
    // reading of one number (`09000000000` read in BR is valid as `+559000000000`, which read
    // back is not). A stored value must canonicalize to itself, or the same customer would be
    // refused (or split) on the next request: only a fixed point is accepted.
    let again = phonenumber::parse(None, &out).map_err(|_| Rejection::Invalid)?;
    if !phonenumber::is_valid(&again) || again.extension().is_some() || format_e164(&again)? != out
    {
        return Err(Rejection::Invalid);
    }
    Ok(out)
}

/// `number` in E.164 form (`+` and its digits).
fn format_e164(number: &phonenumber::PhoneNumber) -> Result<String, Rejection> {
    let mut out = String::new();
    // The formatter reports an unknown country code as `fmt::Error`; `to_string` would panic.
    write!(out, "{}", number.format().mode(Mode::E164)).map_err(|_| Rejection::Invalid)?;
    Ok(out)
}

/// How request and import values are normalized before matching and storing: docs/behaviour.md §4
/// by default, plus E.164 phone canonicalization when a [`PhoneRegion`] is set (`--phone-region`).
///
/// Every path that turns outside text into an [`Email`] or [`Phone`] (`/identify` bodies in
/// [`crate::http::identify::parse_identify_body`], import rows in [`crate::rows`], the HTTP layer's
/// state for other handlers) goes through one `Normalizer`, so a value is looked up exactly as
/// it is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Normalizer {
    phone_region: Option<PhoneRegion>,
}

impl Normalizer {
    /// A normalizer that canonicalizes phone numbers for `phone_region`, or follows
    /// docs/behaviour.md §4 alone when it is `None` (the same as [`Normalizer::default`]).
    pub fn new(phone_region: Option<PhoneRegion>) -> Normalizer {
        Normalizer { phone_region }
    }

    /// The phone region, when phone numbers are canonicalized.
    pub fn phone_region(&self) -> Option<PhoneRegion> {
        self.phone_region
    }

    /// Normalizes an email (docs/behaviour.md §4; no setting changes it): [`Email::parse`].
    ///
    /// # Errors
    /// As [`Email::parse`]: `invalid_email`.
    pub fn email(&self, raw: &str) -> Result<Option<Email>, ValidationError> {
        Email::parse(raw)
    }

    /// Normalizes a phone number given as text: [`Phone::parse`] by default,
    /// [`PhoneRegion::canonicalize`] with a region. `Ok(None)` when empty after trimming.
    ///
    /// # Errors
    /// `invalid_phone_number` (field `phoneNumber`), see those two functions.
    pub fn phone(&self, raw: &str) -> Result<Option<Phone>, ValidationError> {
        match &self.phone_region {
            None => Phone::parse(raw),
            Some(region) => region.canonicalize(raw),
        }
    }

    /// Normalizes a phone number given as a non-negative JSON integer: its decimal digits
    /// ([`Phone::from_u64`]) by default, [`PhoneRegion::canonicalize_u64`] with a region.
    ///
    /// # Errors
    /// With a region only: `invalid_phone_number`, as [`PhoneRegion::canonicalize`].
    pub fn phone_from_u64(&self, number: u64) -> Result<Phone, ValidationError> {
        match &self.phone_region {
            None => Ok(Phone::from_u64(number)),
            Some(region) => region.canonicalize_u64(number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn india() -> PhoneRegion {
        "IN".parse().unwrap()
    }

    fn canonical(raw: &str) -> Result<Option<String>, ValidationError> {
        india()
            .canonicalize(raw)
            .map(|p| p.map(|p| p.as_str().to_owned()))
    }

    #[test]
    fn regions_parse_case_insensitively_and_unknown_ones_are_refused() {
        for text in ["IN", "in", "In", " in "] {
            assert_eq!(text.parse::<PhoneRegion>().unwrap().to_string(), "IN");
        }
        assert_eq!("us".parse::<PhoneRegion>().unwrap().to_string(), "US");
        for bad in ["", "I", "IND", "XX", "001", "1N", "ÍN", "in\0"] {
            let err = bad.parse::<PhoneRegion>().unwrap_err();
            assert!(err.to_string().contains("unknown phone region"), "{bad:?}");
        }
    }

    #[test]
    fn the_three_spellings_of_one_indian_number_are_one_e164_number() {
        for raw in [
            "+91 98765 43210",
            "098765 43210",
            "9876543210",
            " 98765-43210 ",
            "+91 (98765) 43210",
        ] {
            assert_eq!(
                canonical(raw).unwrap().as_deref(),
                Some("+919876543210"),
                "{raw:?}"
            );
        }
        assert_eq!(
            india().canonicalize_u64(9876543210).unwrap().as_str(),
            "+919876543210"
        );
        // A number with its own country code keeps it.
        assert_eq!(
            canonical("+1 650 253 0000").unwrap().as_deref(),
            Some("+16502530000")
        );
    }

    /// A case the property test of `tests/it/phone_region.rs` found: the crate accepts
    /// `09000000000` in BR as `+559000000000` but rejects that E.164 text when read back, so
    /// the number must be refused rather than stored in a form that never matches again.
    #[test]
    fn a_number_whose_e164_form_does_not_read_back_is_refused() {
        let brazil: PhoneRegion = "BR".parse().unwrap();
        assert_eq!(
            brazil.canonicalize("+559000000000").unwrap_err().code,
            "invalid_phone_number"
        );
        assert_eq!(
            brazil.canonicalize("09000000000").unwrap_err().code,
            "invalid_phone_number"
        );
        // A real Brazilian mobile number still reads back to itself.
        let mobile = brazil.canonicalize("(11) 96123-4567").unwrap().unwrap();
        assert_eq!(
            brazil.canonicalize(mobile.as_str()).unwrap().unwrap(),
            mobile
        );
    }

    #[test]
    fn empty_is_absent_and_invalid_numbers_are_invalid_phone_number() {
        assert_eq!(canonical("   ").unwrap(), None);
        assert_eq!(canonical("").unwrap(), None);
        for bad in [
            "123456",
            "garbage",
            "+",
            "0",
            "+999 1234567",
            "98765 43210 ext. 12",
            "1-800-FLOWERS-AND-MORE-FLOWERS-XX",
            &"9".repeat(33),
            "98765#43210",
        ] {
            let err = canonical(bad).unwrap_err();
            assert_eq!(err.code, "invalid_phone_number", "{bad:?}");
            assert_eq!(err.field, Some("phoneNumber"), "{bad:?}");
        }
        assert_eq!(
            india().canonicalize_u64(123456).unwrap_err().code,
            "invalid_phone_number"
        );
    }

    #[test]
    fn default_normalizer_is_spec_section_4() {
        let n = Normalizer::default();
        assert_eq!(n.phone_region(), None);
        assert_eq!(n.phone(" 123456 ").unwrap().unwrap().as_str(), "123456");
        assert_eq!(n.phone_from_u64(7).unwrap().as_str(), "7");
        assert_eq!(n.phone("").unwrap(), None);
        assert_eq!(n.email(" A@B.c ").unwrap().unwrap().as_str(), "a@b.c");
        let n = Normalizer::new(Some(india()));
        assert_eq!(
            n.phone("098765 43210").unwrap().unwrap().as_str(),
            "+919876543210"
        );
        assert_eq!(
            n.phone_from_u64(123456).unwrap_err().code,
            "invalid_phone_number"
        );
    }
}
