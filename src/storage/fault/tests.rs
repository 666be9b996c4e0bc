//! Unit tests of `storage::fault`.

use super::*;

#[test]
fn crash_keeps_only_what_was_fsynced() {
    let fs = FaultFs::new();
    let dir = Path::new("/d");
    fs.create_dir_all(dir).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    let a = dir.join("a");
    let mut f = fs.open_append(&a, true).unwrap();
    f.write_all(b"one").unwrap();
    f.sync_data().unwrap();
    // File synced but its name not: gone after a crash.
    let fs2 = fs.crash();
    assert_eq!(fs2.read(&a).unwrap_err().kind(), io::ErrorKind::NotFound);
    assert!(f.write_all(b"x").is_err(), "old handles are dead");
    assert!(fs.read(&a).is_err(), "old views are dead");

    let mut f = fs2.open_append(&a, true).unwrap();
    f.write_all(b"one").unwrap();
    f.sync_data().unwrap();
    fs2.sync_dir(dir).unwrap();
    f.write_all(b"two").unwrap();
    fs2.rename(&a, &dir.join("b")).unwrap();
    let fs3 = fs2.crash();
    assert_eq!(fs3.read(&a).unwrap(), b"one");
    assert!(fs3.read(&dir.join("b")).is_err());
}

#[test]
fn a_directory_lock_excludes_until_dropped_or_crashed() {
    let fs = FaultFs::new();
    let dir = Path::new("/d");
    assert!(fs.lock_dir(dir).is_err(), "no such directory");
    fs.create_dir_all(dir).unwrap();
    let held = fs.lock_dir(dir).unwrap().expect("free");
    assert!(fs.lock_dir(dir).unwrap().is_none(), "held");
    drop(held);
    let held = fs.lock_dir(dir).unwrap().expect("released on drop");
    // A crash ends the process that held it; its guard, dropped later, must not release
    // the lock of the restarted process.
    let fs2 = fs.crash();
    fs2.create_dir_all(dir).unwrap();
    let again = fs2.lock_dir(dir).unwrap().expect("released by the crash");
    drop(held);
    assert!(
        fs2.lock_dir(dir).unwrap().is_none(),
        "still held after a stale drop"
    );
    drop(again);
}

#[test]
fn faults_fire_once_at_the_nth_op() {
    let fs = FaultFs::new();
    fs.create_dir_all(Path::new("/d")).unwrap();
    let mut f = fs.open_append(Path::new("/d/f"), true).unwrap();
    fs.fail(OpKind::Write, 2, Effect::ShortWrite);
    fs.fail(OpKind::Sync, 1, Effect::Eio);
    f.write_all(b"ab").unwrap();
    assert!(f.write_all(b"cdef").is_err());
    assert_eq!(fs.read(Path::new("/d/f")).unwrap(), b"abcd");
    assert!(f.sync_data().is_err());
    // The retry "succeeds" but the data is gone (fsyncgate).
    f.sync_data().unwrap();
    fs.sync_dir(Path::new("/d")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    let fs = fs.crash();
    assert_eq!(fs.read(Path::new("/d/f")).unwrap(), b"");
    assert_eq!(fs.injected(), 2);
    fs.fail(OpKind::Write, 1, Effect::Enospc);
    let mut f = fs.open_append(Path::new("/d/f"), false).unwrap();
    assert_eq!(f.write_all(b"x").unwrap_err().raw_os_error(), Some(28));
    fs.stop_after(1);
    assert!(f.write_all(b"y").is_err());
    assert!(fs.list_files(Path::new("/d")).is_err());
}
