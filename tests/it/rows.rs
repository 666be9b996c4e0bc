//! The public API of `idrecon::rows`: reading CSV and JSON Lines, planning imports, exporting.

use std::path::Path;

use idrecon::contact::{ContactId, ContactRow, Email, LinkPrecedence, Phone, Timestamp};
use idrecon::event::NewContact;
use idrecon::rows::{
    ImportError, ImportPlan, ImportRow, RowFormat, detect_format, plan_import, read_rows,
    write_rows,
};

const HEADER: &str = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";

fn ts(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

fn now() -> Timestamp {
    ts("2030-01-01T00:00:00.000Z")
}

fn csv_rows(body: &str) -> Result<Vec<ImportRow>, ImportError> {
    read_rows(format!("{HEADER}\n{body}").as_bytes(), RowFormat::Csv)
}

fn plan_csv(body: &str) -> Result<ImportPlan, ImportError> {
    plan_import(csv_rows(body)?, now())
}

fn err_line(result: Result<impl std::fmt::Debug, ImportError>) -> (u64, String) {
    let err = result.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("line {}: ", err.line())),
        "{text}"
    );
    (err.line(), text)
}

fn links(plan: &ImportPlan) -> Vec<(ContactId, Option<ContactId>)> {
    plan.contacts.iter().map(|c| (c.id, c.link)).collect()
}

fn contact(plan: &ImportPlan, id: ContactId) -> &NewContact {
    plan.contacts.iter().find(|c| c.id == id).unwrap()
}

/// The original task statement's rows (docs/behaviour.md §5), as `psql \copy … CSV HEADER`
/// writes them.
const ORIGINAL: &str = "\
1,123456,lorraine@hillvalley.edu,,primary,2023-04-01 00:00:00.374+00,2023-04-01 00:00:00.374+00,
23,123456,mcfly@hillvalley.edu,1,secondary,2023-04-20 05:30:00.11+00,2023-04-20 05:30:00.11+00,
11,919191,george@hillvalley.edu,,primary,2023-04-11 00:00:00.374+00,2023-04-11 00:00:00.374+00,
27,717171,biffsucks@hillvalley.edu,,primary,2023-04-21 05:30:00.11+00,2023-04-21 05:30:00.11+00,
";

#[test]
fn original_task_rows_import_as_two_identities() {
    let rows = csv_rows(ORIGINAL).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1].line, 3);
    assert_eq!(rows[1].id, 23);
    assert_eq!(rows[1].phone.as_ref().unwrap().as_str(), "123456");
    assert_eq!(
        rows[1].email.as_ref().unwrap().as_str(),
        "mcfly@hillvalley.edu"
    );
    assert_eq!(rows[1].linked_id, Some(1));
    assert_eq!(rows[1].precedence, LinkPrecedence::Secondary);
    assert_eq!(rows[1].created_at, ts("2023-04-20T05:30:00.110Z"));
    assert_eq!(rows[0].deleted_at, None);

    let plan = plan_import(rows, now()).unwrap();
    assert_eq!(plan.rows, 4);
    assert_eq!(plan.identities, 3);
    assert_eq!(plan.identities_joined_by_values, 0);
    assert_eq!(plan.primaries_changed, 0);
    assert_eq!(
        links(&plan),
        vec![(1, None), (11, None), (23, Some(1)), (27, None)]
    );
    // Nothing is touched: every row keeps its timestamps.
    assert_eq!(
        contact(&plan, 23).updated_at,
        ts("2023-04-20T05:30:00.110Z")
    );
    assert_eq!(contact(&plan, 1).created_at, ts("2023-04-01T00:00:00.374Z"));
}

#[test]
fn original_rows_after_request_six_are_two_identities() {
    // docs/behaviour.md §5 #6 with the original ids: 27 became a secondary of 11.
    let body = ORIGINAL.replace(
        "27,717171,biffsucks@hillvalley.edu,,primary",
        "27,717171,biffsucks@hillvalley.edu,11,secondary",
    );
    let plan = plan_csv(&body).unwrap();
    assert_eq!(plan.identities, 2);
    assert_eq!(plan.primaries_changed, 0);
    assert_eq!(
        links(&plan),
        vec![(1, None), (11, None), (23, Some(1)), (27, Some(11))]
    );
}

