//! `idrecon import` / `export` through the real binary (docs/behaviour.md §7), then served over
//! HTTP.

use std::path::Path;

use crate::common::{TestApp, data_file, idrecon, summary};
use serde_json::json;

const HEADER: &str = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn import(dir: &Path, file: &Path) -> std::process::Output {
    idrecon(&[
        "import",
        "--data-dir",
        dir.to_str().unwrap(),
        file.to_str().unwrap(),
    ])
}

fn is_empty_or_missing(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

#[tokio::test]
async fn task_statement_rows_import_and_answer_with_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = import(&data, &data_file("spec-rows.csv"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("imported 4 rows into 3 identities"));

    let app = TestApp::spawn(&data).await;
    let (_, a) = app
        .identify(&json!({"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"}))
        .await;
    assert_eq!(
        summary(&a),
        (
            1,
            s(&["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"]),
            s(&["123456"]),
            vec![23]
        )
    );
    let (_, a) = app
        .identify(&json!({"email": "george@hillvalley.edu", "phoneNumber": "717171"}))
        .await;
    assert_eq!(
        summary(&a),
        (
            11,
            s(&["george@hillvalley.edu", "biffsucks@hillvalley.edu"]),
            s(&["919191", "717171"]),
            vec![27]
        )
    );
    let (_, row) = app.get("/contacts/23").await;
    assert_eq!(
        row["createdAt"], "2023-04-20T05:30:00.110Z",
        "timestamps kept"
    );
    let (_, a) = app.identify(&json!({"email": "new@hillvalley.edu"})).await;
    assert_eq!(
        summary(&a).0,
        28,
        "new ids continue after the largest imported id"
    );
    app.stop().await;

    let output = idrecon(&["export", "--data-dir", data.to_str().unwrap()]);
    assert!(output.status.success());
    let csv = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], HEADER);
    assert_eq!(lines.len(), 6);
    assert!(
        lines[4].starts_with(
            "27,717171,biffsucks@hillvalley.edu,11,secondary,2023-04-21T05:30:00.110Z,"
        )
    );

    // The export is itself importable, and gives the same rows.
    let exported = dir.path().join("export.csv");
    std::fs::write(&exported, &csv).unwrap();
    let again = dir.path().join("again");
    assert!(import(&again, &exported).status.success());
    let output = idrecon(&["export", "--data-dir", again.to_str().unwrap()]);
    assert_eq!(String::from_utf8(output.stdout).unwrap(), csv);
    let output = idrecon(&[
        "export",
        "--data-dir",
        again.to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["email"], "lorraine@hillvalley.edu");
}

#[tokio::test]
async fn equal_created_at_smaller_id_wins_and_racy_duplicates_are_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    std::fs::write(
        &file,
        format!(
            "{HEADER}\n\
             5,111,five@x.io,,primary,2024-01-01 00:00:00+00,2024-01-01 00:00:00+00,\n\
             3,333,three@x.io,,primary,2024-01-01 00:00:00+00,2024-01-01 00:00:00+00,\n\
             8,999,eight@x.io,,primary,2024-02-01 00:00:00+00,2024-02-01 00:00:00+00,\n\
             9,999,nine@x.io,,primary,2024-03-01 00:00:00+00,2024-03-01 00:00:00+00,\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let output = import(&data, &file);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("1 joined by shared emails or phones")
    );
    let app = TestApp::spawn(&data).await;
    let (_, a) = app
        .identify(&json!({"email": "five@x.io", "phoneNumber": "333"}))
        .await;
    assert_eq!(summary(&a).0, 3, "equal createdAt: the smaller id is older");
    assert_eq!(summary(&a).3, vec![5]);
    let (_, nine) = app.get("/contacts/9").await;
    assert_eq!(
        (nine["linkPrecedence"].as_str(), nine["linkedId"].as_u64()),
        (Some("secondary"), Some(8))
    );
    app.stop().await;
}

#[test]
fn deep_linked_id_chain_imports() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.csv");
    let mut text =
        format!("{HEADER}\n1,,c1@x.io,,primary,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z,\n");
    for id in 2..=50_000u64 {
        text.push_str(&format!(
            "{id},,c{id}@x.io,{},secondary,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z,\n",
            id - 1
        ));
    }
    std::fs::write(&file, text).unwrap();
    let data = dir.path().join("data");
    let output = import(&data, &file);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("imported 50000 rows into 1 identities")
    );
    let output = idrecon(&["export", "--data-dir", data.to_str().unwrap()]);
    let csv = String::from_utf8(output.stdout).unwrap();
    assert!(
        csv.lines()
            .skip(2)
            .all(|l| l.split(',').nth(3) == Some("1")),
        "every row re-pointed at the primary"
    );
}

