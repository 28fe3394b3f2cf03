//! An audit event before and after it joins its stream's chain.

use serde::{Deserialize, Serialize};

/// One event, not yet in a chain. The columns a search filters on are fields of their own; the
/// rest of what the event records is `body`, a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When it happened, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// What happened ([`crate::Kind`]'s name).
    pub kind: String,
    /// The interaction it belongs to: a W3C trace id (32 hex digits).
    pub correlation: String,
    /// This event's own id (a W3C span id, 16 hex digits), which later events name as parent.
    pub request: String,
    /// The id of the request that caused this one, when known ("" otherwise).
    pub parent: String,
    /// Who: the principal's id ("" for events no principal caused).
    pub principal: String,
    /// Which upstream server ("" for gateway-wide events).
    pub server: String,
    /// Which tool, prompt or resource, as the upstream names it ("" when none).
    pub item: String,
    /// How it ended, a stable word: `allowed`, `denied`, `failed`, `ok`, `changed`…
    pub outcome: String,
    /// Everything else, as JSON object text.
    pub body: String,
}

/// An entry in its place in a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub stream: String,
    /// 1 for the stream's first record, then one more for each.
    pub seq: i64,
    #[serde(flatten)]
    pub entry: Entry,
    /// The digest of the record's fields ([`crate::chain::digest`]).
    pub digest: String,
    /// The previous record's hash ([`crate::chain::GENESIS`] for the first).
    pub prev_hash: String,
    /// This record's link in the chain ([`crate::chain::link`]).
    pub hash: String,
}

impl Record {
    /// Puts an entry after a stream's current head (`head_seq` 0 and [`crate::chain::GENESIS`]
    /// for an empty stream).
    pub fn chain(stream: &str, head_seq: i64, head_hash: &str, entry: Entry) -> Record {
        let seq = head_seq + 1;
        let digest = crate::chain::digest(stream, seq, &entry);
        let hash = crate::chain::link(head_hash, &digest);
        Record { stream: stream.to_owned(), seq, entry, digest, prev_hash: head_hash.to_owned(), hash }
    }

    /// Puts entries one after the other after a stream's current head.
    pub fn chain_all(
        stream: &str,
        head_seq: i64,
        head_hash: &str,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        for entry in entries {
            let record = match out.last() {
                Some(last) => Record::chain(stream, last.seq, &last.hash, entry),
                None => Record::chain(stream, head_seq, head_hash, entry),
            };
            out.push(record);
        }
        out
    }
}

/// A call entry for tests, distinct for each `n`.
#[cfg(test)]
pub(crate) fn sample(n: i64) -> Entry {
    Entry {
        time_ms: 1_700_000_000_000 + n,
        kind: "call".to_owned(),
        correlation: format!("{n:032x}"),
        request: format!("{n:016x}"),
        parent: String::new(),
        principal: "alice".to_owned(),
        server: "files".to_owned(),
        item: "read".to_owned(),
        outcome: "ok".to_owned(),
        body: format!(r#"{{"n":{n}}}"#),
    }
}
