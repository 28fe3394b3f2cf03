//! `portcullis apikey …`: workload API keys. A key is shown once, at creation;
//! the store keeps only the hash of its secret part.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use portcullis_gateway::Config;
use portcullis_gateway::registry::now_ms;
use portcullis_identity::api_key;
use portcullis_store::{ApiKeyRecord, Store};

/// Where the keys are.
#[derive(Args)]
pub struct KeyStoreArgs {
    /// Read the key store from this configuration's `[auth.api_keys]`.
    #[arg(short, long, env = "PORTCULLIS_CONFIG", conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The store URL (`sqlite://portcullis.db`, `postgres://…`).
    #[arg(long)]
    store: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a key for a workload; prints the key once (it cannot be shown again).
    Create {
        /// The workload principal the key authenticates as.
        #[arg(long)]
        principal: String,
        /// A label for operators.
        #[arg(long, default_value = "")]
        name: String,
        /// A group the principal is in (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A scope the key carries (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// How long the key is valid, e.g. `30d` or `12h`; default: until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List the keys (never their secrets).
    List,
    /// Revoke a key by its id: it stops working within seconds on every gateway.
    Revoke { id: String },
}

async fn open(args: &KeyStoreArgs) -> anyhow::Result<Store> {
    let url = match (&args.config, &args.store) {
        (_, Some(url)) => url.clone(),
        (Some(path), None) => Config::load(path)?
            .auth
            .and_then(|a| a.api_key_store)
            .context("the configuration has no [auth.api_keys]")?,
        (None, None) => bail!("say where the keys are: --config F or --store URL"),
    };
    Store::connect(&url).await.context("cannot open the key store")
}

/// Runs an apikey command.
pub async fn run(args: KeyStoreArgs, command: Command) -> anyhow::Result<()> {
    let store = open(&args).await?;
    match command {
        Command::Create { principal, name, groups, scopes, tenant, expires_in } => {
            let (id, key, hash) = api_key::generate();
            let now = now_ms();
            let expires_ms = expires_in.map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
            store
                .create_api_key(&ApiKeyRecord {
                    id: id.as_str().to_owned(),
                    name,
                    principal,
                    groups,
                    scopes,
                    tenant,
                    hash: hash.to_hex(),
                    created_ms: now,
                    expires_ms,
                    revoked_ms: None,
                })
                .await?;
            eprintln!("created key {id}; it is shown once, store it now:");
            println!("{key}");
        }
        Command::List => {
            println!("{:<18} {:<20} {:<20} {:<8} SCOPES", "ID", "PRINCIPAL", "NAME", "STATE");
            let now = now_ms();
            for k in store.api_keys().await? {
                let state = if k.revoked_ms.is_some() {
                    "revoked"
                } else if k.expires_ms.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                };
                println!("{:<18} {:<20} {:<20} {:<8} {}", k.id, k.principal, k.name, state, k.scopes.join(" "));
            }
        }
        Command::Revoke { id } => {
            store.revoke_api_key(&id, now_ms()).await?;
            println!("revoked {id}");
        }
    }
    store.close().await;
    Ok(())
}
