//! The local spool: where audit records wait, synced to disk, while the store cannot take them.
//!
//! One process owns a spool file at a time (a lock on `<spool>.lock`); a second process started
//! from the same configuration (several `portcullis stdio` hosts, say) gets `<spool>.<pid>` of its
//! own, and any spool whose owner is gone is taken over at start. Appends only ever add lines
//! (each after a newline, so a line torn by a crash stays alone); the file is replaced
//! atomically (written aside, synced, renamed); lines that cannot be read are moved to
//! `<spool>.bad`, never dropped.

use std::io;
use std::path::{Path, PathBuf};

use portcullis_audit::{Entry, Partition};
use tokio::io::AsyncWriteExt;

/// One spooled record.
#[derive(Debug, Clone)]
pub struct Spooled {
    pub partition: Partition,
    pub entry: Entry,
}

/// This process's spool.
pub struct Spool {
    path: PathBuf,
    /// Held for the process's life: the lock that makes the spool ours.
    _lock: std::fs::File,
    /// Bytes in the file (0: nothing waits).
    len: u64,
}

impl Spool {
    /// Opens this process's spool at `path` (or beside it, when another live process owns it),
    /// taking over the spools of processes that are gone.
    pub fn open(path: &Path) -> io::Result<Spool> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let (own, lock) = match try_lock(&lock_path(path))? {
            Some(lock) => (path.to_owned(), lock),
            None => {
                let own = sibling(path, &std::process::id().to_string());
                let lock = try_lock(&lock_path(&own))?
                    .ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, format!("{} is locked", own.display())))?;
                (own, lock)
            }
        };
        let mut spool = Spool { len: std::fs::metadata(&own).map(|m| m.len()).unwrap_or(0), path: own, _lock: lock };
        // What this spool's journal still held when its process stopped.
        let own = spool.path.clone();
        spool.take_journals(&own)?;
        spool.adopt_orphans(path)?;
        Ok(spool)
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether records wait in the spool.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends records and syncs them; refuses when the spool would exceed `max_bytes`.
    pub async fn append(&mut self, records: &[Spooled], max_bytes: u64) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let text = lines(records)?;
        if self.len + text.len() as u64 > max_bytes {
            return Err(io::Error::other(format!("the spool would exceed {max_bytes} bytes")));
        }
        let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&self.path).await?;
        file.write_all(&text).await?;
        file.sync_data().await?;
        self.len += text.len() as u64;
        Ok(())
    }

    /// Every record in the spool, in order; unreadable lines are moved to `<spool>.bad`.
    pub async fn read(&self) -> io::Result<Vec<Spooled>> {
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
            match parse(line) {
                Some(s) => out.push(s),
                None => {
                    bad.extend_from_slice(line);
                    bad.push(b'\n');
                }
            }
        }
        if !bad.is_empty() {
            tracing::error!(spool = %self.path.display(), "audit spool: unreadable lines moved to the .bad file");
            let mut file =
                tokio::fs::OpenOptions::new().create(true).append(true).open(sibling(&self.path, "bad")).await?;
            file.write_all(&bad).await?;
            file.sync_data().await?;
        }
        Ok(out)
    }

    /// Replaces the spool's content with `records` (none: empties it), atomically.
    pub async fn replace(&mut self, records: &[Spooled]) -> io::Result<()> {
        let text = lines(records)?;
        let aside = sibling(&self.path, "tmp");
        let mut file = tokio::fs::File::create(&aside).await?;
        file.write_all(&text).await?;
        file.sync_data().await?;
        drop(file);
        tokio::fs::rename(&aside, &self.path).await?;
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::File::open(dir).await?.sync_all().await?;
        }
        self.len = text.len() as u64;
        Ok(())
    }

    /// Appends the spools (and journals) of processes that are gone (their lock is free) to this one.
    fn adopt_orphans(&mut self, base: &Path) -> io::Result<()> {
        let (Some(dir), Some(name)) = (base.parent(), base.file_name().and_then(|n| n.to_str())) else {
            return Ok(());
        };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let prefix = format!("{name}.");
        // `<spool>.<pid>`, or only its journal when that process never spooled.
        let mut orphans = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let file_name = entry.file_name();
            let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
            let pid = rest.strip_suffix(".journal").or_else(|| rest.strip_suffix(".journal.old")).unwrap_or(rest);
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let orphan = sibling(base, pid);
            if orphan != self.path {
                orphans.insert(orphan);
            }
        }
        for orphan in orphans {
            let Some(lock) = try_lock(&lock_path(&orphan))? else { continue };
            self.take(&orphan)?;
            self.take_journals(&orphan)?;
            drop(lock);
            let _ = std::fs::remove_file(lock_path(&orphan));
        }
        Ok(())
    }

    /// Takes in the journal files beside the spool at `spool` (this one's, or a stopped process's).
    fn take_journals(&mut self, spool: &Path) -> io::Result<()> {
        self.take(&old_journal_path(spool))?;
        self.take(&journal_path(spool))
    }

    /// Appends what the file at `from` holds to this spool, synced, and deletes the file.
    fn take(&mut self, from: &Path) -> io::Result<()> {
        let content = match std::fs::read(from) {
            Ok(content) => content,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !content.iter().all(u8::is_ascii_whitespace) {
            use std::io::Write as _;
            let mut ours = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
            ours.write_all(b"\n")?;
            ours.write_all(&content)?;
            ours.sync_data()?;
            self.len += content.len() as u64 + 1;
            tracing::info!(from = %from.display(), "audit records left by a stopped process taken into the spool");
        }
        std::fs::remove_file(from)
    }
}

