//! The committed files of `data/` against the rules: the worked examples and the task
//! statement's rows through the naive model, and the checkout sample through the naive model
//! and the real identity graph, with the figures `data/README.md` states.
//!
//! The HTTP side of the same files is in `http_api.rs` (the worked examples against a served
//! graph) and `import_cli.rs` (`spec-rows.csv` through `idrecon import`).

use std::collections::HashSet;

use idrecon::contact::{ContactRow, Email, Phone, Timestamp};
use idrecon::event::Event;
use idrecon::graph::{IdentifyRequest, IdentityGraph};
use idrecon::rows::{RowFormat, plan_import, read_rows};
use serde_json::Value;

use crate::common::data_file;
use crate::common::model::{Answer, Model, Row, answer_of, row_of};

/// `2023-04-01T00:00:00Z` in ms: the clock of the replays, one ms per request from here.
const BASE_MS: i64 = 1_680_307_200_000;

/// The normalized `(email, phone)` of an `/identify` body (docs/behaviour.md §3 request shape,
/// §4 normalization), or `None` when the service would answer 400. Written with the value
/// parsers of `idrecon::contact` only, so the body rules are restated here, not reused.
fn parse_body(line: &str) -> Option<(Option<Email>, Option<Phone>)> {
    let Value::Object(body) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let email = match body.get("email") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Email::parse(text).ok()?,
        Some(_) => return None,
    };
    let phone = match body.get("phoneNumber") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Phone::parse(text).ok()?,
        Some(Value::Number(number)) => Some(Phone::from_u64(number.as_u64()?)),
        Some(_) => return None,
    };
    (email.is_some() || phone.is_some()).then_some((email, phone))
}

/// The text of a normalized email and phone, as the naive model takes them.
fn texts<'a>(
    email: &'a Option<Email>,
    phone: &'a Option<Phone>,
) -> (Option<&'a str>, Option<&'a str>) {
    (
        email.as_ref().map(Email::as_str),
        phone.as_ref().map(Phone::as_str),
    )
}

