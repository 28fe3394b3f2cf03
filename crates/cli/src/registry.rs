//! `portcullis registry …`: the operator's interface to the registry, working on
//! the same store as the running gateway (which picks changes up within a second).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use portcullis_gateway::Config;
use portcullis_gateway::operator::{self, OperatorError};
use portcullis_registry::pinning;
use portcullis_registry::scan::{Finding, Severity, max_severity};
use portcullis_registry::server_json::{ServerEntry, ServerJson};
use portcullis_store::{EntryRecord, EntryStatus, PinRecord, PinState, Store};

/// Where the registry is.
#[derive(Args)]
pub struct StoreArgs {
    /// Read the store URL (and the blocking severity) from this configuration's `[registry]`.
    #[arg(short, long, env = "PORTCULLIS_CONFIG", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The store URL (`sqlite://portcullis.db`, `postgres://…`).
    #[arg(long)]
    store: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Add one server.json document (with its `io.portcullis/governance` fields) as a pending entry.
    Add { file: PathBuf },
    /// Import documents: one, a JSON array of them, or a registry listing (`{"servers": [{"server": …}]}`).
    Import { file: PathBuf },
    /// List the entries.
    List,
    /// Show an entry: its document, status, pins and recent drift.
    Show {
        name: String,
        #[arg(long)]
        version: Option<String>,
    },
    /// Approve an entry and its pending tools, prompts and resource templates.
    Approve {
        name: String,
        #[arg(long)]
        version: Option<String>,
        /// Approve despite scan findings at or above the blocking severity; the reason is recorded.
        #[arg(long = "override", value_name = "REASON")]
        override_reason: Option<String>,
        /// Who approves (recorded); default: $USER.
        #[arg(long)]
        actor: Option<String>,
    },
    /// Revoke an entry: the gateway disconnects the server and refuses its calls.
    Revoke {
        name: String,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        actor: Option<String>,
    },
    /// Show what changed in each quarantined item since it was approved.
    Diff { name: String },
    /// Scan an entry's observed metadata for poisoning.
    Scan { name: String },
    /// Print an entry as server.json, with its governance and current pins.
    Export {
        name: String,
        #[arg(long)]
        version: Option<String>,
    },
}

struct Registry {
    store: Store,
    block: Severity,
}

async fn open(args: &StoreArgs) -> anyhow::Result<Registry> {
    let (url, block) = match (&args.config, &args.store) {
        (_, Some(url)) => (url.clone(), Severity::High),
        (Some(path), None) => {
            let config = Config::load(path)?;
            let registry = config.registry.context("the configuration has no registry")?;
            (registry.store, registry.block_severity)
        }
        (None, None) => bail!("say where the registry is: --config F or --store URL"),
    };
    let store =
        Store::connect(&url).await.with_context(|| format!("cannot open the registry store {}", redact(&url)))?;
    Ok(Registry { store, block })
}

/// A URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

fn actor(given: Option<String>) -> String {
    given.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "cli".to_owned())
}