/// The journal beside the spool at `spool`.
pub(super) fn journal_path(spool: &Path) -> PathBuf {
    sibling(spool, "journal")
}

/// Where the journal beside `spool` is set aside.
pub(super) fn old_journal_path(spool: &Path) -> PathBuf {
    sibling(spool, "journal.old")
}

/// One record as a spool (or journal) line, ending in a newline:
/// `{"partition":…,"entry":{…every field but the body…},"body":<the body>}`, the body written as
/// the JSON text it is (an entry's body is JSON object text, written by `serde_json`), not
/// escaped again as a string: escaping it was a third of the journal write's cost per call. The
/// reader takes it back byte for byte, and at any depth (serde_json's skip of a raw value keeps
/// no recursion limit). A body holding a newline (raw JSON from a host may be pretty-printed)
/// cannot sit in one line as it is; it goes as a string inside the entry, the form older lines
/// have, which the reader takes too (and so does anything that is not object text). A build from
/// before this form cannot read it: going back to one with records left in the journal or spool
/// moves them to the `.bad` file instead of replaying them.
pub(super) fn line(partition: Partition, entry: &Entry, out: &mut Vec<u8>) -> io::Result<()> {
    /// The entry without its body, fields in [`Entry`]'s order.
    #[derive(serde::Serialize)]
    struct Head<'a> {
        time_ms: i64,
        kind: &'a str,
        correlation: &'a str,
        request: &'a str,
        parent: &'a str,
        principal: &'a str,
        server: &'a str,
        item: &'a str,
        outcome: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Line<'a> {
        partition: &'a str,
        entry: &'a Entry,
    }
    // Every field by name (no `..`): a field added to `Entry` must be added to the line too.
    let Entry { time_ms, kind, correlation, request, parent, principal, server, item, outcome, body } = entry;
    let raw = body.as_bytes();
    // The raw form only for object text (`{` … `}`, which rules out an empty body, `null` and
    // surrounding whitespace, none of which would read back as written) without a newline.
    if raw.first() != Some(&b'{') || raw.last() != Some(&b'}') || raw.contains(&b'\n') {
        serde_json::to_writer(&mut *out, &Line { partition: partition.as_str(), entry }).map_err(io::Error::other)?;
    } else {
        // Bodies are written by serde_json; a test build checks that this one is one JSON value.
        debug_assert!(
            serde_json::from_str::<&serde_json::value::RawValue>(body).is_ok_and(|v| v.get().len() == body.len()),
            "an audit body that is not one JSON object: {body}"
        );
        out.extend_from_slice(b"{\"partition\":");
        serde_json::to_writer(&mut *out, partition.as_str()).map_err(io::Error::other)?;
        out.extend_from_slice(b",\"entry\":");
        let head = Head { time_ms: *time_ms, kind, correlation, request, parent, principal, server, item, outcome };
        serde_json::to_writer(&mut *out, &head).map_err(io::Error::other)?;
        out.extend_from_slice(b",\"body\":");
        out.extend_from_slice(raw);
        out.push(b'}');
    }
    out.push(b'\n');
    Ok(())
}

