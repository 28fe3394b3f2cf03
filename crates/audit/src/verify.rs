//! Walking a stream and saying where its chain does not hold.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::chain::{GENESIS, digest, link};
use crate::{Checkpoint, Record, VerifyingKey};

/// One thing wrong with a stream, located by sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// The record's fields no longer match its digest or its hash: it was edited.
    Modified { seq: i64 },
    /// The record does not follow the one before it: records were inserted, reordered, or the
    /// one before was replaced.
    BrokenLink { seq: i64 },
    /// Records between two that remain are gone.
    Missing { from: i64, to: i64 },
    /// The first records retention keeps (the signed floor) are gone.
    MissingFromStart { from: i64, to: i64 },
    /// Records a checkpoint covers are gone from the end of the stream.
    Truncated { from: i64, to: i64 },
    /// A checkpoint names another hash than its record has: the chain was rewritten.
    CheckpointMismatch { seq: i64 },
    /// A checkpoint's signature does not verify with any key given (or it has none).
    BadSignature { seq: i64 },
    /// Keys were given, but no checkpoint they signed covers these records (checkpoints deleted,
    /// or a stream rewritten from scratch; a stream in its first seconds has none yet).
    Unsigned { from: i64, to: i64 },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Modified { seq } => write!(f, "record {seq} was modified (its content does not match its hash)"),
            Finding::BrokenLink { seq } => {
                write!(f, "record {seq} does not follow record {} (inserted, reordered or replaced)", seq - 1)
            }
            Finding::Missing { from, to } if from == to => write!(f, "record {from} was deleted"),
            Finding::Missing { from, to } => write!(f, "records {from} to {to} were deleted"),
            Finding::MissingFromStart { from, to } => {
                write!(f, "records {from} to {to} were deleted (retention keeps them: signed floor {from})")
            }
            Finding::Truncated { from, to } => {
                write!(f, "records {from} to {to} were deleted from the end (checkpoint {to} covers them)")
            }
            Finding::CheckpointMismatch { seq } => {
                write!(f, "record {seq} differs from what checkpoint {seq} signed (the chain was rewritten)")
            }
            Finding::BadSignature { seq } => write!(f, "checkpoint {seq} is not validly signed by a given key"),
            Finding::Unsigned { from, to } => {
                write!(f, "records {from} to {to} are covered by no checkpoint a given key signed")
            }
        }
    }
}

/// What a verification found in one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub stream: String,
    pub records: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub checkpoints: u64,
    /// The last sequence number a (valid) checkpoint covers.
    pub anchored_through: Option<i64>,
    /// Whether checkpoint signatures were checked (keys were given).
    pub signatures_checked: bool,
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether the stream is intact.
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    /// Records after the last checkpoint: intact as a chain, but not yet signed.
    pub fn unanchored(&self) -> u64 {
        match (self.last_seq, self.anchored_through) {
            (Some(last), Some(anchor)) if last > anchor => (last - anchor) as u64,
            (Some(_), Some(_)) => 0,
            (Some(_), None) => self.records,
            (None, _) => 0,
        }
    }
}

/// Checks one stream's records, fed in sequence order, against its checkpoints.
pub struct Verifier {
    report: Report,
    /// Valid checkpoints' hashes by sequence number.
    anchors: BTreeMap<i64, String>,
    floor: i64,
    last: Option<(i64, String)>,
    /// Records at or after this time may not be checkpointed yet (see [`Verifier::recent_since`]).
    recent_since: i64,
    /// The oldest record's time.
    oldest: i64,
}

impl Verifier {
    /// Starts on a stream. With keys (several, across a rotation), a checkpoint none of them
    /// signed is a finding and is not trusted, and records no signed checkpoint covers are one
    /// too; without keys, checkpoints are taken as they are (and the report says so).
    pub fn new(stream: &str, checkpoints: &[Checkpoint], keys: &[VerifyingKey]) -> Verifier {
        let mut findings = Vec::new();
        let mut anchors = BTreeMap::new();
        let mut floor = 1;
        for c in checkpoints.iter().filter(|c| c.stream == stream) {
            if !keys.is_empty() && !keys.iter().any(|k| k.verifies(c)) {
                findings.push(Finding::BadSignature { seq: c.seq });
                continue;
            }
            floor = floor.max(c.floor);
            anchors.insert(c.seq, c.hash.clone());
        }
        Verifier {
            report: Report {
                stream: stream.to_owned(),
                records: 0,
                first_seq: None,
                last_seq: None,
                checkpoints: checkpoints.iter().filter(|c| c.stream == stream).count() as u64,
                anchored_through: anchors.keys().next_back().copied(),
                signatures_checked: !keys.is_empty(),
                findings,
            },
            anchors,
            floor,
            last: None,
            recent_since: i64::MAX,
            oldest: i64::MAX,
        }
    }