#[test]
fn bad_files_stop_with_the_line_number_and_write_nothing() {
    let ok = "2024-01-01T00:00:00Z";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "cycle",
            format!(
                "{HEADER}\n1,,a@x.io,3,secondary,{ok},{ok},\n2,,b@x.io,1,secondary,{ok},{ok},\n3,,c@x.io,2,secondary,{ok},{ok},\n"
            ),
            "line",
        ),
        (
            "self-link",
            format!("{HEADER}\n1,,a@x.io,1,secondary,{ok},{ok},\n"),
            "line 2",
        ),
        (
            "dangling",
            format!("{HEADER}\n1,,a@x.io,,primary,{ok},{ok},\n2,,b@x.io,7,secondary,{ok},{ok},\n"),
            "line 3",
        ),
        (
            "duplicate id",
            format!("{HEADER}\n1,,a@x.io,,primary,{ok},{ok},\n1,,b@x.io,,primary,{ok},{ok},\n"),
            "line 3",
        ),
        (
            "bad timestamp",
            format!(
                "{HEADER}\n1,,a@x.io,,primary,{ok},{ok},\n2,,b@x.io,,primary,yesterday,{ok},\n"
            ),
            "line 3",
        ),
        (
            "bad email",
            format!("{HEADER}\n1,,not-an-email,,primary,{ok},{ok},\n"),
            "line 2",
        ),
        (
            "bad phone",
            format!("{HEADER}\n1,12#4,,,primary,{ok},{ok},\n"),
            "line 2",
        ),
        (
            "bad precedence",
            format!("{HEADER}\n1,1,,,boss,{ok},{ok},\n"),
            "line 2",
        ),
    ];
    for (name, text, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rows.csv");
        std::fs::write(&file, text).unwrap();
        let data = dir.path().join("data");
        let output = import(&data, &file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} accepted");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(is_empty_or_missing(&data), "{name} wrote something");
    }
}

#[test]
fn import_refuses_a_non_empty_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(import(&data, &data_file("spec-rows.csv")).status.success());
    let output = import(&data, &data_file("spec-rows.csv"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("empty"));
}

#[test]
fn export_of_a_missing_data_directory_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let output = idrecon(&["export", "--data-dir", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(missing.to_str().unwrap()) && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "no CSV header for a missing directory"
    );
    assert!(!missing.exists(), "export creates nothing");
}

#[tokio::test]
async fn check_counts_contacts_and_history_records_apart() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    for (email, phone) in [("a@x.io", "1"), ("b@x.io", "2"), ("a@x.io", "2")] {
        let (status, _) = app
            .identify(&json!({"email": email, "phoneNumber": phone}))
            .await;
        assert_eq!(status, 200);
    }
    // Two rows, one merge in the history; the final snapshot holds both and the clock.
    app.stop().await;
    let output = idrecon(&["check", "--data-dir", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let snapshot = stdout
        .lines()
        .find(|l| l.contains(".snap"))
        .unwrap_or_else(|| panic!("no snapshot line in {stdout}"));
    assert!(
        snapshot.contains(": 2 contacts, 1 history records at LSN"),
        "{snapshot}"
    );
    assert!(
        stdout.contains("state: 2 contacts in 1 identities"),
        "{stdout}"
    );
}

#[test]
fn format_help_lists_csv_and_jsonl_without_doc_links() {
    for command in ["import", "export"] {
        let output = idrecon(&[command, "--help"]);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{help}");
        let format = help
            .split("--format <FORMAT>")
            .nth(1)
            .unwrap_or_else(|| panic!("no --format in {help}"));
        assert!(
            format.contains("- csv:") && format.contains("- jsonl:"),
            "{command}: {help}"
        );
        assert!(!help.contains("[`"), "{command}: a rustdoc link in {help}");
        // import takes a file; export takes none.
        let file = if command == "import" {
            &["rows.csv"][..]
        } else {
            &[]
        };
        let output = idrecon(&[&[command, "--format", "xml"][..], file].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("[possible values: csv, jsonl]"),
            "{command}: {stderr}"
        );
    }
}
