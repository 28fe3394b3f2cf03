//! The journal: where a call's record is written before its answer leaves, when the call's tier
//! may wait for the store (`[audit] acknowledge = "journal"`), so the host does not wait for the
//! store's commit. The writer commits the record behind it as usual.
//!
//! A record in the journal survives a killed gateway as a committed SQLite transaction with
//! `synchronous=NORMAL` does (the bytes are in the operating system's hands; not a power cut).
//! The journal sits beside this process's spool (`<spool>.journal`); at start, whatever a
//! stopped process left in it is moved into the spool and replayed into the store like any
//! spooled record (records the store already has are skipped). Once a file of it has grown past
//! [`ROTATE_BYTES`] it is set aside as `<spool>.journal.old` and a fresh one begun; the old one
//! is deleted once every record in it is in the store or the spool.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use portcullis_audit::{Entry, Partition};

use super::spool;

/// A journal file is set aside and a new one begun past this size.
pub const ROTATE_BYTES: u64 = 4 * 1024 * 1024;

/// Which journal file a record went to: the writer says when it is settled.
pub type Generation = u64;

/// This process's journal.
pub struct Journal {
    path: PathBuf,
    old: PathBuf,
    rotate_bytes: u64,
    state: Mutex<State>,
}

struct State {
    file: std::fs::File,
    /// Bytes in the current file.
    bytes: u64,
    generation: Generation,
    /// Records in the current file that are in neither the store nor the spool yet.
    unsettled: u64,
    /// The file set aside, while records in it are unsettled: its generation and their number.
    old: Option<(Generation, u64)>,
    /// A write failed part way: the next record starts on a line of its own.
    torn: bool,
    /// Closed (its file deleted when settled): writes are refused.
    closed: bool,
}

impl Journal {
    /// Begins an empty journal beside `spool` (the spool took in what an earlier one left).
    pub fn open(spool: &Path) -> io::Result<Journal> {
        Self::with_rotation(spool, ROTATE_BYTES)
    }

    fn with_rotation(spool: &Path, rotate_bytes: u64) -> io::Result<Journal> {
        let path = spool::journal_path(spool);
        let file = create(&path)?;
        Ok(Journal {
            old: spool::old_journal_path(spool),
            path,
            rotate_bytes,
            state: Mutex::new(State {
                file,
                bytes: 0,
                generation: 0,
                unsettled: 0,
                old: None,
                torn: false,
                closed: false,
            }),
        })
    }

    /// The current journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record (one `write`, blocking, under the lock: a page-cache write takes
    /// microseconds; so does the rename that sets a file aside); the answer says which file it
    /// went to.
    pub fn write(&self, partition: Partition, entry: &Entry) -> io::Result<Generation> {
        let mut line = Vec::with_capacity(entry.body.len() + 256);
        spool::line(partition, entry, &mut line)?;
        let mut state = self.state.lock().map_err(|_| io::Error::other("the audit journal is poisoned"))?;
        if state.closed {
            return Err(io::Error::other("the audit journal is closed"));
        }
        if state.bytes >= self.rotate_bytes && (state.old.is_none() || state.unsettled == 0) {
            self.rotate(&mut state)?;
        }
        let written = if state.torn {
            let mut text = Vec::with_capacity(line.len() + 1);
            text.push(b'\n');
            text.extend_from_slice(&line);
            state.file.write_all(&text).map(|()| text.len())
        } else {
            state.file.write_all(&line).map(|()| line.len())
        };
        match written {
            Ok(n) => {
                state.torn = false;
                state.bytes += n as u64;
                state.unsettled += 1;
                Ok(state.generation)
            }
            Err(e) => {
                state.torn = true;
                Err(e)
            }
        }
    }

