//! The graph the graph benchmarks of `benches/graph.rs` measure (criterion, at 1 000 000
//! contacts). Included with `#[path]`; not a bench target of its own.

use idrecon::contact::{Email, Phone, Timestamp};
use idrecon::event::{Event, NewContact};
use idrecon::graph::{ApplyError, IdentityGraph};

/// The email of contact `i`: `customer{i}@example.com`.
pub fn email(i: u64) -> Option<Email> {
    Email::parse(&format!("customer{i}@example.com"))
        .ok()
        .flatten()
}

/// The phone of contact `i`: `9000000000 + i`.
pub fn phone(i: u64) -> Option<Phone> {
    Some(Phone::from_u64(9_000_000_000 + i))
}

/// The `/identify` body of the returning customer the pure-read benchmarks ask for: contact
/// 1001's email (in mixed case, so normalization lowercases it) and phone, a pure read of an
/// identity of two when `1001 < paired`.
pub fn known_body() -> String {
    format!(
        r#"{{"email":"Customer{}@Example.com","phoneNumber":"{}"}}"#,
        1001,
        9_000_000_000u64 + 1001
    )
}

/// Contacts `1..=contacts`, each with [`email`]; contacts `1..=paired` form identities of two
/// (each even contact links to the odd one before it and has no phone), the rest are singleton
/// identities with [`phone`].
///
/// # Errors
/// The graph's [`ApplyError`], which these ids (dense, increasing) and links never cause.
pub fn build(contacts: u64, paired: u64) -> Result<IdentityGraph, ApplyError> {
    let mut graph = IdentityGraph::new();
    for id in 1..=contacts {
        let link = (id <= paired && id % 2 == 0).then(|| id - 1);
        let contact = NewContact {
            id,
            email: email(id),
            phone: if link.is_some() { None } else { phone(id) },
            created_at: Timestamp(id as i64),
            updated_at: Timestamp(id as i64),
            deleted_at: None,
            link,
        };
        graph.apply(&Event::ContactInserted(contact))?;
    }
    Ok(graph)
}
