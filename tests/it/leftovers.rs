//! What crashes leave in a data directory (docs/behaviour.md §7, §8), through the real binary:
//! the temp files of snapshots interrupted by `kill -9` are removed at the next start (and
//! logged), and an import killed before its snapshot is published is an "interrupted import":
//! `check` exits 1 naming it, `serve` and `export` refuse it, and `import` reuses the directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{data_file, idrecon};

const HEADER: &str = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";

/// The names of the snapshot temp files in `dir/snapshots`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("snapshots"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.contains(".snap.tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `idrecon serve` on `dir` until it reports `serving` (then kills it) or exits by itself
/// (at most 60 s); returns its exit status (`None` when it was serving) and its stderr lines.
fn serve_until_ready(dir: &Path) -> (Option<std::process::ExitStatus>, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idrecon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let serving = line.contains("serving");
                lines.push(line);
                if serving {
                    let _ = child.kill();
                    let _ = child.wait();
                    return (None, lines);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("serve waited for");
                return (Some(status), lines);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve neither served nor exited within 60 s: {lines:?}");
        }
    }
}

#[test]
fn start_up_removes_the_temp_files_crashed_snapshots_left_and_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = idrecon(&[
        "import",
        "--data-dir",
        data.to_str().unwrap(),
        data_file("spec-rows.csv").to_str().unwrap(),
    ]);
    assert!(output.status.success());
    // What a `kill -9` during each of three snapshots leaves: a temp file per snapshot, named
    // by the writer (`{lsn:020}.snap.tmp.{pid}.{counter}`), as large as the snapshot would be.
    for (lsn, pid) in [(0u64, 4101u32), (0, 4102), (0, 4103)] {
        let name = format!("{lsn:020}.snap.tmp.{pid}.0");
        std::fs::write(data.join("snapshots").join(name), vec![7u8; 1 << 20]).unwrap();
    }
    assert_eq!(temp_files(&data).len(), 3);
    let (exited, lines) = serve_until_ready(&data);
    assert_eq!(exited, None, "serve did not start: {lines:?}");
    assert_eq!(temp_files(&data), Vec::<String>::new(), "temp files left");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("removed temp files") && l.contains("files=3")),
        "no log line about the removal: {lines:?}"
    );
    // The published snapshot is untouched: the imported rows are still there.
    let check = idrecon(&["check", "--data-dir", data.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(stdout.contains("state: 4 contacts"), "{stdout}");
}

/// Writes a CSV of `rows` unrelated primaries to `file`.
fn write_rows(file: &Path, rows: u64) {
    let mut text = String::with_capacity(rows as usize * 90 + 100);
    text.push_str(HEADER);
    text.push('\n');
    for id in 1..=rows {
        text.push_str(&format!(
            "{id},{},c{id}@leftover.example,,primary,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z,\n",
            1_000_000 + id
        ));
    }
    std::fs::write(file, text).unwrap();
}

/// Starts `idrecon import` of `file` into `data` and kills it (SIGKILL) as soon as its
/// snapshot's temp file appears, before the snapshot is renamed into place. Returns false when
/// the import finished before the temp file was seen.
fn import_killed_during_its_snapshot(data: &Path, file: &Path) -> bool {
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_idrecon"))
        .args(["import", "--data-dir"])
        .arg(data)
        .arg(file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("import starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if !temp_files(data).is_empty() {
            child.kill().expect("kill");
            child.wait().expect("wait");
            return true;
        }
        if child.try_wait().expect("try_wait").is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
    }
}

#[test]
fn an_import_killed_before_its_snapshot_is_published_is_refused_reported_and_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("rows.csv");
    // The snapshot must take long enough to be caught while it is written: a larger file on
    // each attempt.
    let mut rows = 150_000;
    let mut caught = false;
    for _ in 0..3 {
        write_rows(&file, rows);
        let _ = std::fs::remove_dir_all(&data);
        if import_killed_during_its_snapshot(&data, &file) {
            caught = true;
            break;
        }
        rows *= 2;
    }
    assert!(
        caught,
        "the import always finished before it could be killed"
    );
    assert!(!temp_files(&data).is_empty());

    let check = idrecon(&["check", "--data-dir", data.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "check: {stdout}");
    assert!(stdout.contains("interrupted import"), "check: {stdout}");

    let (exited, lines) = serve_until_ready(&data);
    let status = exited.unwrap_or_else(|| panic!("serve started on it: {lines:?}"));
    assert!(!status.success());
    assert!(
        lines.iter().any(|l| l.contains("interrupted import")),
        "serve: {lines:?}"
    );

    let export = idrecon(&["export", "--data-dir", data.to_str().unwrap()]);
    assert!(!export.status.success());
    assert!(String::from_utf8_lossy(&export.stderr).contains("interrupted import"));

    // `import` reuses the directory: the temp file goes, the import completes.
    let again = idrecon(&[
        "import",
        "--data-dir",
        data.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(temp_files(&data).is_empty());
    let check = idrecon(&["check", "--data-dir", data.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("state: {rows} contacts in {rows} identities")),
        "{stdout}"
    );
}
