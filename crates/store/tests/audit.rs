//! The audit tables on both engines: chained appends (also by two replicas at once), search,
//! checkpoints, retention, and tampering done directly in the database found by verification.

#[path = "store/engine.rs"]
mod engine;

use engine::{TestDb, on_both_engines};
use portcullis_audit::{Entry, Finding, SigningKey};
use portcullis_store::{AuditQuery, Store};

on_both_engines!(
    appends_chain_records_across_batches_and_streams,
    replicas_appending_to_one_stream_build_one_chain,
    searches_by_every_filter,
    finds_every_kind_of_tampering_done_in_the_database,
    pruning_behind_a_signed_floor_keeps_the_stream_verifiable,
    appending_after_a_stale_head_conflicts_and_writes_nothing,
    a_batch_with_one_stale_stream_writes_no_stream,
    appending_after_a_missing_head_conflicts,
    an_append_its_caller_stopped_waiting_for_is_whole_or_absent,
);

fn entry(n: i64, principal: &str, tool: &str, outcome: &str) -> Entry {
    Entry {
        time_ms: 1_000 + n,
        kind: "call".to_owned(),
        correlation: format!("{n:032x}"),
        request: format!("{n:016x}"),
        parent: String::new(),
        principal: principal.to_owned(),
        server: "files".to_owned(),
        item: tool.to_owned(),
        outcome: outcome.to_owned(),
        body: format!(r#"{{"n":{n}}}"#),
    }
}

async fn append(store: &Store, stream: &str, range: std::ops::RangeInclusive<i64>) {
    let entries = range.map(|n| entry(n, "alice", "read", "ok")).collect();
    store.append_audit(&[(stream.to_owned(), entries)]).await.expect("append");
}

async fn appends_chain_records_across_batches_and_streams(db: TestDb) {
    let store = db.store().await;
    assert_eq!(store.audit_head("gw/calls").await.expect("head"), (0, portcullis_audit::chain::GENESIS.to_owned()));
    let first = store
        .append_audit(&[
            ("gw/calls".to_owned(), vec![entry(1, "alice", "read", "ok"), entry(2, "bob", "write", "denied")]),
            ("gw/system".to_owned(), vec![entry(3, "", "", "changed")]),
            ("gw/access".to_owned(), vec![]),
        ])
        .await
        .expect("append");
    assert_eq!(
        first.iter().map(|r| (r.stream.as_str(), r.seq)).collect::<Vec<_>>(),
        [("gw/calls", 1), ("gw/calls", 2), ("gw/system", 1)]
    );
    let second = store.append_audit(&[("gw/calls".to_owned(), vec![entry(4, "alice", "read", "ok")])]).await;
    let second = second.expect("append");
    assert_eq!((second[0].seq, second[0].prev_hash.as_str()), (3, first[1].hash.as_str()));
    assert_eq!(store.audit_head("gw/calls").await.expect("head"), (3, second[0].hash.clone()));
    assert_eq!(store.audit_streams().await.expect("streams"), ["gw/calls", "gw/system"]);

    let stored = store.audit_records("gw/calls", 1, 10).await.expect("records");
    assert_eq!(stored, [first[0].clone(), first[1].clone(), second[0].clone()], "read back exactly as chained");
    assert_eq!(store.audit_records("gw/calls", 2, 1).await.expect("records"), [first[1].clone()]);
    for stream in ["gw/calls", "gw/system"] {
        let report = store.verify_audit(stream, &[]).await.expect("verify");
        assert!(report.ok(), "{stream}: {:?}", report.findings);
    }
}

async fn replicas_appending_to_one_stream_build_one_chain(db: TestDb) {
    let replicas = [db.store().await, db.store().await];
    let mut tasks = Vec::new();
    for (r, store) in replicas.iter().enumerate() {
        for t in 0..3 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for b in 0..15 {
                    let base = (r as i64 * 1000) + t * 100 + b * 3;
                    append(&store, "shared/calls", base..=base + 2).await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("appender");
    }
    let store = &replicas[0];
    let report = store.verify_audit("shared/calls", &[]).await.expect("verify");
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!((report.records, report.first_seq, report.last_seq), (270, Some(1), Some(270)));
}

async fn searches_by_every_filter(db: TestDb) {
    let store = db.store().await;
    let mut other = entry(5, "bob", "write", "denied");
    other.kind = "list".to_owned();
    other.server = "mail".to_owned();
    store
        .append_audit(&[(
            "gw/calls".to_owned(),
            vec![entry(1, "alice", "read", "ok"), entry(2, "alice", "write", "denied"), other],
        )])
        .await
        .expect("append");
    let items = |q: AuditQuery| {
        let store = store.clone();
        async move {
            let q = AuditQuery { limit: 100, ..q };
            store
                .search_audit(&q)
                .await
                .expect("search")
                .into_iter()
                .map(|r| r.entry.time_ms - 1_000)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(items(AuditQuery::default()).await, [1, 2, 5]);
    assert_eq!(items(AuditQuery { principal: Some("alice".into()), ..Default::default() }).await, [1, 2]);
    assert_eq!(items(AuditQuery { server: Some("mail".into()), ..Default::default() }).await, [5]);
    assert_eq!(items(AuditQuery { item: Some("write".into()), ..Default::default() }).await, [2, 5]);
    assert_eq!(items(AuditQuery { kind: Some("list".into()), ..Default::default() }).await, [5]);
    assert_eq!(items(AuditQuery { outcome: Some("denied".into()), ..Default::default() }).await, [2, 5]);
    assert_eq!(items(AuditQuery { correlation: Some(format!("{:032x}", 2)), ..Default::default() }).await, [2]);
    assert_eq!(items(AuditQuery { since_ms: Some(1_002), until_ms: Some(1_005), ..Default::default() }).await, [2]);
    assert_eq!(
        items(AuditQuery { principal: Some("alice".into()), outcome: Some("ok".into()), ..Default::default() }).await,
        [1]
    );
    let limited = store.search_audit(&AuditQuery { limit: 1, ..Default::default() }).await.expect("search");
    assert_eq!(limited.len(), 1);
}

async fn finds_every_kind_of_tampering_done_in_the_database(db: TestDb) {
    let store = db.store().await;
    let key = SigningKey::generate();
    let public = key.verifying_key();
    let cases: [(&str, &[&str]); 6] = [
        ("edit", &["UPDATE audit_records SET outcome = 'ok-forged' WHERE stream = 't/edit' AND seq = 4"]),
        ("delete", &["DELETE FROM audit_records WHERE stream = 't/delete' AND seq = 6"]),
        (
            "reorder",
            &[
                "UPDATE audit_records SET seq = seq + 1000 WHERE stream = 't/reorder' AND seq IN (5, 6)",
                "UPDATE audit_records SET seq = 6 WHERE stream = 't/reorder' AND seq = 1005",
                "UPDATE audit_records SET seq = 5 WHERE stream = 't/reorder' AND seq = 1006",
            ],
        ),
        (
            "insert",
            &[
                "UPDATE audit_records SET seq = seq + 1000 WHERE stream = 't/insert' AND seq >= 5",
                "UPDATE audit_records SET seq = seq - 999 WHERE stream = 't/insert' AND seq > 1000",
                "INSERT INTO audit_records SELECT stream, 5, time_ms, kind, correlation, request, parent, 'mallory', \
                 server, item, outcome, body, digest, prev_hash, hash FROM audit_records \
                 WHERE stream = 't/insert' AND seq = 4",
            ],
        ),
        ("truncate", &["DELETE FROM audit_records WHERE stream = 't/truncate' AND seq >= 9"]),
        ("forge", &["UPDATE audit_checkpoints SET floor = 8 WHERE stream = 't/forge'"]),
    ];
    for (name, statements) in cases {
        let stream = format!("t/{name}");
        append(&store, &stream, 1..=10).await;
        let (seq, hash) = store.audit_head(&stream).await.expect("head");
        store.add_audit_checkpoint(&key.checkpoint(&stream, seq, &hash, 1, 0)).await.expect("checkpoint");
        assert!(
            store.verify_audit(&stream, std::slice::from_ref(&public)).await.expect("verify").ok(),
            "{name} before"
        );
        for sql in statements {
            assert!(db.execute(sql).await > 0, "{sql}");
        }
        let findings = store.verify_audit(&stream, std::slice::from_ref(&public)).await.expect("verify").findings;
        let expected: &[Finding] = match name {
            "edit" => &[Finding::Modified { seq: 4 }],
            "delete" => &[Finding::Missing { from: 6, to: 6 }],
            "reorder" => &[Finding::BrokenLink { seq: 5 }, Finding::Modified { seq: 5 }],
            "insert" => &[Finding::Modified { seq: 5 }],
            "truncate" => &[Finding::Truncated { from: 9, to: 10 }],
            _ => &[Finding::BadSignature { seq: 10 }],
        };
        for f in expected {
            assert!(findings.contains(f), "{name}: expected {f:?} in {findings:?}");
        }
        assert!(!findings.is_empty(), "{name}");
    }
    // Without the key, a forged checkpoint is only taken at its word: the report says so.
    let report = store.verify_audit("t/forge", &[]).await.expect("verify");
    assert!(!report.signatures_checked);
}

async fn pruning_behind_a_signed_floor_keeps_the_stream_verifiable(db: TestDb) {
    let store = db.store().await;
    let key = SigningKey::generate();
    append(&store, "gw/calls", 1..=10).await;
    let floor = store.audit_first_since("gw/calls", 1_006).await.expect("first since").expect("some");
    assert_eq!(floor, 6);
    assert_eq!(store.audit_first_since("gw/calls", 9_999).await.expect("first since"), None);
    let (seq, hash) = store.audit_head("gw/calls").await.expect("head");
    store.add_audit_checkpoint(&key.checkpoint("gw/calls", 4, "x", 1, 0)).await.expect("old checkpoint");
    store.add_audit_checkpoint(&key.checkpoint("gw/calls", seq, &hash, floor, 0)).await.expect("checkpoint");
    assert_eq!(store.prune_audit("gw/calls", floor).await.expect("prune"), 5);
    assert_eq!(store.audit_checkpoints("gw/calls").await.expect("checkpoints").len(), 1, "old checkpoint pruned");
    let report = store.verify_audit("gw/calls", &[key.verifying_key()]).await.expect("verify");
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!((report.first_seq, report.records), (Some(6), 5));
    // The chain goes on from the head, not from the pruned start.
    append(&store, "gw/calls", 11..=11).await;
    assert!(store.verify_audit("gw/calls", &[key.verifying_key()]).await.expect("verify").ok());
}

async fn appending_after_a_stale_head_conflicts_and_writes_nothing(db: TestDb) {
    let store = db.store().await;
    // The audit writer's kind of store appends after its own heads.
    let writer = db.dedicated().await;
    let first = store.append_audit(&[("gw/calls".to_owned(), vec![entry(1, "a", "t", "ok")])]).await.expect("append");
    let mine = std::collections::HashMap::from([("gw/calls".to_owned(), (first[0].seq, first[0].hash.clone()))]);
    // Chained after the caller's own head: no read of the head needed.
    let second = writer
        .append_audit_after(&[("gw/calls".to_owned(), vec![entry(2, "a", "t", "ok")])], &mine)
        .await
        .expect("append after");
    assert_eq!((second[0].seq, second[0].prev_hash.as_str()), (2, first[0].hash.as_str()));
    // The same (now stale) head again: refused, nothing written.
    let stale = writer.append_audit_after(&[("gw/calls".to_owned(), vec![entry(3, "a", "t", "ok")])], &mine).await;
    assert!(matches!(stale, Err(portcullis_store::StoreError::Conflict { .. })), "{stale:?}");
    // A store of the shared kind (its own transaction path) refuses the same.
    let stale = store.append_audit_after(&[("gw/calls".to_owned(), vec![entry(3, "a", "t", "ok")])], &mine).await;
    assert!(matches!(stale, Err(portcullis_store::StoreError::Conflict { .. })), "{stale:?}");
    assert_eq!(store.audit_records("gw/calls", 1, 10).await.expect("records").len(), 2);
    assert_eq!(store.audit_head("gw/calls").await.expect("head"), (2, second[0].hash.clone()));
    assert!(store.verify_audit("gw/calls", &[]).await.expect("verify").ok());
}

async fn a_batch_with_one_stale_stream_writes_no_stream(db: TestDb) {
    let store = db.store().await;
    // The audit writer's kind of store appends after its own heads.
    let writer = db.dedicated().await;
    let a = store.append_audit(&[("gw/calls".to_owned(), vec![entry(1, "a", "t", "ok")])]).await.expect("append");
    let b = store.append_audit(&[("gw/access".to_owned(), vec![entry(2, "a", "t", "ok")])]).await.expect("append");
    let mine = std::collections::HashMap::from([
        ("gw/calls".to_owned(), (a[0].seq, a[0].hash.clone())),
        ("gw/access".to_owned(), (b[0].seq, b[0].hash.clone())),
    ]);
    // Someone else moves the access stream on.
    store.append_audit(&[("gw/access".to_owned(), vec![entry(3, "b", "t", "ok")])]).await.expect("append");
    let batch = [
        ("gw/calls".to_owned(), vec![entry(4, "a", "t", "ok"), entry(5, "a", "t", "ok")]),
        ("gw/access".to_owned(), vec![entry(6, "a", "t", "ok")]),
    ];
    let stale = writer.append_audit_after(&batch, &mine).await;
    assert!(matches!(stale, Err(portcullis_store::StoreError::Conflict { .. })), "{stale:?}");
    assert_eq!(store.audit_records("gw/calls", 1, 10).await.expect("records").len(), 1, "calls untouched");
    assert_eq!(store.audit_records("gw/access", 1, 10).await.expect("records").len(), 2, "access untouched");
    assert_eq!(store.audit_head("gw/calls").await.expect("head"), (1, a[0].hash.clone()));
    // The store is usable at once: the same batch after the heads as they are goes in whole.
    let written = store.append_audit(&batch).await.expect("append");
    assert_eq!(
        written.iter().map(|r| (r.stream.as_str(), r.seq)).collect::<Vec<_>>(),
        [("gw/calls", 2), ("gw/calls", 3), ("gw/access", 3)]
    );
    for stream in ["gw/calls", "gw/access"] {
        assert!(store.verify_audit(stream, &[]).await.expect("verify").ok(), "{stream}");
    }
}

async fn appending_after_a_missing_head_conflicts(db: TestDb) {
    let store = db.store().await;
    // The audit writer's kind of store appends after its own heads.
    let writer = db.dedicated().await;
    // The caller believes in a head that this stream never had.
    let mine = std::collections::HashMap::from([("gw/calls".to_owned(), (7, "f".repeat(64)))]);
    let missing = writer.append_audit_after(&[("gw/calls".to_owned(), vec![entry(1, "a", "t", "ok")])], &mine).await;
    assert!(matches!(missing, Err(portcullis_store::StoreError::Conflict { .. })), "{missing:?}");
    assert!(store.audit_records("gw/calls", 1, 10).await.expect("records").is_empty());
    let first = store.append_audit(&[("gw/calls".to_owned(), vec![entry(1, "a", "t", "ok")])]).await.expect("append");
    assert_eq!(first[0].seq, 1);
}

async fn an_append_its_caller_stopped_waiting_for_is_whole_or_absent(db: TestDb) {
    let store = db.store().await;
    // The audit writer's kind of store appends after its own heads.
    let writer = db.dedicated().await;
    let first = store.append_audit(&[("gw/calls".to_owned(), vec![entry(1, "a", "t", "ok")])]).await.expect("append");
    let mine = std::collections::HashMap::from([("gw/calls".to_owned(), (first[0].seq, first[0].hash.clone()))]);
    let batch = [("gw/calls".to_owned(), (2..=1500).map(|n| entry(n, "a", "t", "ok")).collect::<Vec<_>>())];
    // The caller gives up (almost) at once, while the append is in flight.
    let _ = tokio::time::timeout(std::time::Duration::from_micros(1), writer.append_audit_after(&batch, &mine)).await;
    // The store is not left locked: another writer gets through in well under the busy timeout.
    let other = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        store.append_audit(&[("gw/access".to_owned(), vec![entry(50, "a", "t", "ok")])]),
    )
    .await;
    assert!(matches!(other, Ok(Ok(_))), "{other:?}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let n = store.audit_records("gw/calls", 1, 2000).await.expect("records").len();
    assert!(n == 1 || n == 1500, "{n} records: the batch was cut short");
    assert!(store.verify_audit("gw/calls", &[]).await.expect("verify").ok());
}