/// Runs a registry command.
pub async fn run(args: StoreArgs, command: Command) -> anyhow::Result<()> {
    let cx = open(&args).await?;
    match command {
        Command::Add { file } => {
            let entry = ServerEntry::import(&read(&file)?).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            add(&cx, &entry).await?;
            println!("added {} {} (pending approval)", entry.server.name, entry.server.version);
        }
        Command::Import { file } => {
            let text = read(&file)?;
            let docs = operator::documents(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let (added, refused) = operator::import(&cx.store, docs, &actor(None)).await;
            let n = added.len();
            println!("imported {n} entr{} (pending approval)", if n == 1 { "y" } else { "ies" });
            if !refused.is_empty() {
                let lines: Vec<String> =
                    refused.iter().map(|r| format!("document {}: {}", r.index, r.problems.join("; "))).collect();
                bail!("{} document(s) refused:\n{}", refused.len(), lines.join("\n"));
            }
        }
        Command::List => {
            println!("{:<40} {:<12} {:<9} {:<16} {:<9} DATA", "NAME", "VERSION", "STATUS", "UPSTREAM", "RISK");
            for e in cx.store.list_entries().await? {
                let g = governance(&e);
                println!(
                    "{:<40} {:<12} {:<9} {:<16} {:<9} {}",
                    e.name,
                    e.version,
                    status(e.status),
                    g.as_ref().map_or("?", |g| g.upstream.as_str()),
                    g.as_ref().map_or("?".to_owned(), |g| g.risk_tier.to_string()),
                    g.as_ref().map_or("?".to_owned(), |g| g.data_classification.to_string()),
                );
            }
        }
        Command::Show { name, version } => {
            let e = entry(&cx, &name, version.as_deref()).await?;
            println!("{} {} — {} (revision {}, by {})", e.name, e.version, status(e.status), e.revision, e.updated_by);
            println!("{}", serde_json::to_string_pretty(&e.document)?);
            println!("\npins:");
            for p in cx.store.pins(&e.name).await? {
                println!("  {:<9} {:<40} {}", state(p.state), key(&p), p.approved_hash.as_deref().unwrap_or("-"));
            }
            println!("\nrecent drift:");
            for d in cx.store.drift(Some(&e.name), 20).await? {
                println!(
                    "  {:?} {} ({} finding(s))",
                    d.change,
                    pinning::pin_key(operator::item_kind(d.kind), &d.name),
                    d.findings.as_array().map_or(0, Vec::len)
                );
            }
        }
        Command::Approve { name, version, override_reason, actor: who } => {
            approve(&cx, &name, version.as_deref(), override_reason.as_deref(), &actor(who)).await?;
        }
        Command::Revoke { name, version, actor: who } => {
            let e = operator::revoke_entry(&cx.store, &name, version.as_deref(), None, &actor(who)).await?;
            println!("revoked {} {}", e.name, e.version);
        }
        Command::Diff { name } => {
            let mut any = false;
            for p in cx.store.pins(&name).await? {
                if !matches!(p.state, PinState::Quarantined | PinState::New) {
                    continue;
                }
                any = true;
                println!("{} ({}):\n{}\n", key(&p), state(p.state), operator::pin_diff(&p));
            }
            if !any {
                println!("nothing awaits approval for {name}");
            }
        }
        Command::Scan { name } => {
            let scanned = operator::scan_entry(&cx.store, &name).await?;
            for (item, findings) in &scanned {
                print_findings(item, findings);
            }
            match scanned.iter().filter_map(|(_, f)| max_severity(f)).max() {
                Some(s) if s >= cx.block => bail!("findings at {s:?} or above block approval"),
                _ => println!("no finding blocks approval"),
            }
        }
        Command::Export { name, version } => {
            let e = entry(&cx, &name, version.as_deref()).await?;
            let mut doc = e.document.clone();
            let pins: serde_json::Map<String, serde_json::Value> = cx
                .store
                .pins(&e.name)
                .await?
                .into_iter()
                .filter(|p| p.state == PinState::Approved)
                .filter_map(|p| p.approved_hash.clone().map(|h| (key(&p), serde_json::Value::String(h))))
                .collect();
            if let Some(g) =
                doc.pointer_mut(&format!("/_meta/{}", portcullis_registry::model::GOVERNANCE_KEY.replace('/', "~1")))
            {
                g["pins"] = serde_json::Value::Object(pins);
            }
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(())
}

async fn add(cx: &Registry, entry: &ServerEntry) -> anyhow::Result<()> {
    operator::add_entry(&cx.store, entry, &actor(None)).await?;
    Ok(())
}

async fn approve(
    cx: &Registry,
    name: &str,
    version: Option<&str>,
    override_reason: Option<&str>,
    who: &str,
) -> anyhow::Result<()> {
    match operator::approve_entry(&cx.store, name, version, None, override_reason, who, cx.block).await {
        Ok(a) => {
            for b in &a.overridden {
                print_findings(&b.item, &b.findings);
            }
            println!(
                "approved {} {} ({} item(s) pinned{})",
                a.name,
                a.version,
                a.pinned,
                if a.overridden.is_empty() { "" } else { ", with override" }
            );
            Ok(())
        }
        Err(OperatorError::Blocked { block, items }) => {
            for b in &items {
                print_findings(&b.item, &b.findings);
            }
            bail!(
                "not approved: {} item(s) have findings at {:?} or above ({}); review them, then approve with --override \"reason\"",
                items.len(),
                block,
                items.iter().map(|b| b.item.as_str()).collect::<Vec<_>>().join(", ")
            )
        }
        Err(e) => Err(e.into()),
    }
}

async fn entry(cx: &Registry, name: &str, version: Option<&str>) -> anyhow::Result<EntryRecord> {
    Ok(operator::find_entry(&cx.store, name, version).await?)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn governance(e: &EntryRecord) -> Option<portcullis_registry::model::Governance> {
    let server: ServerJson = serde_json::from_value(e.document.clone()).ok()?;
    ServerEntry::from_server(server).ok().map(|s| s.governance)
}

fn print_findings(item: &str, findings: &[Finding]) {
    for f in findings {
        println!("  {item}: [{:?}] {} at {}: {} ({})", f.severity, f.rule, f.path, f.message, f.excerpt);
    }
}

fn key(p: &PinRecord) -> String {
    operator::pin_key(p)
}

fn status(s: EntryStatus) -> &'static str {
    match s {
        EntryStatus::Pending => "pending",
        EntryStatus::Approved => "approved",
        EntryStatus::Revoked => "revoked",
    }
}

fn state(s: PinState) -> &'static str {
    match s {
        PinState::Approved => "approved",
        PinState::Quarantined => "quarantined",
        PinState::New => "new",
        PinState::Removed => "removed",
    }
}
