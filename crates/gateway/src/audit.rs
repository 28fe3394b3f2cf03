//! The audit trail as the gateway writes it: one writer task per gateway that takes events from
//! every request, commits them in batches (group commit) to the store's hash-chained streams,
//! signs checkpoints, prunes by retention, and exports committed records as JSON lines.
//!
//! A governed call's record is durable before the host gets the call's response: the request
//! waits for the batch holding its record to commit (or, when the store fails and the call's
//! tier may spool, to be written and synced to the local spool file, replayed into the store in
//! order once it is back). Other events (sessions, lists, upstream and registry changes) join
//! the same batches without anyone waiting on them.

pub mod call;
pub mod journal;
pub mod report;
pub mod spool;
pub mod trace;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_audit::{Entry, Kind, Partition, Record, SigningKey};
use portcullis_registry::model::RiskTier;
use portcullis_store::{Store, StoreError};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use self::journal::{Generation, Journal};
use self::spool::{Spool, Spooled};

use crate::secret::SecretRef;

/// At most this many events are committed in one transaction.
const MAX_BATCH: usize = 512;
/// Events waiting for the writer; beyond this, senders wait (backpressure, never loss).
const QUEUE: usize = 16_384;
/// How long records nobody waits for (journaled calls, other events) gather before the writer
/// commits them: one commit for many at a few hundred calls a second. A record someone waits for
/// is committed at once, with whatever has gathered.
const LINGER: Duration = Duration::from_millis(5);
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(600);
/// How long one store operation may take before the store counts as failing (a hung connection
/// must not hold every call).
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// The spool refuses records beyond this size (calls are then refused: nothing is dropped).
const MAX_SPOOL_BYTES: u64 = 256 * 1024 * 1024;

/// `[audit]`, validated.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// `sqlite://…` or `postgres://…`.
    pub store: String,
    /// The first part of this gateway's stream names (`<instance>/calls`…).
    pub instance: String,
    /// The Ed25519 key checkpoints are signed with (unsigned checkpoints without one).
    pub signing_key: Option<SecretRef>,
    pub checkpoint_interval: Duration,
    /// What happens to records the store cannot take.
    pub on_store_failure: StoreFailure,
    /// With `spool`, calls on these tiers are still refused while the store is down.
    pub fail_closed_tiers: Vec<RiskTier>,
    /// Where records wait while the store is down.
    pub spool: PathBuf,
    /// Argument fields whose names contain one of these (case-insensitive) are recorded redacted.
    pub redact_fields: Vec<String>,
    /// Arguments larger than this (as JSON) are recorded as their size and SHA-256 only.
    pub max_argument_bytes: usize,
    /// Where committed records are also written as JSON lines.
    pub export: Option<Export>,
    /// How long each partition's records are kept (forever when absent).
    pub retention: BTreeMap<Partition, Duration>,
    /// SQLite: fsync every commit, so records also survive a power cut (not only a crash).
    pub synced: bool,
    /// When a call whose tier may wait for the store is answered.
    pub acknowledge: Acknowledge,
}

/// When a governed call's answer may leave, for calls whose records may wait for the store
/// (with `spool`, tiers not in `fail_closed_tiers`); the others always wait for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledge {
    /// Once the record is committed to the store (group commit).
    Store,
    /// Once the record is written to the local journal (it survives a killed gateway and is
    /// replayed into the store at the next start); the store commit follows behind. Not with
    /// `synchronous = "full"`, whose records must survive a power cut: those wait for the store.
    Journal,
}

/// What happens to records when the store cannot take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// Refuse every governed call until the store is back.
    FailClosed,
    /// Write records to the local spool file and replay them later (calls on
    /// `fail_closed_tiers` are still refused).
    Spool,
}

/// A JSON-lines export of committed records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    Stdout,
    File(PathBuf),
}

/// Why a record could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit trail cannot record this: {0}")]
pub struct AuditError(String);

/// One event for the writer.
struct Job {
    partition: Partition,
    entry: Entry,
    /// Told once the record is durable (or cannot be made so).
    done: Option<oneshot::Sender<Result<(), AuditError>>>,
    /// Whether the record may go to the spool when the store fails.
    may_spool: bool,
    /// The journal file the record was written to before its request went on.
    journaled: Option<Generation>,
}

/// The gateway's audit trail.
pub struct Auditor {
    /// Records a request waits for.
    tx: mpsc::Sender<Job>,
    /// Records nobody waits for.
    later: mpsc::Sender<Job>,
    settings: AuditSettings,
    /// False from a failed commit until the next successful one.
    healthy: Arc<AtomicBool>,
    closed: tokio_util::sync::CancellationToken,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Where records are written before their answers leave, with `acknowledge = "journal"`.
    journal: Option<Arc<Journal>>,
}

