//! `portcullis audit …`: verify the trail's chain and signatures, search it, reconstruct an
//! interaction, and make a checkpoint signing key.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use portcullis_audit::{SigningKey, VerifyingKey};
use portcullis_gateway::Config;
use portcullis_gateway::audit::report;
use portcullis_gateway::registry::now_ms;
use portcullis_store::{AuditQuery, Store};

/// Where the trail is.
#[derive(Args)]
pub struct AuditStoreArgs {
    /// Read the audit store (and signing key) from this configuration's `[audit]`.
    #[arg(short, long, env = "PORTCULLIS_CONFIG", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The store URL (`sqlite://portcullis.db`, `postgres://…`).
    #[arg(long)]
    store: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check every stream's hash chain and checkpoint signatures; exits 1 naming each record
    /// that was modified, deleted, reordered or inserted.
    Verify {
        /// A public key checkpoints may be signed with (hex; repeat it for keys rotated out).
        /// Default: the configuration's signing key's.
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
        /// Verify the chains without checking signatures, when no key is at hand (anyone who can
        /// write the database can then rewrite it undetected).
        #[arg(long)]
        allow_unsigned: bool,
        /// Only this stream (default: all).
        #[arg(long)]
        stream: Option<String>,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Find records; every filter given must match. Prints one line per record (or JSON lines).
    Search {
        #[arg(long)]
        principal: Option<String>,
        /// The upstream server.
        #[arg(long)]
        server: Option<String>,
        /// The tool, prompt or resource (as the upstream names it).
        #[arg(long)]
        tool: Option<String>,
        /// The event kind, e.g. `call`, `list`, `session.opened`, `drift.quarantined`.
        #[arg(long)]
        kind: Option<String>,
        /// The outcome, e.g. `ok`, `denied`, `tool_error`, `failed`.
        #[arg(long, alias = "decision")]
        outcome: Option<String>,
        /// The correlation (trace) id.
        #[arg(long)]
        correlation: Option<String>,
        /// From this time: RFC 3339, or a duration ago (`1h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// Until this time: RFC 3339, or a duration ago.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Reconstruct one interaction from its correlation id: who, which host, which servers and
    /// tools, which calls were requested, approved or denied with which arguments, what came
    /// back, which call followed from which, which actions were taken.
    Trace {
        correlation: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make an Ed25519 key for signing checkpoints; writes it to a file (mode 0600) and prints
    /// the public key auditors verify with.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
}

struct Opened {
    store: Store,
    /// The public half of the configured signing key.
    configured_key: Option<VerifyingKey>,
}

async fn open(args: &AuditStoreArgs) -> anyhow::Result<Opened> {
    let (url, configured_key) = match (&args.config, &args.store) {
        (_, Some(url)) => (url.clone(), None),
        (Some(path), None) => {
            let audit = Config::load(path)?.audit.context("the configuration has the audit trail off")?;
            let key = match &audit.signing_key {
                Some(reference) => {
                    let secret = reference.resolve().await.map_err(|e| anyhow::anyhow!("audit.signing_key: {e}"))?;
                    Some(SigningKey::parse(secret.expose()).context("audit.signing_key")?.verifying_key())
                }
                None => None,
            };
            (audit.store, key)
        }
        (None, None) => bail!("say where the audit trail is: --config F or --store URL"),
    };
    let store = Store::connect(&url).await.context("cannot open the audit store")?;
    Ok(Opened { store, configured_key })
}

/// Runs an audit command.
pub async fn run(args: AuditStoreArgs, command: Command) -> anyhow::Result<()> {
    if let Command::Keygen { out } = &command {
        return keygen(out);
    }
    let Opened { store, configured_key } = open(&args).await?;
    let outcome = match command {
        Command::Verify { public_keys, allow_unsigned, stream, json } => {
            let mut keys = Vec::new();
            for hex in &public_keys {
                keys.push(VerifyingKey::parse(hex).with_context(|| format!("--public-key {hex}"))?);
            }
            if keys.is_empty() {
                keys.extend(configured_key);
            }
            if keys.is_empty() && !allow_unsigned {
                bail!(
                    "no key to check checkpoint signatures with: give --public-key (or --config with a signing_key), \
                     or --allow-unsigned to check the chains alone"
                );
            }
            verify(&store, &keys, stream, json).await
        }
        Command::Search { principal, server, tool, kind, outcome, correlation, since, until, limit, json } => {
            let query = AuditQuery {
                principal,
                server,
                item: tool,
                kind,
                outcome,
                correlation,
                since_ms: since.as_deref().map(parse_time).transpose()?,
                until_ms: until.as_deref().map(parse_time).transpose()?,
                limit,
                newest_first: false,
            };
            search(&store, &query, json).await
        }
        Command::Trace { correlation, json } => {
            let report = report::trace(&store, &correlation).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.render());
            }
            if report.records.is_empty() { Err(anyhow::anyhow!("no records for {correlation}")) } else { Ok(()) }
        }
        Command::Keygen { .. } => Ok(()),
    };
    store.close().await;
    outcome
}

async fn verify(store: &Store, keys: &[VerifyingKey], stream: Option<String>, json: bool) -> anyhow::Result<()> {
    let streams = match stream {
        Some(s) => vec![s],
        None => store.audit_streams().await?,
    };
    let mut broken = 0;
    for stream in &streams {
        let report = store.verify_audit(stream, keys).await?;
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            let state = if report.ok() { "intact" } else { "NOT INTACT" };
            println!(
                "{stream}: {state}: {} records ({}..{}), {} checkpoints, signed through {}{}",
                report.records,
                report.first_seq.map_or("-".to_owned(), |s| s.to_string()),
                report.last_seq.map_or("-".to_owned(), |s| s.to_string()),
                report.checkpoints,
                report.anchored_through.map_or("-".to_owned(), |s| s.to_string()),
                if report.signatures_checked { "" } else { " (signatures not checked: no key)" },
            );
            for f in &report.findings {
                println!("  {f}");
            }
            if report.unanchored() > 0 {
                println!("  {} records after the last checkpoint are not signed yet", report.unanchored());
            }
        }
        if !report.ok() {
            broken += 1;
        }
    }
    if streams.is_empty() && !json {
        println!("no audit streams");
    }
    if broken > 0 {
        bail!("{broken} of {} audit streams are not intact", streams.len());
    }
    Ok(())
}