/// An answer body of `spec-expected.jsonl` (default response key) as an [`Answer`].
fn answer_of_json(body: &Value) -> Answer {
    let contact = &body["contact"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    Answer {
        primary: contact["primaryContactId"].as_u64().unwrap(),
        emails: strings(&contact["emails"]),
        phones: strings(&contact["phoneNumbers"]),
        secondaries: contact["secondaryContactIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect(),
    }
}

fn lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(data_file(name))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn naive_model_gives_the_worked_examples_file() {
    let requests = lines("spec-requests.jsonl");
    let expected = lines("spec-expected.jsonl");
    assert_eq!((requests.len(), expected.len()), (8, 8));
    let mut model = Model::default();
    for (i, (request, expected)) in requests.iter().zip(&expected).enumerate() {
        let (email, phone) = parse_body(request).expect("a valid request");
        let (e, p) = texts(&email, &phone);
        let (answer, _) = model.identify(e, p, BASE_MS + i as i64);
        let expected: Value = serde_json::from_str(expected).unwrap();
        assert_eq!(
            answer,
            answer_of_json(&expected),
            "line {}: {request}",
            i + 1
        );
    }
}

#[test]
fn task_statement_rows_are_consistent_and_merge_george_with_biff() {
    let csv = std::fs::read(data_file("spec-rows.csv")).unwrap();
    let rows = read_rows(csv.as_slice(), RowFormat::Csv).unwrap();
    // Already as the service would have written them: nothing to repair on import.
    let plan = plan_import(rows.clone(), Timestamp(BASE_MS)).unwrap();
    assert_eq!(
        (plan.rows, plan.identities, plan.identities_joined_by_values),
        (4, 3, 0)
    );
    assert_eq!(plan.primaries_changed, 0);

    let mut model = Model {
        rows: rows.iter().map(|r| row_of(r.to_contact_row())).collect(),
        ..Model::default()
    };
    model.rows.sort_by_key(|r| r.id);
    let (answer, wrote) = model.identify(
        Some("george@hillvalley.edu"),
        Some("717171"),
        BASE_MS + 365 * 86_400_000,
    );
    assert!(wrote, "the request merges two identities");
    assert_eq!(
        answer,
        Answer {
            primary: 11,
            emails: vec![
                "george@hillvalley.edu".into(),
                "biffsucks@hillvalley.edu".into()
            ],
            phones: vec!["919191".into(), "717171".into()],
            secondaries: vec![27],
        }
    );
}

/// What replaying a request file on a fresh graph did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Replay {
    requests: u64,
    rejected: u64,
    both: u64,
    email_only: u64,
    phone_only: u64,
    new_identities: u64,
    new_secondaries: u64,
    merges: u64,
    pure_reads: u64,
    contacts: u64,
    identities: u64,
    largest_identity: u64,
    distinct_emails: u64,
    distinct_phones: u64,
}

#[test]
fn checkout_sample_replays_with_the_documented_figures() {
    let mut graph = IdentityGraph::new();
    let mut got = Replay::default();
    for (i, line) in lines("checkout-sample.jsonl").iter().enumerate() {
        got.requests += 1;
        let Some((email, phone)) = parse_body(line) else {
            got.rejected += 1;
            continue;
        };
        match (&email, &phone) {
            (Some(_), Some(_)) => got.both += 1,
            (Some(_), None) => got.email_only += 1,
            _ => got.phone_only += 1,
        }
        let request = IdentifyRequest::new(email, phone).unwrap();
        let (_, events) = graph
            .identify(&request, Timestamp(BASE_MS + i as i64))
            .unwrap();
        if events.is_empty() {
            got.pure_reads += 1;
        }
        for event in &events {
            match event {
                Event::ContactInserted(c) if c.link.is_none() => got.new_identities += 1,
                Event::ContactInserted(_) => got.new_secondaries += 1,
                Event::IdentitiesLinked { .. } | Event::IdentitiesMerged { .. } => got.merges += 1,
                other => panic!("line {}: unexpected event {other:?}", i + 1),
            }
        }
    }
    let rows: Vec<ContactRow> = graph.all_contacts().collect();
    got.contacts = rows.len() as u64;
    got.identities = graph.identity_count() as u64;
    got.largest_identity = graph.largest_identity() as u64;
    got.distinct_emails = rows
        .iter()
        .filter_map(|r| r.email.as_ref())
        .collect::<HashSet<_>>()
        .len() as u64;
    got.distinct_phones = rows
        .iter()
        .filter_map(|r| r.phone_number.as_ref())
        .collect::<HashSet<_>>()
        .len() as u64;
    graph.check_invariants().unwrap();

    // The figures of data/README.md ("The sample").
    let expected = Replay {
        requests: 100_000,
        rejected: 0,
        both: 71_176,
        email_only: 16_282,
        phone_only: 12_542,
        new_identities: 25_188,
        new_secondaries: 7_717,
        merges: 853,
        pure_reads: 66_242,
        contacts: 32_905,
        identities: 24_335,
        largest_identity: 11,
        distinct_emails: 28_668,
        distinct_phones: 24_441,
    };
    assert_eq!(got, expected);
}

/// Answer by answer and row by row against the naive model. The model is quadratic (the whole
/// file takes it about 25 s), so it replays the first quarter: long enough for family joins,
/// new values, personas and late links; the whole file is checked through its figures above.
#[test]
fn checkout_sample_start_agrees_with_the_naive_model() {
    const REQUESTS: usize = 25_000;
    let mut graph = IdentityGraph::new();
    let mut model = Model::default();
    let mut merges = 0;
    for (i, line) in lines("checkout-sample.jsonl")
        .iter()
        .take(REQUESTS)
        .enumerate()
    {
        let (email, phone) = parse_body(line).expect("a valid request");
        let now = BASE_MS + i as i64;
        let (e, p) = texts(&email, &phone);
        let (expected, wrote) = model.identify(e, p, now);
        let request = IdentifyRequest::new(email, phone).unwrap();
        let (identity, events) = graph.identify(&request, Timestamp(now)).unwrap();
        assert_eq!(answer_of(&identity), expected, "line {}: {line}", i + 1);
        assert_eq!(!events.is_empty(), wrote, "line {}: {line}", i + 1);
        merges += events
            .iter()
            .filter(|e| matches!(e, Event::IdentitiesLinked { .. }))
            .count();
    }
    let rows: Vec<Row> = graph.all_contacts().map(row_of).collect();
    assert_eq!(rows, model.rows);
    assert!(merges > 0, "the replayed start has late links");
}