impl Auditor {
    /// Opens the store, reads the signing key, and starts the writer (which also sends
    /// committed records to OpenTelemetry as logs, when configured).
    pub async fn start(
        settings: AuditSettings,
        telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    ) -> Result<Arc<Auditor>, String> {
        // Only the writer task uses this store, one statement at a time: one connection.
        let store = Store::connect_dedicated(&settings.store, settings.synced)
            .await
            .map_err(|e| format!("audit store: {e}"))?;
        let key = match &settings.signing_key {
            Some(reference) => {
                let secret = reference.resolve().await.map_err(|e| format!("audit.signing_key: {e}"))?;
                Some(SigningKey::parse(secret.expose()).map_err(|e| format!("audit.signing_key: {e}"))?)
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let (later, later_rx) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let closed = tokio_util::sync::CancellationToken::new();
        let exporter = match &settings.export {
            Some(export) => Some(Exporter::start(export.clone()).await?),
            None => None,
        };
        let path = settings.spool.clone();
        let spool = tokio::task::spawn_blocking(move || Spool::open(&path))
            .await
            .map_err(|e| format!("audit spool: {e}"))?
            .map_err(|e| format!("audit spool {}: {e}", settings.spool.display()))?;
        if !spool.is_empty() {
            tracing::warn!(spool = %spool.path().display(), "audit records wait in the spool; replaying them");
        }
        let journal = if settings.acknowledge == Acknowledge::Journal
            && !settings.synced
            && settings.on_store_failure == StoreFailure::Spool
        {
            let journal = Journal::open(spool.path())
                .map_err(|e| format!("audit journal beside {}: {e}", spool.path().display()))?;
            Some(Arc::new(journal))
        } else {
            if settings.acknowledge == Acknowledge::Journal {
                // The default, overruled by a setting that asks more of every record.
                tracing::info!(
                    "audit: calls wait for the store's commit (acknowledge = \"journal\" applies only with \
                     on_store_failure = \"spool\" and synchronous = \"normal\")"
                );
            }
            None
        };
        let writer = Writer {
            store,
            key,
            settings: settings.clone(),
            healthy: Arc::clone(&healthy),
            heads: HashMap::new(),
            signed: HashMap::new(),
            floors: HashMap::new(),
            suspect: HashSet::new(),
            late: HashMap::new(),
            exporter,
            telemetry,
            spool,
            journal: journal.clone(),
        };
        let handle = tokio::spawn(writer.run(rx, later_rx, closed.clone()));
        Ok(Arc::new(Auditor {
            tx,
            later,
            settings,
            healthy,
            closed,
            writer: tokio::sync::Mutex::new(Some(handle)),
            journal,
        }))
    }

    /// The settings in force.
    pub fn settings(&self) -> &AuditSettings {
        &self.settings
    }

    /// Whether the last commit succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether a call on this tier must be refused now: the store is failing and its records may
    /// not wait in the spool.
    pub fn refuses(&self, tier: Option<RiskTier>) -> bool {
        self.tx.is_closed() || (!self.healthy() && !self.may_spool(tier))
    }

    fn may_spool(&self, tier: Option<RiskTier>) -> bool {
        match self.settings.on_store_failure {
            StoreFailure::FailClosed => false,
            // An item the registry knows nothing of is treated as the riskiest.
            StoreFailure::Spool => tier.is_some_and(|t| !self.settings.fail_closed_tiers.contains(&t)),
        }
    }

    /// Records an event without waiting for it to be written.
    pub async fn record(&self, kind: Kind, entry: Entry) {
        let job = Job { partition: kind.partition(), entry, done: None, may_spool: true, journaled: None };
        if self.later.send(job).await.is_err() {
            tracing::error!(kind = %kind, "audit writer stopped; event lost");
        }
    }

    /// Records an event from where nothing can wait (a drop); an event the full queue cannot
    /// take is logged, as lost. It goes with the records requests wait for, whose queue the
    /// journaled calls do not fill.
    pub fn record_now(&self, kind: Kind, entry: Entry) {
        let job = Job { partition: kind.partition(), entry, done: None, may_spool: true, journaled: None };
        if self.tx.try_send(job).is_err() {
            tracing::error!(kind = %kind, "audit queue full or writer stopped; event lost");
        }
    }

    /// Records an event and waits until it is durable: written to the journal, when the tier's
    /// records may wait for the store and the journal is on (and the store is not failing, when
    /// they wait in the synced spool instead); else committed to the store. A caller that stops
    /// waiting before the record is handed over (a host gone while the writer's queue is full)
    /// still has it recorded, without waiting.
    pub async fn record_durably(&self, kind: Kind, entry: Entry, tier: Option<RiskTier>) -> Result<(), AuditError> {
        let partition = kind.partition();
        let may_spool = self.may_spool(tier);
        let mut pending = Pending { auditor: self, kind, entry: Some(entry) };
        if may_spool
            && self.healthy()
            && let Some(journal) = &self.journal
            // The writer's queue has room first: between the journal write and the send nothing
            // waits, so a request dropped meanwhile cannot leave a record only in the journal.
            && let Ok(permit) = self.later.reserve().await
            && self.healthy()
            && let Some(entry) = pending.entry.take()
        {
            match journal.write(partition, &entry) {
                Ok(generation) => {
                    permit.send(Job { partition, entry, done: None, may_spool, journaled: Some(generation) });
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, journal = %journal.path().display(), "audit journal write failed; waiting for the store");
                    pending.entry = Some(entry);
                }
            }
        }
        let stopped = || AuditError("the audit writer stopped".to_owned());
        let permit = self.tx.reserve().await.map_err(|_| stopped())?;
        let Some(entry) = pending.entry.take() else { return Err(stopped()) };
        let (done, wait) = oneshot::channel();
        permit.send(Job { partition, entry, done: Some(done), may_spool, journaled: None });
        wait.await.map_err(|_| stopped())?
    }

    /// Writes what is queued, signs a last checkpoint, and stops the writer.
    pub async fn close(&self) {
        self.closed.cancel();
        if let Some(handle) = self.writer.lock().await.take() {
            let _ = handle.await;
        }
    }

    /// The stream a partition's events go to.
    pub fn stream(&self, partition: Partition) -> String {
        partition.stream(&self.settings.instance)
    }
}

/// A record not yet handed to the writer: recorded without waiting if dropped so.
struct Pending<'a> {
    auditor: &'a Auditor,
    kind: Kind,
    entry: Option<Entry>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.auditor.record_now(self.kind, entry);
        }
    }
}

