//! `portcullis`: a governed gateway for the Model Context Protocol.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use portcullis_gateway::admin::{self, Admin};
use portcullis_gateway::config::ConfigError;
use portcullis_gateway::downstream;
use portcullis_gateway::identity::Authenticator;
use portcullis_gateway::{Config, Gateway};
use tokio_util::sync::CancellationToken;

mod apikey;
mod audit;
mod policy;
mod registry;

/// mimalloc instead of glibc's malloc: per-thread free lists, no arena lock between the runtime's
/// workers, no consolidation passes. The forwarding path allocates per request (bodies, headers,
/// JSON values), and glibc's allocator was ~12 % of the gateway's CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Portcullis sits between AI hosts and the MCP servers they use: hosts connect
/// to one endpoint, and Portcullis connects to the approved upstream servers.
#[derive(Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway's HTTP listener (Streamable HTTP, both protocol eras) as configured.
    Serve {
        /// The configuration file (TOML).
        #[arg(short, long, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Override `[listen] address`, e.g. 127.0.0.1:9000.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Serve one host over stdin/stdout, for desktop hosts that launch their MCP servers.
    Stdio {
        /// The configuration file (TOML).
        #[arg(short, long, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Which route to expose (its path); default: the first route.
        #[arg(long)]
        route: Option<String>,
    },
    /// Validate a configuration file without starting anything; lists every problem.
    Check {
        /// The configuration file (TOML).
        #[arg(short, long, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Manage the registry of approved servers and their pinned tool metadata.
    Registry {
        #[command(flatten)]
        store: registry::StoreArgs,
        #[command(subcommand)]
        command: registry::Command,
    },
    /// Manage workload API keys (shown once at creation; only their hashes are stored).
    Apikey {
        #[command(flatten)]
        store: apikey::KeyStoreArgs,
        #[command(subcommand)]
        command: apikey::Command,
    },
    /// Verify, search and reconstruct from the audit trail.
    Audit {
        #[command(flatten)]
        store: audit::AuditStoreArgs,
        #[command(subcommand)]
        command: audit::Command,
    },
    /// Check policy files and run decision fixtures, so a policy change is reviewed like code.
    Policy {
        #[command(subcommand)]
        command: policy::Command,
    },
    /// Run the bundled demo MCP server (the quickstart's upstream) on stdio, or on HTTP with --http.
    Demo {
        /// Serve Streamable HTTP on this address instead of stdio.
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A serving gateway's configuration is read before the runtime starts: it sizes the runtime.
    let config = match &cli.command {
        Command::Serve { config, .. } | Command::Stdio { config, .. } => Some(Config::load(config)),
        _ => None,
    };
    // One thread per core unless configured.
    let threads = config
        .as_ref()
        .and_then(|c| c.as_ref().ok())
        .and_then(|c| c.gateway.worker_threads)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    // `serve` runs one single-threaded runtime per serving thread (this is the first; see
    // `downstream::threads`); the other commands share one work-stealing runtime.
    let mut builder = if matches!(cli.command, Command::Serve { .. }) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config, threads)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs() {
    // Logs always go to stderr: stdout is the protocol channel in stdio mode.
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// `config`: the serving commands' configuration, already read by `main`; `threads`: the serving
/// threads it asks for (one per core by default).
async fn run(cli: Cli, config: Option<Result<Config, ConfigError>>, threads: usize) -> anyhow::Result<()> {
    let loaded = || config.context("the configuration was not read")?.map_err(anyhow::Error::from);
    match cli.command {
        Command::Check { config } => {
            let c = Config::load(&config)?;
            let policy = policy::describe(&c.policy).with_context(|| format!("{}: [policy]", config.display()))?;
            println!(
                "{}: ok ({} upstream(s), {} route(s){}; {policy})",
                config.display(),
                c.upstreams.len(),
                c.routes.len(),
                c.listen.as_ref().map(|l| format!(", listening on {}", l.address)).unwrap_or_default()
            );
            Ok(())
        }
        Command::Serve { config: _, listen } => {
            init_logs();
            let mut c = loaded()?;
            if let Some(addr) = listen
                && let Some(l) = c.listen.as_mut()
            {
                l.address = addr;
            }
            let settings = c
                .listen
                .clone()
                .context("the configuration has no [listen] section; add one or use `portcullis stdio`")?;
            if c.auth.is_none() && !settings.address.ip().is_loopback() {
                anyhow::bail!(
                    "{} is not a loopback address: hosts there must authenticate; configure [auth]",
                    settings.address
                );
            }
            // Hosts' credentials are checked by this; its key store opens before anything starts.
            let auth = match &c.auth {
                Some(a) => Some(Authenticator::open(a).await.map_err(anyhow::Error::msg)?),
                None => None,
            };
            // The admin API's token is read and its address bound before anything starts.
            let admin = match (&c.admin, &c.registry) {
                (Some(a), Some(registry)) => {
                    let state = Admin::open(a, registry, c.audit.as_ref()).await.map_err(anyhow::Error::msg)?;
                    let listener = tokio::net::TcpListener::bind(a.address)
                        .await
                        .with_context(|| format!("cannot listen on {} (admin)", a.address))?;
                    Some((state, listener))
                }
                _ => None,
            };
            let metrics_listener = match c.metrics.address {
                Some(address) => Some(
                    tokio::net::TcpListener::bind(address)
                        .await
                        .with_context(|| format!("cannot listen on {address} (metrics)"))?,
                ),
                None => None,
            };
            let gateway = Gateway::start(c).await?;
            tracing::info!(workers = threads, "runtime started");
            let listener = tokio::net::TcpListener::bind(settings.address)
                .await
                .with_context(|| format!("cannot listen on {}", settings.address))?;
            let local = listener.local_addr()?;
            for route in &gateway.routes {
                tracing::info!(url = %format!("http://{local}{}", route.path()), "route ready");
            }
            let stop = CancellationToken::new();
            tokio::spawn(shutdown_signal(stop.clone()));
            let admin = match admin {
                Some((state, admin_listener)) => {
                    let address = admin_listener.local_addr()?;
                    eprintln!("portcullis admin API listening on http://{address}");
                    let app = admin::router(Arc::clone(&state)).merge(gateway.metrics().router());
                    let task = tokio::spawn(downstream::http::serve(admin_listener, app, stop.clone()));
                    Some((state, task))
                }
                None => None,
            };
            let metrics_task = match metrics_listener {
                Some(metrics_listener) => {
                    eprintln!("portcullis metrics at http://{}/metrics", metrics_listener.local_addr()?);
                    let app = gateway.metrics().router();
                    Some(tokio::spawn(downstream::http::serve(metrics_listener, app, stop.clone())))
                }
                None => None,
            };
            eprintln!("portcullis listening on http://{local}");
            let app = downstream::http::router(Arc::clone(&gateway), settings, auth);
            let served = downstream::threads::serve_on_threads(listener, app, stop.clone(), threads).await;
            stop.cancel();
            if let Some((state, task)) = admin {
                match task.await {
                    Ok(Err(e)) => tracing::error!(error = %e, "admin API listener failed"),
                    Err(e) => tracing::error!(error = %e, "admin API listener panicked"),
                    Ok(Ok(())) => {}
                }
                state.close().await;
            }
            if let Some(task) = metrics_task
                && let Ok(Err(e)) = task.await
            {
                tracing::error!(error = %e, "metrics listener failed");
            }
            gateway.shutdown().await;
            served?;
            Ok(())
        }
        Command::Stdio { config: _, route } => {
            init_logs();
            let c = loaded()?;
            if c.audit.as_ref().is_some_and(|a| a.export == Some(portcullis_gateway::audit::Export::Stdout)) {
                anyhow::bail!(
                    "[audit] export = \"stdout\" cannot be used with `portcullis stdio`: stdout carries the protocol"
                );
            }
            let gateway = Gateway::start(c).await?;
            let route = match route {
                Some(path) => gateway.route_for_path(&path).with_context(|| format!("no route with path {path}"))?,
                None => gateway.routes.first().cloned().context("no routes configured")?,
            };
            downstream::stdio::serve(Arc::clone(&gateway), route, tokio::io::stdin(), tokio::io::stdout()).await?;
            gateway.shutdown().await;
            Ok(())
        }
        Command::Registry { store, command } => registry::run(store, command).await,
        Command::Apikey { store, command } => apikey::run(store, command).await,
        Command::Policy { command } => policy::run(command),
        Command::Audit { store, command } => audit::run(store, command).await,
        Command::Demo { http } => {
            match http {
                Some(addr) => {
                    let listener = tokio::net::TcpListener::bind(addr).await?;
                    eprintln!("listening on http://{}/mcp", listener.local_addr()?);
                    portcullis_demo::run_http(listener).await?;
                }
                None => portcullis_demo::run_stdio().await?,
            }
            Ok(())
        }
    }
}

async fn shutdown_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = ctrl_c.await;
                stop.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    stop.cancel();
}