    /// The writer: these records (by the file each went to) are in the store or the spool now.
    /// A set-aside file all of whose records are settled is deleted.
    pub fn settle(&self, generations: impl IntoIterator<Item = Generation>) {
        let Ok(mut state) = self.state.lock() else { return };
        for generation in generations {
            if generation == state.generation {
                state.unsettled = state.unsettled.saturating_sub(1);
            } else if let Some((old, n)) = state.old.as_mut()
                && *old == generation
            {
                *n = n.saturating_sub(1);
            }
        }
        if state.old.is_some_and(|(_, n)| n == 0) {
            match std::fs::remove_file(&self.old) {
                Ok(()) => state.old = None,
                Err(e) if e.kind() == io::ErrorKind::NotFound => state.old = None,
                Err(e) => tracing::warn!(error = %e, journal = %self.old.display(), "audit journal cannot be deleted"),
            }
        }
    }

    /// At close: deletes the journal's files when every record in them is settled (else they are
    /// left for the next start to take into the spool).
    pub fn close(&self) {
        let Ok(mut state) = self.state.lock() else { return };
        state.closed = true;
        if state.unsettled == 0 && state.old.is_none() {
            let _ = std::fs::remove_file(&self.path);
        } else {
            tracing::warn!(journal = %self.path.display(), "audit records left in the journal; the next start replays them");
        }
    }

    /// Sets the current file aside and begins a new one.
    fn rotate(&self, state: &mut State) -> io::Result<()> {
        if state.unsettled == 0 {
            // Nothing in it is needed any more: start it over.
            state.file.set_len(0)?;
            state.bytes = 0;
            return Ok(());
        }
        std::fs::rename(&self.path, &self.old)?;
        state.file = create(&self.path)?;
        state.old = Some((state.generation, state.unsettled));
        state.generation += 1;
        state.unsettled = 0;
        state.bytes = 0;
        state.torn = false;
        Ok(())
    }
}

