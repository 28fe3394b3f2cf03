//! `portcullis policy …`: validate the policy a configuration names and run
//! decision fixtures against it, so a policy change is reviewed like code.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use portcullis_gateway::Config;
use portcullis_gateway::config::{PolicyMode, PolicySettings};
use portcullis_gateway::policy::PolicyControl;

#[derive(Subcommand)]
pub enum Command {
    /// Validate the policy files a configuration names (against the schema), listing every problem.
    Check {
        #[arg(short, long, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
    },
    /// Run decision fixtures (principal, call, expected decision) against the configured policy.
    Test {
        #[arg(short, long, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Fixture files (TOML).
        #[arg(required = true)]
        fixtures: Vec<PathBuf>,
    },
}

/// A one-line description of a configuration's policy, after loading (and so validating) it.
pub fn describe(settings: &PolicySettings) -> anyhow::Result<String> {
    if settings.mode == PolicyMode::Off {
        return Ok("policy off".to_owned());
    }
    let control =
        PolicyControl::load(settings.clone()).map_err(|e| anyhow::anyhow!("the policy does not validate:\n{e}"))?;
    let mode = if settings.mode == PolicyMode::Shadow { "shadow" } else { "enforced" };
    Ok(format!("policy {mode}: {} polic(ies)", control.engine().sets().map(|s| s.policy_ids().len()).sum::<usize>()))
}

/// Runs a policy command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { config } => {
            let c = Config::load(&config)?;
            println!("{}: {}", config.display(), describe(&c.policy)?);
            Ok(())
        }
        Command::Test { config, fixtures } => {
            let c = Config::load(&config)?;
            let control = PolicyControl::load(c.policy.clone())
                .map_err(|e| anyhow::anyhow!("the policy does not validate:\n{e}"))?;
            let engine = control.engine();
            let (mut passed, mut failed) = (0usize, 0usize);
            for file in &fixtures {
                let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
                let report = portcullis_policy::run_fixtures(&engine, &text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                for case in &report.cases {
                    if case.passed {
                        passed += 1;
                        println!("ok   {}: {}", file.display(), case.name);
                    } else {
                        failed += 1;
                        println!(
                            "FAIL {}: {}: {}",
                            file.display(),
                            case.name,
                            case.failure.as_deref().unwrap_or("failed")
                        );
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            if failed > 0 {
                bail!("{failed} fixture case(s) failed");
            }
            Ok(())
        }
    }
}
