//! The hash chain: what a record's digest covers and how it links to the one before.

use sha2::{Digest, Sha256};

use crate::Entry;

/// The `prev_hash` of a stream's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The SHA-256 of every field of a record, each length-prefixed (so no two different records
/// encode alike), in lowercase hex.
pub fn digest(stream: &str, seq: i64, entry: &Entry) -> String {
    let mut h = Sha256::new();
    h.update(b"portcullis-audit-record-v1");
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(stream.as_bytes());
    field(&seq.to_be_bytes());
    field(&entry.time_ms.to_be_bytes());
    field(entry.kind.as_bytes());
    field(entry.correlation.as_bytes());
    field(entry.request.as_bytes());
    field(entry.parent.as_bytes());
    field(entry.principal.as_bytes());
    field(entry.server.as_bytes());
    field(entry.item.as_bytes());
    field(entry.outcome.as_bytes());
    field(entry.body.as_bytes());
    hex::encode(h.finalize())
}

/// A record's hash: the SHA-256 of the previous record's hash and this record's digest.
pub fn link(prev_hash: &str, digest: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"portcullis-audit-link-v1");
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(digest.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    use crate::record::sample as entry;

    #[test]
    fn every_field_moves_the_digest() {
        let base = digest("s", 1, &entry(1));
        let variants: [fn(&mut Entry); 10] = [
            |e| e.time_ms += 1,
            |e| e.kind.push('x'),
            |e| e.correlation.push('x'),
            |e| e.request.push('x'),
            |e| e.parent.push('x'),
            |e| e.principal.push('x'),
            |e| e.server.push('x'),
            |e| e.item.push('x'),
            |e| e.outcome.push('x'),
            |e| e.body.push(' '),
        ];
        for change in variants {
            let mut e = entry(1);
            change(&mut e);
            assert_ne!(digest("s", 1, &e), base);
        }
        assert_ne!(digest("t", 1, &entry(1)), base);
        assert_ne!(digest("s", 2, &entry(1)), base);
    }

    #[test]
    fn fields_are_delimited_by_length_not_by_content() {
        let mut a = entry(1);
        a.principal = "al".to_owned();
        a.server = "icefiles".to_owned();
        let mut b = entry(1);
        b.principal = "alice".to_owned();
        b.server = "files".to_owned();
        assert_ne!(digest("s", 1, &a), digest("s", 1, &b));
    }

    #[test]
    fn records_link_to_their_predecessor() {
        let first = Record::chain("s", 0, GENESIS, entry(1));
        let second = Record::chain("s", first.seq, &first.hash, entry(2));
        assert_eq!(first.seq, 1);
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev_hash, first.hash);
        assert_eq!(second.hash, link(&first.hash, &second.digest));
    }

    #[test]
    fn chaining_several_is_chaining_each_after_the_last() {
        let head = Record::chain("s", 0, GENESIS, entry(1));
        let all = Record::chain_all("s", head.seq, &head.hash, [entry(2), entry(3)]);
        let second = Record::chain("s", head.seq, &head.hash, entry(2));
        let third = Record::chain("s", second.seq, &second.hash, entry(3));
        assert_eq!(all, [second, third]);
        assert!(Record::chain_all("s", 0, GENESIS, []).is_empty());
    }
}