    /// Records from this time on (ms) are recent: a stream whose records are all recent is not
    /// reported as unsigned for lacking a checkpoint (its first one may simply not be due yet).
    pub fn recent_since(mut self, time_ms: i64) -> Verifier {
        self.recent_since = time_ms;
        self
    }

    /// Checks the next record (records must come in increasing sequence order).
    pub fn feed(&mut self, r: &Record) {
        let findings = &mut self.report.findings;
        match &self.last {
            Some((seq, hash)) => {
                if r.seq != seq + 1 {
                    findings.push(Finding::Missing { from: seq + 1, to: r.seq - 1 });
                } else if &r.prev_hash != hash {
                    findings.push(Finding::BrokenLink { seq: r.seq });
                }
            }
            None => {
                self.report.first_seq = Some(r.seq);
                if r.seq > self.floor {
                    findings.push(Finding::MissingFromStart { from: self.floor, to: r.seq - 1 });
                } else if r.seq == 1 && r.prev_hash != GENESIS {
                    findings.push(Finding::BrokenLink { seq: r.seq });
                }
            }
        }
        let d = digest(&r.stream, r.seq, &r.entry);
        if d != r.digest || link(&r.prev_hash, &d) != r.hash {
            findings.push(Finding::Modified { seq: r.seq });
        }
        if let Some(anchor) = self.anchors.get(&r.seq)
            && anchor != &r.hash
        {
            findings.push(Finding::CheckpointMismatch { seq: r.seq });
        }
        self.report.records += 1;
        self.oldest = self.oldest.min(r.entry.time_ms);
        self.report.last_seq = Some(r.seq);
        self.last = Some((r.seq, r.hash.clone()));
    }