/// A new, empty journal file, appended to.
fn create(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(path)?;
    std::fs::OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::spool::Spool;

    fn entry(n: i64) -> Entry {
        Entry {
            time_ms: n,
            kind: "call".to_owned(),
            correlation: format!("{n:032x}"),
            request: format!("{n:016x}"),
            parent: String::new(),
            principal: "alice".to_owned(),
            server: "demo".to_owned(),
            item: "echo".to_owned(),
            outcome: "ok".to_owned(),
            body: "{\"arguments\":{\"text\":\"ü\"}}".to_owned(),
        }
    }

    #[tokio::test]
    async fn what_a_stopped_process_left_in_its_journal_is_taken_into_the_spool() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit.spool");
        let spool = Spool::open(&path).unwrap_or_else(|e| panic!("{e}"));
        // Small files, so the journal is set aside while records in it are unsettled.
        let journal = Journal::with_rotation(spool.path(), 300).unwrap_or_else(|e| panic!("{e}"));
        let mut generations = Vec::new();
        for n in 1..=6 {
            generations.push(journal.write(Partition::Calls, &entry(n)).unwrap_or_else(|e| panic!("{e}")));
        }
        assert!(generations.first() != generations.last(), "the journal was set aside: {generations:?}");
        assert!(spool::old_journal_path(spool.path()).exists());
        // The first three reached the store; then the process is killed.
        journal.settle(generations[..3].iter().copied());
        drop(journal);
        drop(spool);
        let spool = Spool::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let times: Vec<i64> =
            spool.read().await.unwrap_or_else(|e| panic!("{e}")).iter().map(|r| r.entry.time_ms).collect();
        // Settled records may come back too (the replay skips what the store has); none is missing.
        for n in 4..=6 {
            assert!(times.contains(&n), "record {n} is in the spool: {times:?}");
        }
        assert!(!spool::journal_path(spool.path()).exists() && !spool::old_journal_path(spool.path()).exists());
        let read = spool.read().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read.iter().find(|r| r.entry.time_ms == 4).map(|r| r.entry.clone()),
            Some(entry(4)),
            "read back whole"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn after_a_write_that_fails_part_way_the_next_record_starts_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit.spool");
        let spool = Spool::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let journal = Journal::open(spool.path()).unwrap_or_else(|e| panic!("{e}"));
        journal.write(Partition::Calls, &entry(1)).unwrap_or_else(|e| panic!("{e}"));
        // The disk fills in the middle of record 2: part of its line is in the file, the rest
        // cannot be written (`/dev/full` refuses every write with ENOSPC).
        let mut half = Vec::new();
        spool::line(Partition::Calls, &entry(2), &mut half).unwrap_or_else(|e| panic!("{e}"));
        half.truncate(half.len() / 2);
        {
            use std::io::Write as _;
            let mut state = journal.state.lock().unwrap_or_else(|e| panic!("{e}"));
            state.file.write_all(&half).unwrap_or_else(|e| panic!("{e}"));
            state.file = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap_or_else(|e| panic!("{e}"));
        }
        let failed = journal.write(Partition::Calls, &entry(2));
        assert!(failed.is_err_and(|e| e.kind() == io::ErrorKind::StorageFull), "the write fails");
        // Space again: the next record must not run on from the torn half line.
        journal.state.lock().unwrap_or_else(|e| panic!("{e}")).file =
            std::fs::OpenOptions::new().append(true).open(journal.path()).unwrap_or_else(|e| panic!("{e}"));
        journal.write(Partition::Calls, &entry(3)).unwrap_or_else(|e| panic!("{e}"));
        let mut expected = Vec::new();
        spool::line(Partition::Calls, &entry(1), &mut expected).unwrap_or_else(|e| panic!("{e}"));
        expected.extend_from_slice(&half);
        expected.push(b'\n');
        spool::line(Partition::Calls, &entry(3), &mut expected).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read(journal.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(String::from_utf8_lossy(&text), String::from_utf8_lossy(&expected));
        // The process stops; the next start takes the journal in: records 1 and 3 whole, the
        // torn half kept aside, record 2 nowhere (its caller was told the write failed).
        drop(journal);
        drop(spool);
        let spool = Spool::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let read = spool.read().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(), [entry(1), entry(3)]);
        let bad = std::fs::read(dir.path().join("audit.spool.bad")).unwrap_or_default();
        assert_eq!(bad.strip_suffix(b"\n"), Some(half.as_slice()), "the torn half is kept aside as it was");
    }

    #[test]
    fn a_settled_journal_is_deleted_at_close_and_a_set_aside_one_once_settled() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = dir.path().join("audit.spool");
        let journal = Journal::with_rotation(&spool, 300).unwrap_or_else(|e| panic!("{e}"));
        let mut generations = Vec::new();
        for n in 1..=6 {
            generations.push(journal.write(Partition::Calls, &entry(n)).unwrap_or_else(|e| panic!("{e}")));
        }
        let old = spool::old_journal_path(&spool);
        assert!(old.exists());
        let first = generations[0];
        journal.settle(generations.iter().copied().filter(|g| *g == first));
        assert!(!old.exists(), "every record of the set-aside file is settled: it goes");
        journal.settle(generations.iter().copied().filter(|g| *g != first));
        journal.close();
        assert!(!journal.path().exists(), "a fully settled journal is deleted at close");
    }

    #[test]
    fn a_file_with_nothing_unsettled_is_started_over_and_a_closed_journal_takes_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = dir.path().join("audit.spool");
        let journal = Journal::with_rotation(&spool, 100).unwrap_or_else(|e| panic!("{e}"));
        let first = journal.write(Partition::Calls, &entry(1)).unwrap_or_else(|e| panic!("{e}"));
        journal.settle([first]);
        // Past the size, with nothing unsettled: the same file, emptied.
        let second = journal.write(Partition::Calls, &entry(2)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, second, "not set aside");
        assert!(!spool::old_journal_path(&spool).exists());
        let text = std::fs::read_to_string(journal.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!text.contains(&format!("{:032x}", 1)) && text.contains(&format!("{:032x}", 2)), "{text}");
        journal.settle([second]);
        journal.close();
        assert!(journal.write(Partition::Calls, &entry(3)).is_err(), "a closed journal refuses records");
        assert!(!journal.path().exists());
    }

    #[test]
    fn a_journal_with_unsettled_records_stays_at_close() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let spool = dir.path().join("audit.spool");
        let journal = Journal::open(&spool).unwrap_or_else(|e| panic!("{e}"));
        journal.write(Partition::Calls, &entry(1)).unwrap_or_else(|e| panic!("{e}"));
        journal.close();
        let text = std::fs::read_to_string(journal.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains(&format!("{:032x}", 1)), "{text}");
    }
}