fn lines(records: &[Spooled]) -> io::Result<Vec<u8>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    // Each record starts on a line of its own, even after a line a crash tore.
    let mut text = vec![b'\n'];
    for r in records {
        line(r.partition, &r.entry, &mut text)?;
    }
    Ok(text)
}

/// One line back as a record (either form [`line`] writes); `None` when it cannot be read.
fn parse(line: &[u8]) -> Option<Spooled> {
    /// The entry as a line holds it: its body inside (the string form) or beside it (raw).
    #[derive(serde::Deserialize)]
    struct Held {
        time_ms: i64,
        kind: String,
        correlation: String,
        request: String,
        parent: String,
        principal: String,
        server: String,
        item: String,
        outcome: String,
        #[serde(default)]
        body: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        partition: std::borrow::Cow<'a, str>,
        entry: Held,
        #[serde(borrow, default)]
        body: Option<&'a serde_json::value::RawValue>,
    }
    let line: Line<'_> = serde_json::from_str(std::str::from_utf8(line).ok()?).ok()?;
    let partition = Partition::parse(&line.partition)?;
    let e = line.entry;
    let body = match (e.body, line.body) {
        (Some(body), None) => body,
        (None, Some(raw)) => raw.get().to_owned(),
        _ => return None,
    };
    let entry = Entry {
        time_ms: e.time_ms,
        kind: e.kind,
        correlation: e.correlation,
        request: e.request,
        parent: e.parent,
        principal: e.principal,
        server: e.server,
        item: e.item,
        outcome: e.outcome,
        body,
    };
    Some(Spooled { partition, entry })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

fn lock_path(spool: &Path) -> PathBuf {
    sibling(spool, "lock")
}

/// The lock file locked for this process, or `None` when another process holds it.
fn try_lock(path: &Path) -> io::Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64) -> Spooled {
        Spooled {
            partition: Partition::Calls,
            entry: Entry {
                time_ms: n,
                kind: "call".to_owned(),
                correlation: format!("{n:032x}"),
                request: format!("{n:016x}"),
                parent: String::new(),
                principal: "ünïcode".to_owned(),
                server: "s".to_owned(),
                item: "t".to_owned(),
                outcome: "ok".to_owned(),
                body: "{}".to_owned(),
            },
        }
    }

    #[tokio::test]
    async fn appends_survive_a_torn_line_and_bad_lines_are_kept_aside() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit.spool");
        let mut spool = Spool::open(&path).unwrap_or_else(|e| panic!("{e}"));
        spool.append(&[record(1)], u64::MAX).await.unwrap_or_else(|e| panic!("{e}"));
        // A crash mid-write leaves half a line, cut inside a multi-byte character.
        let text = String::from_utf8(lines(&[record(2)]).unwrap_or_default()).unwrap_or_default();
        let cut = text.find('ü').unwrap_or(10) + 1;
        let mut torn = std::fs::read(&path).unwrap_or_default();
        torn.extend_from_slice(&text.as_bytes()[..cut]);
        std::fs::write(&path, torn).unwrap_or_else(|e| panic!("{e}"));
        spool.append(&[record(3)], u64::MAX).await.unwrap_or_else(|e| panic!("{e}"));
        let read = spool.read().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.iter().map(|r| r.entry.time_ms).collect::<Vec<_>>(), [1, 3]);
        assert!(std::fs::metadata(sibling(&path, "bad")).is_ok_and(|m| m.len() > 0), "the torn line is kept aside");
        spool.replace(&read[1..]).await.unwrap_or_else(|e| panic!("{e}"));
        let again = spool.read().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.iter().map(|r| r.entry.time_ms).collect::<Vec<_>>(), [3]);
        spool.replace(&[]).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(spool.read().await.is_ok_and(|r| r.is_empty()));
        assert!(spool.is_empty(), "an emptied spool holds nothing");
        assert!(spool.append(&[record(4)], 10).await.is_err(), "the size cap holds");
    }

    #[test]
    fn a_line_carries_the_body_as_it_is_and_every_form_reads_back_whole() {
        let with = |body: &str| {
            let mut r = record(7);
            r.entry.body = body.to_owned();
            r
        };
        // Deeper than serde_json's recursion limit once inside the line: read back all the same.
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let cases = [
            (with("{\"arguments\":{\"text\":\"a \\\"quoted\\\" ü\\u2028\"},\"n\":[1,2.5,null]}"), true),
            (with(&deep), true),
            // Raw JSON a host sent pretty-printed: a newline cannot sit in the line as it is.
            (with("{\"arguments\":{\n  \"text\": \"x\"\n}}"), false),
            // A raw line separator inside a string, and a carriage return between members, are no
            // line ends here.
            (with("{\"text\":\"a\u{2028}b\",\r\"n\":1}"), true),
            // Not object text: kept as a string, so it reads back as written.
            (with(""), false),
            (with("null"), false),
            (with(" {} "), false),
        ];
        for (r, raw) in cases {
            let mut text = Vec::new();
            line(r.partition, &r.entry, &mut text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 1, "one line: {}", String::from_utf8_lossy(&text));
            let as_is = format!(",\"body\":{}}}\n", r.entry.body);
            assert_eq!(text.ends_with(as_is.as_bytes()), raw, "{}", String::from_utf8_lossy(&text));
            let back = parse(&text[..text.len() - 1])
                .unwrap_or_else(|| panic!("read back: {}", String::from_utf8_lossy(&text)));
            assert_eq!(back.partition, r.partition);
            assert_eq!(back.entry, r.entry, "byte for byte");
        }
        // A line of the older form (the body escaped inside the entry), as an earlier version
        // left it in a journal or spool.
        let mut old = Vec::new();
        serde_json::to_writer(&mut old, &serde_json::json!({"partition": "calls", "entry": record(8).entry}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parse(&old).map(|s| s.entry), Some(record(8).entry));
        // A body both inside and beside the entry, or neither, is not a line this writes.
        let both = br#"{"partition":"calls","entry":{"time_ms":1,"kind":"call","correlation":"","request":"","parent":"","principal":"","server":"","item":"","outcome":"ok","body":"{}"},"body":{}}"#;
        let neither = br#"{"partition":"calls","entry":{"time_ms":1,"kind":"call","correlation":"","request":"","parent":"","principal":"","server":"","item":"","outcome":"ok"}}"#;
        assert!(parse(both).is_none() && parse(neither).is_none());
        assert!(parse(br#"{"partition":"nowhere","entry":{},"body":{}}"#).is_none());
    }

    #[tokio::test]
    async fn a_second_owner_gets_its_own_spool_and_orphans_are_taken_over() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit.spool");
        let mut first = Spool::open(&path).unwrap_or_else(|e| panic!("{e}"));
        // Locks are per open file description, so a second open in this process is refused too.
        let mut second = Spool::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(first.path(), second.path(), "one owner per file");
        first.append(&[record(1)], u64::MAX).await.unwrap_or_else(|e| panic!("{e}"));
        second.append(&[record(2)], u64::MAX).await.unwrap_or_else(|e| panic!("{e}"));
        // An orphan: a pid spool whose owner is gone.
        let orphan = sibling(&path, "999999");
        std::fs::write(&orphan, lines(&[record(3)]).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        drop(second); // a live second owner's spool is not taken over while it holds its lock
        drop(first);
        let third = Spool::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let read = third.read().await.unwrap_or_else(|e| panic!("{e}"));
        let mut times: Vec<i64> = read.iter().map(|r| r.entry.time_ms).collect();
        times.sort();
        assert_eq!(times, [1, 2, 3], "the stopped owners' spools are taken over");
        assert!(!orphan.exists());
    }
}