#[test]
fn csv_columns_in_any_order_and_nulls_as_empty_fields() {
    let text = "\u{feff}deletedAt,updatedAt,createdAt,linkPrecedence,linkedId,email,phoneNumber,id\n\
                ,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,primary,,\" Lorraine@HillValley.EDU \",,1\n\
                \n\
                2024-01-01 00:00:00.123456+00,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,secondary,1,\"\",\"+1 (555) 010\",2\n";
    let rows = read_rows(text.as_bytes(), RowFormat::Csv).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].email.as_ref().unwrap().as_str(),
        "lorraine@hillvalley.edu"
    );
    assert_eq!(rows[0].phone, None);
    assert_eq!(rows[0].linked_id, None);
    assert_eq!(rows[1].line, 4);
    assert_eq!(rows[1].email, None);
    assert_eq!(rows[1].phone.as_ref().unwrap().as_str(), "+1 (555) 010");
    assert_eq!(rows[1].deleted_at, Some(ts("2024-01-01T00:00:00.123Z")));
    // Header only: no rows.
    assert!(
        read_rows(HEADER.as_bytes(), RowFormat::Csv)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn csv_header_errors() {
    let missing = "id,phoneNumber,email,linkPrecedence,createdAt,updatedAt,deletedAt\n";
    let (line, text) = err_line(read_rows(missing.as_bytes(), RowFormat::Csv));
    assert_eq!(line, 1);
    assert!(text.contains("\"linkedId\""), "{text}");

    let unknown = format!("{HEADER},extra\n");
    let (_, text) = err_line(read_rows(unknown.as_bytes(), RowFormat::Csv));
    assert!(text.contains("unknown CSV column \"extra\""), "{text}");

    let twice = format!("{HEADER},id\n");
    let (_, text) = err_line(read_rows(twice.as_bytes(), RowFormat::Csv));
    assert!(text.contains("twice"), "{text}");

    let (line, text) = err_line(read_rows(&b""[..], RowFormat::Csv));
    assert_eq!(line, 1);
    assert!(text.contains("header is missing"), "{text}");

    let short = "1,123456,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n2,1\n";
    let (line, text) = err_line(csv_rows(short));
    assert_eq!(line, 3);
    assert!(text.contains("2 fields"), "{text}");
}

#[test]
fn invalid_values_name_their_line() {
    let good = "1,123456,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n";
    let cases = [
        (
            "2,1,a@b.c,,primary,yesterday,2023-04-01T00:00:00Z,",
            "createdAt",
        ),
        (
            "2,1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-13-01T00:00:00Z,",
            "updatedAt",
        ),
        (
            "2,1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,soon",
            "deletedAt",
        ),
        (
            "2,1,a@@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "email",
        ),
        (
            "2,1,a b@c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "email",
        ),
        (
            "2,12#3,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "phoneNumber",
        ),
        (
            "2,1,a@b.c,,Primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "linkPrecedence",
        ),
        (
            "2,1,a@b.c,,,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "linkPrecedence",
        ),
        (
            "0,1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "id",
        ),
        (
            "-2,1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "id",
        ),
        (
            "x,1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "id",
        ),
        (
            ",1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "id",
        ),
        (
            "2,1,a@b.c,0,secondary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "linkedId",
        ),
        (
            "2,1,a@b.c,1.5,secondary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "linkedId",
        ),
        (
            "2,,,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "neither",
        ),
        (
            "2, , ,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
            "neither",
        ),
    ];
    for (row, needle) in cases {
        let (line, text) = err_line(csv_rows(&format!("{good}{row}\n")));
        assert_eq!(line, 3, "{row}: {text}");
        assert!(text.contains(needle), "{row}: {text}");
    }
    // Not UTF-8.
    let mut bytes = format!("{HEADER}\n{good}").into_bytes();
    bytes.extend_from_slice(b"2,1,\xff@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n");
    let (line, text) = err_line(read_rows(bytes.as_slice(), RowFormat::Csv));
    assert_eq!(line, 3, "{text}");
}

fn jsonl_line(fields: &str) -> String {
    format!(
        "{{\"id\":2,\"linkPrecedence\":\"primary\",\"createdAt\":\"2023-04-01T00:00:00Z\",\
         \"updatedAt\":\"2023-04-01 00:00:00+00\"{fields}}}"
    )
}

#[test]
fn jsonl_values() {
    let text = format!(
        "\u{feff}{}\n\n  \r\n{}\r\n",
        jsonl_line(r#","phoneNumber":123456,"email":null,"linkedId":null"#),
        jsonl_line(
            r#","phoneNumber":" 717171 ","email":"Biff@X.org","deletedAt":"2024-01-01T00:00:00.5Z""#
        )
        .replace("\"id\":2", "\"id\":3")
    );
    let rows = read_rows(text.as_bytes(), RowFormat::Jsonl).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].line, 1);
    assert_eq!(rows[0].phone.as_ref().unwrap().as_str(), "123456");
    assert_eq!(rows[0].email, None);
    assert_eq!(rows[1].line, 4);
    assert_eq!(rows[1].id, 3);
    assert_eq!(rows[1].phone.as_ref().unwrap().as_str(), "717171");
    assert_eq!(rows[1].email.as_ref().unwrap().as_str(), "biff@x.org");
    assert_eq!(rows[1].deleted_at, Some(ts("2024-01-01T00:00:00.500Z")));
    assert!(
        read_rows(&b"\n\n"[..], RowFormat::Jsonl)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn jsonl_errors_name_their_line() {
    let good = jsonl_line(r#","phoneNumber":"1""#);
    let cases = [
        (r#","phoneNumber":1e5"#.to_owned(), "phoneNumber"),
        (r#","phoneNumber":123456.0"#.into(), "phoneNumber"),
        (r#","phoneNumber":-1"#.into(), "phoneNumber"),
        (
            r#","phoneNumber":18446744073709551616"#.into(),
            "phoneNumber",
        ),
        (r#","phoneNumber":true"#.into(), "phoneNumber"),
        (r#","phoneNumber":["1"]"#.into(), "phoneNumber"),
        (r#","email":5"#.into(), "email"),
        (r#","email":"nope""#.into(), "email"),
        (r#","phoneNumber":"1","linkedId":"1""#.into(), "linkedId"),
        (r#","phoneNumber":"1","linkedId":-1"#.into(), "linkedId"),
        (r#","phoneNumber":"1","linkedID":1"#.into(), "unknown key"),
        (r#","phoneNumber":"1","deletedAt":12"#.into(), "deletedAt"),
        (r#","email":null"#.into(), "neither"),
    ];
    for (fields, needle) in cases {
        let text = format!("{good}\n\n{}\n", jsonl_line(&fields));
        let (line, message) = err_line(read_rows(text.as_bytes(), RowFormat::Jsonl));
        assert_eq!(line, 3, "{fields}: {message}");
        assert!(message.contains(needle), "{fields}: {message}");
    }
    let no_id = format!(
        "{good}\n{}\n",
        jsonl_line(r#","phoneNumber":"1""#).replace("\"id\":2,", "")
    );
    let (line, message) = err_line(read_rows(no_id.as_bytes(), RowFormat::Jsonl));
    assert_eq!(
        (line, message.contains("id: is required")),
        (2, true),
        "{message}"
    );
    let float_id = good.replace("\"id\":2", "\"id\":2.0");
    assert_eq!(
        err_line(read_rows(float_id.as_bytes(), RowFormat::Jsonl)).0,
        1
    );
    for junk in ["[1,2]", "{\"id\":", "nope", "\"row\""] {
        let text = format!("{good}\n{junk}\n");
        assert_eq!(
            err_line(read_rows(text.as_bytes(), RowFormat::Jsonl)).0,
            2,
            "{junk}"
        );
    }
    let mut bytes = format!("{good}\n").into_bytes();
    bytes.extend_from_slice(b"{\"id\":\xff}\n");
    assert_eq!(err_line(read_rows(bytes.as_slice(), RowFormat::Jsonl)).0, 2);
}

#[test]
fn dangling_and_duplicate_ids_name_their_line() {
    let (line, text) = err_line(plan_csv(
        "1,1,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
         2,2,b@b,9,secondary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n",
    ));
    assert_eq!(line, 3);
    assert!(text.contains("linkedId 9"), "{text}");

    let (line, text) = err_line(plan_csv(
        "1,1,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
         2,2,b@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
         1,3,c@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n",
    ));
    assert_eq!(line, 4);
    assert!(text.contains("duplicate id 1 (first at line 2)"), "{text}");
}

#[test]
fn racy_duplicate_primaries_are_joined_by_values() {
    let plan = plan_csv(
        "1,555,a@x.y,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
         2,555,b@x.y,,primary,2023-04-01T00:00:01Z,2023-04-01T00:00:01Z,\n\
         3,777,C@X.Y,2,secondary,2023-04-01T00:00:02Z,2023-04-01T00:00:02Z,\n",
    )
    .unwrap();
    assert_eq!(plan.identities, 1);
    assert_eq!(plan.identities_joined_by_values, 1);
    assert_eq!(plan.primaries_changed, 1);
    assert_eq!(links(&plan), vec![(1, None), (2, Some(1)), (3, Some(1))]);
    // The younger primary is demoted and touched; the re-pointed secondary is not.
    assert_eq!(contact(&plan, 2).updated_at, now());
    assert_eq!(contact(&plan, 1).updated_at, ts("2023-04-01T00:00:00Z"));
    assert_eq!(contact(&plan, 3).updated_at, ts("2023-04-01T00:00:02Z"));
    // A file updatedAt later than `now` is kept (never goes backwards).
    let later = plan_import(
        csv_rows(
            "1,555,,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
             2,555,,,primary,2023-04-01T00:00:01Z,2031-01-01T00:00:00Z,\n",
        )
        .unwrap(),
        now(),
    )
    .unwrap();
    assert_eq!(contact(&later, 2).updated_at, ts("2031-01-01T00:00:00Z"));
}

#[test]
fn primary_is_oldest_live_row_and_smaller_id_breaks_ties() {
    // Row 9 is older by createdAt than row 4, so 9 is the primary; 4 is demoted, 9 promoted.
    let plan = plan_csv(
        "4,555,,,primary,2023-04-02T00:00:00Z,2023-04-02T00:00:00Z,\n\
         9,,a@b,4,secondary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n",
    )
    .unwrap();
    assert_eq!(plan.primaries_changed, 2);
    assert_eq!(contact(&plan, 4).updated_at, now());
    assert_eq!(contact(&plan, 9).updated_at, now());
    // Links still point at the smallest id: the graph derives the primary by age itself.
    assert_eq!(links(&plan), vec![(4, None), (9, Some(4))]);

    // Equal createdAt: the smaller id stays primary.
    let plan = plan_csv(
        "8,555,,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
         3,555,,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n",
    )
    .unwrap();
    assert_eq!(plan.identities_joined_by_values, 1);
    assert_eq!(plan.primaries_changed, 1);
    assert_eq!(contact(&plan, 8).updated_at, now());
    assert_eq!(contact(&plan, 3).updated_at, ts("2023-04-01T00:00:00Z"));
    assert_eq!(links(&plan), vec![(3, None), (8, Some(3))]);
}

#[test]
fn deleted_rows_join_by_link_but_not_by_value() {
    let plan = plan_csv(
        "1,,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,2023-05-01T00:00:00Z\n\
         2,,a@b,,primary,2023-04-02T00:00:00Z,2023-04-02T00:00:00Z,\n",
    )
    .unwrap();
    assert_eq!(plan.identities, 2);
    assert_eq!(plan.identities_joined_by_values, 0);
    assert_eq!(plan.primaries_changed, 0);
    assert_eq!(links(&plan), vec![(1, None), (2, None)]);

    // Linked: one identity, whose primary is the live row 2 although deleted row 1 is older.
    let plan = plan_csv(
        "1,,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,2023-05-01T00:00:00Z\n\
         2,,a@b,1,secondary,2023-04-02T00:00:00Z,2023-04-02T00:00:00Z,\n",
    )
    .unwrap();
    assert_eq!(plan.identities, 1);
    assert_eq!(plan.identities_joined_by_values, 0);
    assert_eq!(plan.primaries_changed, 2);
    assert_eq!(links(&plan), vec![(1, None), (2, Some(1))]);
    assert_eq!(contact(&plan, 1).updated_at, now());

    // An identity with no live row: its oldest row is primary, nothing changes.
    let plan = plan_csv(
        "1,,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,2023-05-01T00:00:00Z\n\
         2,,c@b,1,secondary,2023-04-02T00:00:00Z,2023-04-02T00:00:00Z,2023-05-01T00:00:00Z\n",
    )
    .unwrap();
    assert_eq!(plan.primaries_changed, 0);
    assert_eq!(contact(&plan, 1).updated_at, ts("2023-04-01T00:00:00Z"));
}

fn sample_rows() -> Vec<ContactRow> {
    let mut rows: Vec<ContactRow> = csv_rows(ORIGINAL)
        .unwrap()
        .iter()
        .map(ImportRow::to_contact_row)
        .collect();
    rows.push(ContactRow {
        id: 40,
        phone_number: None,
        email: Email::parse("\"odd,one\"@x.y").unwrap(),
        linked_id: Some(11),
        link_precedence: LinkPrecedence::Secondary,
        created_at: ts("2024-01-01T00:00:00.001Z"),
        updated_at: ts("2024-01-02T00:00:00.002Z"),
        deleted_at: Some(ts("2024-01-03T00:00:00.003Z")),
    });
    rows.push(ContactRow {
        id: 41,
        phone_number: Phone::parse("+1 (555) 010-9999").unwrap(),
        email: None,
        linked_id: None,
        link_precedence: LinkPrecedence::Primary,
        created_at: ts("2024-01-01T00:00:00Z"),
        updated_at: ts("2024-01-01T00:00:00Z"),
        deleted_at: None,
    });
    rows
}

#[test]
fn export_round_trips_through_read_rows() {
    for format in [RowFormat::Csv, RowFormat::Jsonl] {
        let rows = sample_rows();
        let mut out = Vec::new();
        assert_eq!(write_rows(&mut out, format, rows.clone()).unwrap(), 6);
        let back: Vec<ContactRow> = read_rows(out.as_slice(), format)
            .unwrap()
            .iter()
            .map(ImportRow::to_contact_row)
            .collect();
        assert_eq!(back, rows, "{format:?}");
        assert_eq!(detect_format(Path::new("export"), &out), format);
    }
}

#[test]
fn export_shapes() {
    let rows = sample_rows();
    let mut out = Vec::new();
    write_rows(&mut out, RowFormat::Csv, rows.clone()).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], HEADER);
    assert_eq!(
        lines[1],
        "1,123456,lorraine@hillvalley.edu,,primary,2023-04-01T00:00:00.374Z,2023-04-01T00:00:00.374Z,"
    );
    assert_eq!(
        lines[5],
        "40,,\"\"\"odd,one\"\"@x.y\",11,secondary,2024-01-01T00:00:00.001Z,2024-01-02T00:00:00.002Z,2024-01-03T00:00:00.003Z"
    );

    let mut out = Vec::new();
    write_rows(&mut out, RowFormat::Jsonl, rows.into_iter().take(2)).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text.lines().nth(1).unwrap(),
        r#"{"id":23,"phoneNumber":"123456","email":"mcfly@hillvalley.edu","linkedId":1,"linkPrecedence":"secondary","createdAt":"2023-04-20T05:30:00.110Z","updatedAt":"2023-04-20T05:30:00.110Z","deletedAt":null}"#
    );
    assert!(text.ends_with("}\n"));
    assert_eq!(write_rows(Vec::new(), RowFormat::Csv, []).unwrap(), 0);
}