/// The writer task's state.
struct Writer {
    store: Store,
    key: Option<SigningKey>,
    settings: AuditSettings,
    healthy: Arc<AtomicBool>,
    /// The last record this writer committed on each stream.
    heads: HashMap<String, (i64, String)>,
    /// The last sequence number checkpointed on each stream.
    signed: HashMap<String, i64>,
    /// Each stream's retention floor, from checkpoints this writer's key signed.
    floors: HashMap<String, i64>,
    /// Streams someone else wrote to between this writer's appends: never signed again by this
    /// process (each gateway instance must have streams of its own).
    suspect: HashSet<String>,
    /// Streams whose last append this writer gave up waiting for (it may still have landed), and
    /// the last of its records there it had exported: what lies between is exported once found.
    late: HashMap<String, i64>,
    exporter: Option<Exporter>,
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    spool: Spool,
    journal: Option<Arc<Journal>>,
}

impl Writer {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Job>,
        mut later: mpsc::Receiver<Job>,
        closed: tokio_util::sync::CancellationToken,
    ) {
        let mut checkpoint = tokio::time::interval(self.settings.checkpoint_interval);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retention = tokio::time::interval(RETENTION_EVERY);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Records nobody waits for, gathering until `linger` ends (the channel is not watched
        // meanwhile, so their senders wake no one).
        let mut held: Vec<Job> = Vec::new();
        let linger = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(linger);
        loop {
            // Not biased: under sustained load the checkpoint and retention ticks still get their turn.
            tokio::select! {
                job = rx.recv() => {
                    let Some(job) = job else { break };
                    // Waiting requests fill the batch first; then whatever else has gathered. In
                    // the stream, what had gathered before them comes first.
                    let mut waiting = vec![job];
                    fill(&mut waiting, &mut rx);
                    let mut jobs = std::mem::take(&mut held);
                    jobs.append(&mut waiting);
                    fill(&mut jobs, &mut later);
                    self.commit(jobs).await;
                }
                job = later.recv(), if held.is_empty() => {
                    let Some(job) = job else { break };
                    held.push(job);
                    // Far behind: no lingering until it has caught up.
                    let wait = if later.len() >= MAX_BATCH { Duration::ZERO } else { LINGER };
                    linger.as_mut().reset(tokio::time::Instant::now() + wait);
                }
                () = &mut linger, if !held.is_empty() => {
                    let mut jobs = std::mem::take(&mut held);
                    fill(&mut jobs, &mut later);
                    self.commit(jobs).await;
                }
                _ = checkpoint.tick() => {
                    if !self.spool.is_empty() {
                        self.replay().await;
                    } else if !self.healthy.load(Ordering::Relaxed)
                        && tokio::time::timeout(STORE_TIMEOUT, self.store.audit_streams()).await.is_ok_and(|r| r.is_ok())
                    {
                        // Nothing waits in the spool and the store answers again: calls that
                        // were refused meanwhile may go ahead.
                        tracing::info!("audit store reachable again");
                        self.healthy.store(true, Ordering::Relaxed);
                    }
                    if self.healthy.load(Ordering::Relaxed) {
                        self.catch_up_late(i64::MAX).await;
                    }
                    self.checkpoint().await;
                }
                _ = retention.tick() => self.retain().await,
                _ = closed.cancelled() => break,
            }
        }
        // Closed (or every sender gone): what is queued in either channel is committed.
        rx.close();
        later.close();
        for queue in [&mut rx, &mut later] {
            while let Some(job) = queue.recv().await {
                held.push(job);
                fill(&mut held, queue);
                if held.len() >= MAX_BATCH {
                    self.commit(std::mem::take(&mut held)).await;
                }
            }
        }
        if !held.is_empty() {
            self.commit(held).await;
        }
        if !self.spool.is_empty() {
            // One more try, so a store that is there leaves nothing waiting.
            self.replay().await;
        }
        if self.healthy.load(Ordering::Relaxed) {
            self.catch_up_late(i64::MAX).await;
        }
        self.checkpoint().await;
        if let Some(journal) = &self.journal {
            journal.close();
        }
        if let Some(exporter) = self.exporter.take() {
            exporter.close().await;
        }
    }

    /// Commits a batch, or spools it when the store fails, and tells the waiting requests.
    async fn commit(&mut self, jobs: Vec<Job>) {
        let outcome = if !self.spool.is_empty() {
            // Records still in the spool go first (replayed on the next tick): these wait behind them.
            Err(StoreError::Backend("earlier records are still spooled".to_owned()))
        } else {
            self.append(&batch(&self.settings.instance, jobs.iter().map(|j| (j.partition, &j.entry)))).await
        };
        match outcome {
            Ok(records) => {
                self.healthy.store(true, Ordering::Relaxed);
                // Durable now: the requests go on while the records are exported.
                let mut journaled = Vec::new();
                for job in jobs {
                    if let Some(done) = job.done {
                        let _ = done.send(Ok(()));
                    }
                    journaled.extend(job.journaled);
                }
                self.settle(journaled);
                self.published(&records).await;
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, "audit store failed; spooling what may wait, refusing the rest");
                }
                // Every record goes to the spool, so nothing that happened is lost; but a request
                // whose tier may not wait there is answered with a refusal, and a call that was
                // already executed is recorded as such, its result withheld.
                let mut jobs = jobs;
                for job in jobs.iter_mut().filter(|j| !j.may_spool && executed(&j.entry.outcome)) {
                    job.entry.outcome = "withheld".to_owned();
                }
                let spooled: Vec<Spooled> =
                    jobs.iter().map(|j| Spooled { partition: j.partition, entry: j.entry.clone() }).collect();
                let written = self.spool.append(&spooled, MAX_SPOOL_BYTES).await.map_err(|e| {
                    tracing::error!(error = %e, spool = %self.spool.path().display(), "audit spool failed");
                    AuditError(format!("the audit store and its spool are unavailable: {e}"))
                });
                if written.is_ok() {
                    self.settle(jobs.iter().filter_map(|j| j.journaled).collect());
                }
                // (Journaled records the spool could not take stay in the journal, for the next start.)
                for job in jobs {
                    let Some(done) = job.done else { continue };
                    let _ = done.send(match (&written, job.may_spool) {
                        (Ok(()), true) => Ok(()),
                        (Err(e), _) => Err(e.clone()),
                        (Ok(()), false) => Err(AuditError(format!("the audit store is unavailable: {e}"))),
                    });
                }
            }
        }
    }

    /// Journaled records that are in the store or the spool now.
    fn settle(&self, generations: Vec<Generation>) {
        if let Some(journal) = &self.journal
            && !generations.is_empty()
        {
            journal.settle(generations);
        }
    }

    /// One append to the store, bounded in time: after this writer's own last records (one
    /// statement fewer), or, when someone else appended meanwhile, after the stream's head.
    /// After a failure this writer no longer knows its heads for the batch's streams: a commit it
    /// stopped waiting for may still land. The next append reads them from the store instead, and
    /// is not taken for someone else's write.
    async fn append(&mut self, batch: &[(String, Vec<Entry>)]) -> Result<Vec<Record>, StoreError> {
        let outcome = self.try_append(batch).await;
        if outcome.is_err() {
            for (stream, _) in batch {
                if let Some((seq, _)) = self.heads.remove(stream) {
                    self.late.entry(stream.clone()).or_insert(seq);
                }
            }
        }
        outcome
    }

    async fn try_append(&self, batch: &[(String, Vec<Entry>)]) -> Result<Vec<Record>, StoreError> {
        let attempt = async {
            match self.store.append_audit_after(batch, &self.heads).await {
                Err(StoreError::Conflict { .. }) => self.store.append_audit(batch).await,
                outcome => outcome,
            }
        };
        match tokio::time::timeout(STORE_TIMEOUT, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Backend(format!("no answer within {STORE_TIMEOUT:?}"))),
        }
    }

    /// Takes in committed records: a stream's records from an append this writer gave up on and
    /// that landed after all are exported first, then these.
    async fn published(&mut self, records: &[Record]) {
        if self.late.is_empty() {
            // The usual case: nothing to look for on every batch.
            self.committed(records);
            return;
        }
        let mut firsts: Vec<(&str, i64)> = Vec::new();
        for r in records {
            if !firsts.iter().any(|(s, _)| *s == r.stream) {
                firsts.push((&r.stream, r.seq));
            }
        }
        for (stream, first) in firsts {
            if let Some(known) = self.late.remove(stream) {
                // The stream just took a commit: a failed read here is only logged.
                let _ = self.export_late(stream, known, first).await;
            }
        }
        self.committed(records);
    }

    /// Exports what every stream with a late append holds after this writer's last exported record
    /// there, below `before` (everything with `i64::MAX`): on a dedicated store the read waits for
    /// the appends sent before it, so a late append has landed or rolled back by then.
    /// A stream whose records cannot be read now, or where nothing was found (a store without
    /// the dedicated append queue may not show a late commit yet), is tried again on the next tick
    /// or resolved by the stream's next commit.
    async fn catch_up_late(&mut self, before: i64) {
        for (stream, known) in std::mem::take(&mut self.late) {
            match self.export_late(&stream, known, before).await {
                Ok(exported) if exported > known => {}
                Ok(exported) | Err(exported) => {
                    self.late.insert(stream, exported);
                }
            }
        }
    }

    /// Exports a stream's records from `known + 1` up to (not including) `before`; the answer (or,
    /// on a failed read, the error) is the last sequence number exported.
    async fn export_late(&self, stream: &str, known: i64, before: i64) -> Result<i64, i64> {
        if self.exporter.is_none() && self.telemetry.is_none() {
            return Ok(before);
        }
        let mut from = known + 1;
        while from < before {
            let limit = u32::try_from((before - from).min(MAX_BATCH as i64)).unwrap_or(u32::MAX);
            let page = match tokio::time::timeout(STORE_TIMEOUT, self.store.audit_records(stream, from, limit)).await {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::warn!(stream, from, error = %e, "audit records that landed late cannot be read for export yet");
                    return Err(from - 1);
                }
                Err(_) => {
                    tracing::warn!(stream, from, "audit records that landed late cannot be read for export yet");
                    return Err(from - 1);
                }
            };
            let page: Vec<Record> = page.into_iter().filter(|r| r.seq < before).collect();
            let Some(last) = page.last() else { return Ok(from - 1) };
            from = last.seq + 1;
            tracing::info!(
                stream,
                records = page.len(),
                "exporting audit records that landed after the writer gave up on them"
            );
            self.export(&page);
        }
        Ok(from - 1)
    }

    /// Sends committed records to the JSON-lines export and to OpenTelemetry, when configured.
    fn export(&self, records: &[Record]) {
        if let Some(exporter) = &self.exporter {
            exporter.send(records);
        }
        if let Some(telemetry) = &self.telemetry {
            telemetry.audit_logs(records);
        }
    }

    fn committed(&mut self, records: &[Record]) {
        let mut first_of_stream = HashSet::new();
        for r in records {
            // Each append continues from this writer's own last record; anything else means
            // someone else wrote to the stream in between (tampering, or a second gateway with
            // the same instance name): this process signs nothing of it any more.
            if first_of_stream.insert(r.stream.clone())
                && let Some((seq, hash)) = self.heads.get(&r.stream)
                && (r.seq != seq + 1 || &r.prev_hash != hash)
                && self.suspect.insert(r.stream.clone())
            {
                tracing::error!(
                    target: "portcullis::audit",
                    stream = %r.stream,
                    "audit stream was written to by someone else since this gateway's last record; \
                     its checkpoints stop here (give each gateway instance its own [audit] instance)"
                );
            }
            self.heads.insert(r.stream.clone(), (r.seq, r.hash.clone()));
        }
        self.export(records);
    }

    /// Moves spooled records into the store, in order, skipping any already there (a replay
    /// cut short by a crash), and empties the spool.
    async fn replay(&mut self) {
        let records = match self.spool.read().await {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(error = %e, spool = %self.spool.path().display(), "audit spool unreadable");
                return;
            }
        };
        // A record can be in the spool twice (spooled after a failed commit, and taken in again
        // from the journal a killed gateway left): the first copy is the one that counts.
        let mut seen = HashSet::new();
        for (i, chunk) in records.chunks(MAX_BATCH).enumerate() {
            let mut fresh = Vec::with_capacity(chunk.len());
            for r in chunk {
                let e = &r.entry;
                if !seen.insert((r.partition, e.correlation.as_str(), e.request.as_str(), e.time_ms, e.kind.as_str())) {
                    continue;
                }
                let stream = r.partition.stream(&self.settings.instance);
                match tokio::time::timeout(STORE_TIMEOUT, self.store.audit_has(&stream, e)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => fresh.push((r.partition, e)),
                    Ok(Err(_)) | Err(_) => return,
                }
            }
            let appended = self.append(&batch(&self.settings.instance, fresh.into_iter())).await;
            if let Ok(committed) = &appended {
                self.published(committed).await;
            }
            if let Err(e) = appended {
                tracing::debug!(error = %e, "audit store still unavailable");
                // What was replayed stays in the store; the spool keeps the rest.
                if let Err(e) = self.spool.replace(&records[i * MAX_BATCH..]).await {
                    tracing::error!(error = %e, "audit spool cannot be rewritten");
                }
                return;
            }
        }
        if let Err(e) = self.spool.replace(&[]).await {
            tracing::error!(error = %e, "audit spool cannot be emptied");
            return;
        }
        tracing::info!(records = records.len(), "audit spool replayed into the store");
        self.healthy.store(true, Ordering::Relaxed);
    }

    /// A stream's retention floor: the highest one a checkpoint of this writer's key states
    /// (any checkpoint's, without a key). Injected checkpoints do not move it.
    async fn floor(&mut self, stream: &str) -> Result<i64, StoreError> {
        if let Some(floor) = self.floors.get(stream) {
            return Ok(*floor);
        }
        let public = self.key.as_ref().map(SigningKey::verifying_key);
        let floor = self
            .store
            .audit_checkpoints(stream)
            .await?
            .iter()
            .filter(|c| public.as_ref().is_none_or(|k| k.verifies(c)))
            .map(|c| c.floor)
            .max()
            .unwrap_or(1);
        self.floors.insert(stream.to_owned(), floor);
        Ok(floor)
    }

    /// Signs the head of each stream that moved since its last checkpoint.
    async fn checkpoint(&mut self) {
        let now = now_ms();
        let heads: Vec<(String, i64, String)> = self
            .heads
            .iter()
            .filter(|(stream, (seq, _))| self.signed.get(*stream) != Some(seq) && !self.suspect.contains(*stream))
            .map(|(stream, (seq, hash))| (stream.clone(), *seq, hash.clone()))
            .collect();
        for (stream, seq, hash) in heads {
            let Ok(floor) = self.floor(&stream).await else { continue };
            let c = self.sign(&stream, seq, &hash, floor, now);
            match tokio::time::timeout(STORE_TIMEOUT, self.store.add_audit_checkpoint(&c)).await {
                Ok(Ok(())) => {
                    self.signed.insert(stream, seq);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, stream, "audit checkpoint not written"),
                Err(_) => tracing::warn!(stream, "audit checkpoint not written: the store did not answer"),
            }
        }
    }

    fn sign(&self, stream: &str, seq: i64, hash: &str, floor: i64, now: i64) -> portcullis_audit::Checkpoint {
        match &self.key {
            Some(key) => key.checkpoint(stream, seq, hash, floor, now),
            None => portcullis_audit::Checkpoint {
                stream: stream.to_owned(),
                seq,
                hash: hash.to_owned(),
                floor,
                time_ms: now,
                key_id: String::new(),
                signature: String::new(),
            },
        }
    }

    /// Prunes each of this gateway's streams to its partition's retention: a checkpoint with
    /// the new floor is signed first, so what remains still verifies.
    async fn retain(&mut self) {
        let retention: Vec<(Partition, Duration)> = self.settings.retention.iter().map(|(p, d)| (*p, *d)).collect();
        for (partition, keep) in retention {
            let stream = partition.stream(&self.settings.instance);
            if self.suspect.contains(&stream) {
                continue;
            }
            let cutoff = now_ms() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            let result: Result<u64, StoreError> = async {
                let (head, hash) = self.store.audit_head(&stream).await?;
                if head == 0 {
                    return Ok(0);
                }
                // The head record is always kept: the chain goes on from it.
                let floor = self.store.audit_first_since(&stream, cutoff).await?.unwrap_or(head).min(head);
                let current = self.floor(&stream).await?;
                if floor <= current {
                    return Ok(0);
                }
                // A floor is signed only over an intact stream: deletions or edits must not be
                // laundered into a retention floor.
                let public = self.key.as_ref().map(SigningKey::verifying_key);
                let report = self.store.verify_audit(&stream, public.as_slice()).await?;
                if !report.ok() {
                    return Err(StoreError::Invalid(format!(
                        "the stream is not intact ({} findings); nothing pruned: run `portcullis audit verify`",
                        report.findings.len()
                    )));
                }
                self.store.add_audit_checkpoint(&self.sign(&stream, head, &hash, floor, now_ms())).await?;
                self.floors.insert(stream.clone(), floor);
                self.store.prune_audit(&stream, floor).await
            }
            .await;
            match result {
                Ok(0) => {}
                Ok(n) => tracing::info!(stream, pruned = n, "audit retention"),
                Err(e) => tracing::warn!(stream, error = %e, "audit retention failed"),
            }
        }
    }
}