async fn search(store: &Store, query: &AuditQuery, json: bool) -> anyhow::Result<()> {
    let records = store.search_audit(query).await?;
    if records.len() >= query.limit as usize {
        eprintln!("(the first {} matches; narrow the search or raise --limit for more)", query.limit);
    }
    let mut out = std::io::stdout().lock();
    for r in &records {
        if json {
            let line = portcullis_gateway::audit::record_json(r);
            writeln!(out, "{line}")?;
        } else {
            let time = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(r.entry.time_ms).unwrap_or(0)),
            );
            writeln!(
                out,
                "{time} {:<20} {:<18} {:<16} {:<12} {:<24} {}",
                r.entry.kind,
                r.entry.outcome,
                if r.entry.principal.is_empty() { "-" } else { &r.entry.principal },
                if r.entry.server.is_empty() { "-" } else { &r.entry.server },
                if r.entry.item.is_empty() { "-" } else { &r.entry.item },
                r.entry.correlation,
            )?;
        }
    }
    Ok(())
}

fn keygen(out: &PathBuf) -> anyhow::Result<()> {
    if out.exists() {
        bail!("{} exists; not overwriting a key", out.display());
    }
    let key = SigningKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(out).with_context(|| format!("cannot create {}", out.display()))?;
    writeln!(file, "{}", key.to_hex())?;
    eprintln!("wrote the signing key to {}; configure [audit] signing_key = \"file:{}\"", out.display(), out.display());
    println!("{}", key.verifying_key().to_hex());
    Ok(())
}

/// A time given as RFC 3339 or as a duration ago.
fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(now_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX));
    }
    let at = humantime::parse_rfc3339_weak(text).with_context(|| format!("not a time or a duration: {text}"))?;
    let ms = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    Ok(i64::try_from(ms).unwrap_or(i64::MAX))
}
