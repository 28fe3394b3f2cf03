//! The audit trail's shape and its tamper evidence, with no I/O.
//!
//! An audit [`Entry`] is one event (a tool call and its outcome, a session opened, an upstream
//! connected, a policy reloaded…). Entries are appended to a *stream* (one per gateway instance
//! and event class) where each gets the next sequence number and becomes a [`Record`]: its
//! digest covers every field, and its hash chains that digest to the previous record's hash
//! ([`chain`]). Now and then the writer signs the stream's head with an Ed25519 key
//! ([`checkpoint`]); a checkpoint also states the stream's *floor*, the first sequence number
//! retention keeps, so pruning old records never breaks verification.
//!
//! [`verify::Verifier`] walks a stream in order and reports every modified, deleted, reordered
//! or inserted record by sequence number, and every checkpoint whose signature or hash does not
//! hold.
//!
//! What a chain cannot show: records appended after the last checkpoint by someone who can
//! write the database are indistinguishable from the gateway's own until the next checkpoint
//! (the verifier reports them as unanchored), and a database rolled back as a whole to an
//! earlier state (records and checkpoints alike) is still a consistent chain. Exporting records
//! as they are written (JSON lines, OTLP) to a system the database's writers cannot alter
//! closes both gaps.

pub mod chain;
pub mod checkpoint;
mod event;
mod record;
pub mod verify;

pub use checkpoint::{Checkpoint, SigningKey, VerifyingKey};
pub use event::{Kind, Partition};
pub use record::{Entry, Record};
pub use verify::{Finding, Report, Verifier};
