//! The policy control: the running Cedar policy sets (enforced and shadow),
//! loaded from files, swapped atomically when the files change (an invalid
//! change is refused and the running sets stay), consulted by the pipeline's
//! policy stage on every governed call and by the list methods, which show a
//! principal only what it may use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use portcullis_policy::{Decision, Enforcement, Engine, Outcome, PolicySet, PolicySource, Request};

use crate::config::{PolicyMode, PolicySettings};

/// The running policy and what it was loaded from.
pub struct PolicyControl {
    settings: PolicySettings,
    engine: ArcSwap<Engine>,
    /// The files the running sets came from, with their modification times and sizes.
    loaded: Mutex<Vec<FileStamp>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
}

impl PolicyControl {
    /// Loads and validates every set; every problem is reported at once.
    pub fn load(settings: PolicySettings) -> Result<Arc<Self>, String> {
        let (engine, stamps) = compile(&settings)?;
        Ok(Arc::new(Self { settings, engine: ArcSwap::from_pointee(engine), loaded: Mutex::new(stamps) }))
    }

    /// The running sets.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Whether refusals are enforced (else only recorded).
    pub fn enforcing(&self) -> bool {
        self.settings.mode == PolicyMode::Enforce
    }

    /// How often the files are checked for changes.
    pub fn reload_interval(&self) -> Duration {
        self.settings.reload_interval
    }

    /// The decision on one request. In shadow mode a denial is recorded and turned into an allow.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        let mut decision = self.engine.load().decide(request);
        for shadow in &decision.shadow {
            if shadow.outcome != Outcome::Allow {
                tracing::info!(
                    target: "portcullis::policy",
                    set = %shadow.name,
                    principal = %request.principal,
                    server = request.resource.server,
                    name = request.resource.name,
                    policies = ?shadow.policies,
                    "shadow policy would refuse"
                );
            }
        }
        if decision.outcome != Outcome::Allow && !self.enforcing() {
            tracing::info!(
                target: "portcullis::policy",
                principal = %request.principal,
                server = request.resource.server,
                name = request.resource.name,
                reason = decision.reason,
                policies = ?decision.policies,
                "policy would refuse (shadow mode: allowed)"
            );
            decision.outcome = Outcome::Allow;
        }
        decision
    }

    /// Whether the principal may see an item in a list (the decision at list time is not a denial).
    pub fn visible(&self, request: &Request<'_>) -> bool {
        !self.enforcing() || self.engine.load().decide(request).outcome != Outcome::Deny
    }

    /// Reloads the sets if a file changed; an invalid change keeps the running sets.
    /// Returns whether new sets were swapped in.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let current = stamps(&self.settings);
        let changed = *self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) != current;
        if !changed {
            return Ok(false);
        }
        // Whatever the outcome, this version of the files has been looked at.
        *self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = current;
        let (engine, _) = compile(&self.settings)?;
        self.engine.store(Arc::new(engine));
        Ok(true)
    }
}

/// Every set the settings name, compiled, and the stamps of the files read.
fn compile(settings: &PolicySettings) -> Result<(Engine, Vec<FileStamp>), String> {
    let before = stamps(settings);
    let mut sets = Vec::new();
    let mut problems = Vec::new();
    let mut enforced = read_sources(&settings.paths, &mut problems);
    if settings.include_default {
        sets.push(PolicySet::default_tiers());
    }
    if !enforced.is_empty() {
        match PolicySet::compile("policy", Enforcement::Enforce, &std::mem::take(&mut enforced)) {
            Ok(set) => sets.push(set),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let shadow = read_sources(&settings.shadow_paths, &mut problems);
    if !shadow.is_empty() {
        match PolicySet::compile("shadow", Enforcement::Shadow, &shadow) {
            Ok(set) => sets.push(set),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    Ok((Engine::new(sets), before))
}

/// The `*.cedar` files a list of paths names (folders are read in name order).
fn policy_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            inside.retain(|p| p.extension().is_some_and(|e| e == "cedar") && p.is_file());
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    files
}

fn read_sources(paths: &[PathBuf], problems: &mut Vec<String>) -> Vec<PolicySource> {
    let mut sources = Vec::new();
    for file in policy_files(paths) {
        match std::fs::read_to_string(&file) {
            Ok(text) => sources.push(PolicySource { name: display(&file), text }),
            Err(e) => problems.push(format!("{}: cannot read: {e}", file.display())),
        }
    }
    sources
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn stamps(settings: &PolicySettings) -> Vec<FileStamp> {
    let mut all = settings.paths.clone();
    all.extend(settings.shadow_paths.iter().cloned());
    // A folder's own stamp moves when a file is added or removed.
    let mut out: Vec<FileStamp> = all
        .iter()
        .filter(|p| p.is_dir())
        .chain(policy_files(&all).iter())
        .map(|path| {
            let meta = std::fs::metadata(path).ok();
            FileStamp {
                path: path.clone(),
                modified: meta.as_ref().and_then(|m| m.modified().ok()),
                len: meta.map_or(0, |m| m.len()),
            }
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}
