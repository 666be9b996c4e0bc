//! Moving the end of the log ([`super::Wal::reposition`]): what a Raft log needs beyond
//! appending (docs/format.md, "Cluster").
//!
//! Runs on the writer thread after the records queued before the request are written. The
//! active segment is finished as at a rotation (its zeros cut, fsynced); then, to drop a
//! suffix, every segment starting at or after the new LSN is removed and the segment holding it
//! is cut at that record's offset and fsynced; finally a new segment named after the new LSN
//! becomes the active one and the durable LSN is set just below it. A crash in the middle
//! leaves either the old end (the new segment not yet created) or the new one: recovery sees
//! complete segments either way.

use std::sync::atomic::Ordering;

use super::format::{HEADER_LEN, SegmentFile, create_segment, read_record};
use super::writer::Writer;
use super::{Lsn, WalError, io_err, sync_dir};

impl Writer {
    /// Makes `next` the LSN of the next record (module docs).
    pub(super) fn reposition(&mut self, next: Lsn) -> Result<(), WalError> {
        self.release_preallocation()?;
        if self.dirty {
            self.sync()?;
        }
        let storage = std::sync::Arc::clone(&self.shared.storage);
        let dir = self.shared.dir.clone();
        {
            let mut segments = self.shared.segments.lock();
            // Segments that hold only records to drop (or nothing at all) go.
            while let Some(last) = segments.back() {
                if last.first_lsn < next {
                    break;
                }
                match storage.remove_file(&last.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&last.path)(e)),
                }
                segments.pop_back();
            }
            // The segment holding `next`, if any, ends just before it.
            if let Some(last) = segments.back() {
                cut_before(&*storage, last, next)?;
            }
        }
        sync_dir(&*storage, &dir)?;
        let active = create_segment(&*storage, &dir, next)?;
        self.shared.segments.lock().push_back(SegmentFile {
            first_lsn: next,
            path: active.path.clone(),
        });
        tracing::info!(next, segment = %active.path.display(), "log repositioned");
        self.active = active;
        self.dirty = false;
        {
            let mut q = self.shared.queue.lock();
            q.next_lsn = next;
            q.first_lsn = next;
        }
        self.shared.durable.send_modify(|d| {
            if !d.failed {
                d.lsn = next - 1;
                self.shared.durable_lsn.store(d.lsn, Ordering::Release);
            }
        });
        Ok(())
    }
}

/// Cuts the segment `segment` just before the record with LSN `next` (nothing when it holds no
/// such record) and fsyncs it.
fn cut_before(
    storage: &dyn crate::storage::Storage,
    segment: &SegmentFile,
    next: Lsn,
) -> Result<(), WalError> {
    let data = storage.read(&segment.path).map_err(io_err(&segment.path))?;
    let mut offset = HEADER_LEN;
    while offset < data.len() {
        let Ok((record, _)) = read_record(&data, offset) else {
            break;
        };
        if record.lsn >= next {
            break;
        }
        offset += record.size;
    }
    if offset < data.len() {
        let mut file = storage
            .open_write(&segment.path, false)
            .map_err(io_err(&segment.path))?;
        file.set_len(offset as u64)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&segment.path))?;
    }
    Ok(())
}
