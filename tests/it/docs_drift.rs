//! The documents agree with the server: the routes and metrics named in README.md,
//! docs/OPERATIONS.md and docs/behaviour.md are those a real server serves (`/openapi.json`
//! paths, `/metrics` names), every route appears in docs/behaviour.md §6, and every metric the
//! server exports is documented in docs/behaviour.md §6.10 or docs/OPERATIONS.md.
//!
//! A route mention is a span in backticks that is a path (`/identify`, `GET /contacts/{id}`,
//! `GET /contacts?after={id}&limit={n}`), with or without a method; file-system paths
//! (`/etc/…`, `/proc/…`, `/var/…`, `/dev/…`, `/tmp/…`, `/sys/…`) are not routes. A metric
//! mention is any `idrecon_…` word.
//!
//! docs/behaviour.md §9 (cluster mode) is left out here: its routes and metrics exist only on a
//! cluster member, and `cluster::a_follower_behind_a_purged_log_comes_back_through_a_snapshot`
//! checks them against one.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::common::Binary;
use serde_json::{Value, json};

const DOCUMENTS: [&str; 3] = ["README.md", "docs/OPERATIONS.md", "docs/behaviour.md"];
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const NOT_ROUTES: [&str; 6] = ["/etc/", "/proc/", "/var/", "/dev/", "/tmp/", "/sys/"];

fn document(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of `docs/behaviour.md` from the heading starting with `from` to the next heading
/// of the same or a higher level.
pub fn section(text: &str, from: &str) -> String {
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("{from} in behaviour.md"));
    let level = from.chars().take_while(|c| *c == '#').count();
    let rest = &text[start + from.len()..];
    let end = rest
        .match_indices('\n')
        .map(|(at, _)| at + 1)
        .find(|at| {
            let line = &rest[*at..];
            let hashes = line.chars().take_while(|c| *c == '#').count();
            hashes > 0 && hashes <= level && line[hashes..].starts_with(' ')
        })
        .unwrap_or(rest.len());
    text[start..start + from.len() + end].to_owned()
}

/// `text` without the section starting at heading `from` (up to the next heading of the same
/// or a higher level).
pub fn without_section(text: &str, from: &str) -> String {
    match text.find(from) {
        Some(start) => {
            let cut = section(text, from);
            format!("{}{}", &text[..start], &text[start + cut.len()..])
        }
        None => text.to_owned(),
    }
}

/// Every span in backticks that names a route: (method if given, path without query).
pub fn route_mentions(text: &str) -> Vec<(Option<String>, String)> {
    let mut mentions = Vec::new();
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        let (method, path) = match span.split_once(' ') {
            Some((method, path)) if METHODS.contains(&method) => (Some(method.to_owned()), path),
            _ => (None, span),
        };
        if !path.starts_with('/')
            || path.contains(' ')
            || NOT_ROUTES.iter().any(|p| path.starts_with(p))
        {
            continue;
        }
        let path = path.split('?').next().unwrap_or(path).trim_end_matches('…');
        mentions.push((method, path.to_owned()));
    }
    mentions
}

/// Whether `path` (a concrete path or a template) matches the route template `template`.
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

/// Every `idrecon_…` word of `text`.
pub fn metric_mentions(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("idrecon_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// A histogram's series (`_bucket`, `_sum`, `_count`) name the histogram.
fn metric_family(name: &str, exported: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && exported.contains(base)
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

/// Every metric family `/metrics` exports (its `# TYPE` lines).
fn exported_metrics(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn documents_name_the_routes_and_metrics_the_server_has() {
    let dir = tempfile::tempdir().unwrap();
    // A snapshot after every event, so the snapshot metrics exist too.
    let server = Binary::start(dir.path(), &["--snapshot-every", "1"]);
    let client = reqwest::Client::new();
    let url = &server.url;

    // A few requests, so that the lazily registered metrics appear.
    let answer = client
        .post(format!("{url}/identify"))
        .json(&json!({"email": "drift@example.com", "phoneNumber": "123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let bad = client
        .post(format!("{url}/identify"))
        .json(&json!({"email": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let openapi: Value = client
        .get(format!("{url}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut scrape = String::new();
    for _ in 0..200 {
        scrape = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if scrape.contains("idrecon_snapshot_duration_seconds") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut routes = BTreeSet::new();
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.to_uppercase().as_str()) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(routes.len() >= 10, "{routes:?}");
    let exported = exported_metrics(&scrape);
    assert!(exported.contains("idrecon_snapshots_total"), "{scrape}");

    let behaviour = document("docs/behaviour.md");
    let operations = document("docs/OPERATIONS.md");
    let mut problems = Vec::new();

    for name in DOCUMENTS {
        let text = without_section(&document(name), "## §9 ");
        for (method, path) in route_mentions(&text) {
            let known = routes.iter().any(|(m, template)| {
                matches(template, &path) && method.as_ref().is_none_or(|method| method == m)
            });
            if !known {
                let route = match method {
                    Some(method) => format!("{method} {path}"),
                    None => path,
                };
                problems.push(format!("{name} names `{route}`, which the server lacks"));
            }
        }
        for metric in metric_mentions(&text) {
            let family = metric_family(&metric, &exported);
            if !exported.contains(&family) {
                problems.push(format!("{name} names {metric}, which /metrics lacks"));
            }
        }
    }

    let endpoints = section(&behaviour, "## §6 ");
    let mentioned = route_mentions(&endpoints);
    for (method, template) in &routes {
        let named = mentioned
            .iter()
            .any(|(m, path)| matches(template, path) && m.as_ref().is_none_or(|m| m == method));
        if !named {
            problems.push(format!(
                "{method} {template} is not in docs/behaviour.md §6"
            ));
        }
    }

    let metrics_section = section(&behaviour, "### §6.10 ");
    let documented: BTreeSet<String> = metric_mentions(&metrics_section)
        .union(&metric_mentions(&operations))
        .cloned()
        .collect();
    for metric in &exported {
        if !documented.contains(metric) {
            problems.push(format!(
                "{metric} is exported but not in docs/behaviour.md §6.10 or docs/OPERATIONS.md"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