/// Adds what `rx` holds to `jobs`, up to a batch (group commit).
fn fill(jobs: &mut Vec<Job>, rx: &mut mpsc::Receiver<Job>) {
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
}

/// Whether a call record's outcome says the upstream executed the call.
pub fn executed(outcome: &str) -> bool {
    matches!(outcome, "ok" | "tool_error" | "input_required" | "upstream_error" | "withheld" | "cancelled")
}

/// Groups entries by stream, in order.
fn batch<'a>(instance: &str, entries: impl Iterator<Item = (Partition, &'a Entry)>) -> Vec<(String, Vec<Entry>)> {
    let mut by: BTreeMap<Partition, Vec<Entry>> = BTreeMap::new();
    for (partition, entry) in entries {
        by.entry(partition).or_default().push(entry.clone());
    }
    by.into_iter().map(|(p, entries)| (p.stream(instance), entries)).collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Writes committed records as JSON lines, off the request path.
struct Exporter {
    tx: mpsc::Sender<Vec<Record>>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    async fn start(export: Export) -> Result<Exporter, String> {
        let mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match &export {
            Export::Stdout => Box::new(tokio::io::stdout()),
            Export::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| format!("audit.export {}: {e}", path.display()))?,
            ),
        };
        let (tx, mut rx) = mpsc::channel::<Vec<Record>>(1024);
        let task = tokio::spawn(async move {
            while let Some(records) = rx.recv().await {
                let mut text = String::new();
                for r in &records {
                    if let Ok(line) = serde_json::to_string(&record_json(r)) {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
                if let Err(e) = async {
                    out.write_all(text.as_bytes()).await?;
                    out.flush().await
                }
                .await
                {
                    tracing::warn!(error = %e, "audit export failed");
                }
            }
        });
        Ok(Exporter { tx, task })
    }

    fn send(&self, records: &[Record]) {
        if self.tx.try_send(records.to_vec()).is_err() {
            tracing::warn!(records = records.len(), "audit export is behind; records skipped (the store has them)");
        }
    }

    async fn close(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// A record as exported, searched and served: its fields, with the body as JSON rather than text.
pub fn record_json(r: &Record) -> serde_json::Value {
    let body: serde_json::Value = serde_json::from_str(&r.entry.body).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "stream": r.stream,
        "seq": r.seq,
        "time_ms": r.entry.time_ms,
        "kind": r.entry.kind,
        "correlation": r.entry.correlation,
        "request": r.entry.request,
        "parent": r.entry.parent,
        "principal": r.entry.principal,
        "server": r.entry.server,
        "item": r.entry.item,
        "outcome": r.entry.outcome,
        "body": body,
        "hash": r.hash,
        "prev_hash": r.prev_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &std::path::Path) -> AuditSettings {
        AuditSettings {
            store: format!("sqlite://{}", dir.join("audit.db").display()),
            instance: "gw".to_owned(),
            signing_key: None,
            checkpoint_interval: Duration::from_secs(3600),
            on_store_failure: StoreFailure::Spool,
            fail_closed_tiers: vec![RiskTier::High, RiskTier::Critical],
            spool: dir.join("audit.spool"),
            redact_fields: Vec::new(),
            max_argument_bytes: 1024,
            export: None,
            retention: BTreeMap::from([(Partition::Calls, Duration::from_secs(3600))]),
            synced: false,
            acknowledge: Acknowledge::Journal,
        }
    }

    fn entry(time_ms: i64) -> Entry {
        Entry {
            time_ms,
            kind: "call".to_owned(),
            correlation: "c".repeat(32),
            request: "r".repeat(16),
            parent: String::new(),
            principal: "alice".to_owned(),
            server: "demo".to_owned(),
            item: "echo".to_owned(),
            outcome: "ok".to_owned(),
            body: "{}".to_owned(),
        }
    }

    fn writer(store: &Store, settings: AuditSettings, key: &SigningKey, dir: &std::path::Path) -> Writer {
        Writer {
            store: store.clone(),
            key: Some(key.clone()),
            settings,
            healthy: Arc::new(AtomicBool::new(true)),
            heads: HashMap::new(),
            signed: HashMap::new(),
            floors: HashMap::new(),
            suspect: HashSet::new(),
            late: HashMap::new(),
            exporter: None,
            telemetry: None,
            spool: Spool::open(&dir.join("audit.spool")).unwrap_or_else(|e| panic!("{e}")),
            journal: None,
        }
    }

    async fn append(w: &mut Writer, stream: &str, entries: Vec<Entry>) {
        let records = w.store.append_audit(&[(stream.to_owned(), entries)]).await.unwrap_or_else(|e| panic!("{e}"));
        w.committed(&records);
    }

    /// The times of the records in `gw/calls`, in the stream's order.
    async fn call_times(store: &Store) -> Vec<i64> {
        let records = store.audit_records("gw/calls", 0, 100).await.unwrap_or_else(|e| panic!("{e}"));
        records.iter().map(|r| r.entry.time_ms).collect()
    }

    /// A writer on a dedicated SQLite store in `dir`, the store, and its URL.
    async fn dedicated_writer(dir: &std::path::Path) -> (Store, String, Writer) {
        let settings = settings(dir);
        let url = settings.store.clone();
        let store = Store::connect_dedicated(&url, false).await.unwrap_or_else(|e| panic!("{e}"));
        let w = writer(&store, settings, &SigningKey::generate(), dir);
        (store, url, w)
    }

    /// Another connection that holds the store's write lock: nothing can commit until it ends.
    async fn lock_store(url: &str) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let mut other = sqlx::SqliteConnection::connect(url).await.unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap_or_else(|e| panic!("{e}"));
        other
    }

    /// `record` has not returned half a second into the lock `other` holds, and returns `Ok`
    /// once the lock goes.
    async fn waits_for_the_store(
        mut other: sqlx::SqliteConnection,
        record: impl std::future::Future<Output = Result<(), AuditError>>,
        why: &str,
    ) {
        tokio::pin!(record);
        assert!(tokio::time::timeout(Duration::from_millis(500), &mut record).await.is_err(), "{why}");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(record.await, Ok(())), "{why}: recorded once the store commits");
    }

    #[tokio::test]
    async fn a_commit_that_lands_after_the_writer_gave_up_is_not_taken_for_someone_elses() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (store, url, mut w) = dedicated_writer(dir.path()).await;
        let calls = |t| vec![("gw/calls".to_owned(), vec![entry(t)])];
        w.append(&calls(1)).await.map(|r| w.committed(&r)).unwrap_or_else(|e| panic!("{e}"));
        // Another process holds the write lock past the writer's patience.
        let mut other = lock_store(&url).await;
        assert!(w.append(&calls(2)).await.is_err(), "the append should have timed out");
        // The lock goes; the commit the writer stopped waiting for lands after all.
        sqlx::query("COMMIT").execute(&mut other).await.unwrap_or_else(|e| panic!("{e}"));
        w.append(&calls(3)).await.map(|r| w.committed(&r)).unwrap_or_else(|e| panic!("{e}"));
        let seqs: Vec<i64> = store
            .audit_records("gw/calls", 0, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3], "the late commit landed and the next one follows it");
        assert!(w.suspect.is_empty(), "our own late commit was taken for someone else's write");
    }

    #[tokio::test]
    async fn records_that_land_after_the_writer_gave_up_are_exported_in_order() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (_store, url, mut w) = dedicated_writer(dir.path()).await;
        let out = dir.path().join("export.jsonl");
        w.exporter = Some(Exporter::start(Export::File(out.clone())).await.unwrap_or_else(|e| panic!("{e}")));
        let calls = |t| vec![("gw/calls".to_owned(), vec![entry(t)])];
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
        let committed = w.append(&calls(1)).await.unwrap_or_else(|e| panic!("{e}"));
        w.published(&committed).await;
        for late in [2, 4] {
            // Another process holds the write lock past the writer's patience; then lets go, and
            // the commit the writer stopped waiting for lands after all.
            sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap_or_else(|e| panic!("{e}"));
            assert!(w.append(&calls(late)).await.is_err(), "the append should have timed out");
            sqlx::query("COMMIT").execute(&mut other).await.unwrap_or_else(|e| panic!("{e}"));
            if late == 2 {
                // Found by the next append on the stream, and exported before it.
                let committed = w.append(&calls(3)).await.unwrap_or_else(|e| panic!("{e}"));
                w.published(&committed).await;
            } else {
                // Found by the checkpoint tick (or the close), with no append after it.
                w.catch_up_late(i64::MAX).await;
            }
        }
        assert!(w.late.is_empty());
        if let Some(exporter) = w.exporter.take() {
            exporter.close().await;
        }
        let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{e}"));
        let seqs: Vec<i64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}"))["seq"].as_i64())
            .map(|s| s.unwrap_or_else(|| panic!("no seq in {text}")))
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4], "every committed record exported once, in order");
    }

    #[tokio::test]
    async fn a_record_in_the_spool_twice_is_replayed_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (store, _url, mut w) = dedicated_writer(dir.path()).await;
        let now = now_ms();
        // Spooled after a failed commit, and taken in again from a killed gateway's journal.
        let twice = Spooled { partition: Partition::Calls, entry: entry(now) };
        let other = Spooled { partition: Partition::Calls, entry: entry(now + 1) };
        w.spool.append(&[twice.clone(), other, twice], u64::MAX).await.unwrap_or_else(|e| panic!("{e}"));
        w.replay().await;
        let times = call_times(&store).await;
        assert_eq!(times, [now, now + 1]);
        assert!(w.spool.is_empty());
    }

    #[tokio::test]
    async fn a_record_dropped_before_it_was_handed_over_is_recorded_all_the_same() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settings = settings(dir.path());
        let url = settings.store.clone();
        let auditor = Auditor::start(settings, None).await.unwrap_or_else(|e| panic!("{e}"));
        let now = now_ms();
        // What a `record_durably` future holds while it waits for room in the writer's queue.
        drop(Pending { auditor: &auditor, kind: Kind::Call, entry: Some(entry(now)) });
        auditor.close().await;
        let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(call_times(&store).await, [now]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_journaled_call_is_answered_before_the_store_commits_and_a_fail_closed_one_is_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settings = settings(dir.path());
        let url = settings.store.clone();
        let auditor = Auditor::start(settings, None).await.unwrap_or_else(|e| panic!("{e}"));
        let journal = dir.path().join("audit.spool.journal");
        // Recent records: retention (one hour here) leaves them alone.
        let (first, second) = (now_ms(), now_ms() + 1);
        let other = lock_store(&url).await;
        let low = tokio::time::timeout(
            Duration::from_secs(2),
            auditor.record_durably(Kind::Call, entry(first), Some(RiskTier::Low)),
        )
        .await;
        assert!(matches!(low, Ok(Ok(()))), "a low-tier record is durable once journaled: {low:?}");
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        assert!(text.contains(&format!("\"time_ms\":{first}")), "the record is in the journal: {text}");
        let high = auditor.record_durably(Kind::Call, entry(second), Some(RiskTier::High));
        waits_for_the_store(other, high, "a high-tier record waits for the store").await;
        auditor.close().await;
        let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
        let times = call_times(&store).await;
        // (In either order: the writer takes whatever has queued when the lock goes.)
        assert!(times == [first, second] || times == [second, first], "both committed: {times:?}");
        assert!(!journal.exists(), "a journal whose records are all committed is deleted at close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_whose_journal_write_fails_waits_for_the_store_and_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settings = settings(dir.path());
        let url = settings.store.clone();
        let auditor = Auditor::start(settings, None).await.unwrap_or_else(|e| panic!("{e}"));
        let journal = auditor.journal.clone().unwrap_or_else(|| panic!("a journal, with acknowledge = journal"));
        let (first, second) = (now_ms(), now_ms() + 1);
        auditor.record_durably(Kind::Call, entry(first), Some(RiskTier::Low)).await.unwrap_or_else(|e| panic!("{e}"));
        // The journal refuses records from now on (what a full disk or a lost file does to a write).
        journal.close();
        let other = lock_store(&url).await;
        let low = auditor.record_durably(Kind::Call, entry(second), Some(RiskTier::Low));
        waits_for_the_store(other, low, "a record the journal could not take waits for the store, whatever its tier")
            .await;
        auditor.close().await;
        let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
        let mut times = call_times(&store).await;
        // (In either order: the writer may take the second before it has taken the first.)
        times.sort_unstable();
        assert_eq!(times, [first, second], "each recorded once");
    }

    #[tokio::test]
    async fn retention_prunes_behind_a_signed_floor_and_the_rest_still_verifies() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settings = settings(dir.path());
        let store = Store::connect(&settings.store).await.unwrap_or_else(|e| panic!("{e}"));
        let key = SigningKey::generate();
        let keys = [key.verifying_key()];
        let mut w = writer(&store, settings, &key, dir.path());
        let now = now_ms();
        let old = now - 2 * 3600 * 1000;
        append(&mut w, "gw/calls", vec![entry(old), entry(old + 1), entry(now - 1000), entry(now)]).await;
        append(&mut w, "gw/system", vec![entry(old)]).await;
        w.checkpoint().await;
        w.retain().await;
        let calls = store.audit_records("gw/calls", 0, 100).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(calls.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4], "the two old records went");
        assert_eq!(store.audit_records("gw/system", 0, 10).await.map(|r| r.len()).ok(), Some(1), "no retention set");
        let report = store.verify_audit("gw/calls", &keys).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(report.ok(), "{:?}", report.findings);

        // Once every record is old, the head record stays: the chain goes on from it.
        w.settings.instance = "gw2".to_owned();
        append(&mut w, "gw2/calls", vec![entry(old), entry(old + 1), entry(old + 2)]).await;
        w.checkpoint().await;
        w.retain().await;
        let left = store.audit_records("gw2/calls", 0, 100).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
        append(&mut w, "gw2/calls", vec![entry(now)]).await;
        w.checkpoint().await;
        let report = store.verify_audit("gw2/calls", &keys).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(report.ok() && report.records == 2, "{report:?}");
    }

    #[tokio::test]
    async fn retention_does_not_launder_a_deletion_into_a_floor() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settings = settings(dir.path());
        let store = Store::connect(&settings.store).await.unwrap_or_else(|e| panic!("{e}"));
        let key = SigningKey::generate();
        let mut w = writer(&store, settings, &key, dir.path());
        let now = now_ms();
        let old = now - 2 * 3600 * 1000;
        append(&mut w, "gw/calls", vec![entry(old), entry(now - 3000), entry(now - 2000), entry(now)]).await;
        w.checkpoint().await;
        // Someone deletes the first record retention must keep; the next run must not sign a
        // floor above it.
        let db = dir.path().join("audit.db");
        let deleted = std::process::Command::new("python3")
            .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"DELETE FROM audit_records WHERE stream='gw/calls' AND seq=2\"); c.commit()"])
            .arg(&db)
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(deleted.success());
        w.retain().await;
        let left = store.audit_records("gw/calls", 0, 100).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3, 4], "nothing pruned");
        let report = store.verify_audit("gw/calls", &[key.verifying_key()]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.findings, vec![portcullis_audit::Finding::Missing { from: 2, to: 2 }]);
    }

    #[tokio::test]
    async fn an_injected_checkpoint_moves_no_floor() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settings = settings(dir.path());
        let store = Store::connect(&settings.store).await.unwrap_or_else(|e| panic!("{e}"));
        let key = SigningKey::generate();
        let mut w = writer(&store, settings, &key, dir.path());
        let old = now_ms() - 2 * 3600 * 1000;
        append(&mut w, "gw/calls", vec![entry(old), entry(old + 1), entry(old + 2)]).await;
        w.checkpoint().await;
        let forged =
            portcullis_audit::Checkpoint { signature: String::new(), ..key.checkpoint("gw/calls", 1, "x", 3, 0) };
        store.add_audit_checkpoint(&forged).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.floor("gw/calls").await.ok(), Some(1), "only checkpoints of the gateway's key count");
        w.retain().await;
        let left = store.audit_records("gw/calls", 0, 100).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(left.len(), 3, "a stream with a forged checkpoint is not pruned");
    }

    #[tokio::test]
    async fn records_appended_by_someone_else_are_never_signed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settings = settings(dir.path());
        let store = Store::connect(&settings.store).await.unwrap_or_else(|e| panic!("{e}"));
        let key = SigningKey::generate();
        let mut w = writer(&store, settings, &key, dir.path());
        append(&mut w, "gw/calls", vec![entry(1)]).await;
        w.checkpoint().await;
        // A forged record, chained correctly, appended behind the gateway's back.
        store.append_audit(&[("gw/calls".to_owned(), vec![entry(2)])]).await.unwrap_or_else(|e| panic!("{e}"));
        append(&mut w, "gw/calls", vec![entry(3)]).await;
        w.checkpoint().await;
        let checkpoints = store.audit_checkpoints("gw/calls").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(), [1], "nothing signed past the forgery");
        let report = store.verify_audit("gw/calls", &[key.verifying_key()]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.unanchored(), 2);
    }
}