    /// The verdict, once every record has been fed.
    pub fn finish(mut self) -> Report {
        let last = self.last.as_ref().map_or(0, |(seq, _)| *seq);
        if self.report.signatures_checked
            && self.anchors.is_empty()
            && self.oldest < self.recent_since
            && let Some(first) = self.report.first_seq
        {
            self.report.findings.push(Finding::Unsigned { from: first, to: last });
        }
        if let Some(&covered) = self.anchors.keys().next_back()
            && covered > last
        {
            let from = if self.last.is_some() { last + 1 } else { self.floor };
            self.report.findings.push(Finding::Truncated { from, to: covered });
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;
    use crate::chain::GENESIS;

    const S: &str = "gw/calls";

    use crate::record::sample as entry;

    fn stream(n: i64) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        for i in 1..=n {
            let (seq, hash) = out.last().map_or((0, GENESIS.to_owned()), |r| (r.seq, r.hash.clone()));
            out.push(Record::chain(S, seq, &hash, entry(i)));
        }
        out
    }

    fn verify(records: &[Record], checkpoints: &[Checkpoint], key: Option<&VerifyingKey>) -> Report {
        let keys: Vec<VerifyingKey> = key.into_iter().cloned().collect();
        let mut v = Verifier::new(S, checkpoints, &keys);
        records.iter().for_each(|r| v.feed(r));
        v.finish()
    }

    #[test]
    fn an_intact_stream_verifies() {
        let key = SigningKey::generate();
        let records = stream(10);
        let c = key.checkpoint(S, 7, &records[6].hash, 1, 0);
        let report = verify(&records, &[c], Some(&key.verifying_key()));
        assert!(report.ok(), "{:?}", report.findings);
        assert_eq!((report.records, report.anchored_through, report.unanchored()), (10, Some(7), 3));
    }

    #[test]
    fn each_kind_of_tampering_is_found_where_it_happened() {
        let key = SigningKey::generate();
        let public = key.verifying_key();
        let records = stream(10);
        let checkpoint = key.checkpoint(S, 10, &records[9].hash, 1, 0);
        let check = |records: &[Record]| verify(records, std::slice::from_ref(&checkpoint), Some(&public)).findings;

        let mut edited = records.clone();
        edited[3].entry.outcome = "denied".to_owned();
        assert_eq!(check(&edited), vec![Finding::Modified { seq: 4 }]);

        // Edited and re-hashed: the next record no longer follows it.
        let mut rehashed = records.clone();
        rehashed[3].entry.principal = "mallory".to_owned();
        rehashed[3] = Record::chain(S, 3, &records[2].hash, rehashed[3].entry.clone());
        assert_eq!(check(&rehashed), vec![Finding::BrokenLink { seq: 5 }]);

        // The whole chain re-hashed after the edit: only the signed checkpoint can tell.
        let mut rewritten = records[..3].to_vec();
        for r in &records[3..] {
            let mut e = r.entry.clone();
            if r.seq == 4 {
                e.principal = "mallory".to_owned();
            }
            let prev = rewritten.last().map(|p: &Record| p.hash.clone()).unwrap_or_default();
            rewritten.push(Record::chain(S, r.seq - 1, &prev, e));
        }
        assert_eq!(check(&rewritten), vec![Finding::CheckpointMismatch { seq: 10 }]);

        let mut deleted = records.clone();
        deleted.remove(5);
        assert_eq!(check(&deleted), vec![Finding::Missing { from: 6, to: 6 }]);

        let mut reordered = records.clone();
        reordered.swap(4, 5);
        let (a, b) = (reordered[4].seq, reordered[5].seq);
        reordered[4].seq = b;
        reordered[5].seq = a;
        let findings = check(&reordered);
        assert!(findings.contains(&Finding::Modified { seq: 5 }), "{findings:?}");
        assert!(findings.contains(&Finding::BrokenLink { seq: 5 }), "{findings:?}");

        // A forged record inserted: to keep the numbering it takes a number and shifts the rest.
        let mut inserted = records[..5].to_vec();
        inserted.push(Record::chain(S, 5, &records[4].hash, entry(99)));
        for r in &records[5..] {
            let mut moved = r.clone();
            moved.seq += 1;
            inserted.push(moved);
        }
        let findings = check(&inserted);
        assert!(findings.contains(&Finding::BrokenLink { seq: 7 }), "{findings:?}");

        let truncated = records[..8].to_vec();
        assert_eq!(check(&truncated), vec![Finding::Truncated { from: 9, to: 10 }]);

        let mut first_gone = records.clone();
        first_gone.remove(0);
        assert_eq!(check(&first_gone), vec![Finding::MissingFromStart { from: 1, to: 1 }]);

        let mut genesis = records.clone();
        genesis[0] = Record { prev_hash: "ff".repeat(32), ..genesis[0].clone() };
        assert!(check(&genesis).contains(&Finding::BrokenLink { seq: 1 }));
    }

    #[test]
    fn pruning_below_a_signed_floor_is_not_a_finding_but_forging_the_floor_is() {
        let key = SigningKey::generate();
        let public = key.verifying_key();
        let records = stream(10);
        let prune = key.checkpoint(S, 10, &records[9].hash, 6, 0);
        assert!(verify(&records[5..], std::slice::from_ref(&prune), Some(&public)).ok());
        assert_eq!(
            verify(&records[6..], std::slice::from_ref(&prune), Some(&public)).findings,
            vec![Finding::MissingFromStart { from: 6, to: 6 }]
        );
        let mut forged = prune.clone();
        forged.floor = 8;
        assert_eq!(
            verify(&records[7..], &[forged], Some(&public)).findings,
            vec![
                Finding::BadSignature { seq: 10 },
                Finding::MissingFromStart { from: 1, to: 7 },
                Finding::Unsigned { from: 8, to: 10 }
            ]
        );
    }

    #[test]
    fn without_a_key_checkpoints_are_taken_as_they_are() {
        let records = stream(3);
        let unsigned = Checkpoint {
            stream: S.to_owned(),
            seq: 3,
            hash: records[2].hash.clone(),
            floor: 1,
            time_ms: 0,
            key_id: String::new(),
            signature: String::new(),
        };
        let report = verify(&records, std::slice::from_ref(&unsigned), None);
        assert!(report.ok() && !report.signatures_checked);
        let key = SigningKey::generate().verifying_key();
        assert_eq!(
            verify(&records, &[unsigned], Some(&key)).findings,
            vec![Finding::BadSignature { seq: 3 }, Finding::Unsigned { from: 1, to: 3 }]
        );
    }

    #[test]
    fn checkpoints_of_a_rotated_key_still_verify_and_deleting_them_all_is_found() {
        let (old, new) = (SigningKey::generate(), SigningKey::generate());
        let records = stream(6);
        let checkpoints = [old.checkpoint(S, 3, &records[2].hash, 1, 0), new.checkpoint(S, 6, &records[5].hash, 1, 0)];
        let keys = [old.verifying_key(), new.verifying_key()];
        let mut v = Verifier::new(S, &checkpoints, &keys);
        records.iter().for_each(|r| v.feed(r));
        assert!(v.finish().ok());
        let mut v = Verifier::new(S, &[], &keys);
        records.iter().for_each(|r| v.feed(r));
        assert_eq!(v.finish().findings, vec![Finding::Unsigned { from: 1, to: 6 }]);
    }
}
