//! Secrets by reference: the configuration says where a credential is (`env:VAR`,
//! `file:/path`, `cmd:program args`), never the value. Values live in [`Secret`],
//! whose `Debug` and `Display` are redacted, so a credential cannot reach a log,
//! an error, a record or anything a host or model sees.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a credential is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:VAR`: a variable of the gateway's environment.
    Env(String),
    /// `file:/path`: a file's contents, trimmed (relative paths are taken from the configuration's folder).
    File(PathBuf),
    /// `cmd:program args`: what a program prints, trimmed (run without a shell, at connect time).
    Command { program: String, args: Vec<String> },
}

/// A credential's value. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

/// How long a `cmd:` reference may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl SecretRef {
    /// Parses a reference; the error never echoes the text (it may be the secret itself, misplaced).
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        if let Some(var) = text.strip_prefix("env:") {
            if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err("expected env:VAR with a variable name (letters, digits, '_')".to_owned());
            }
            return Ok(Self::Env(var.to_owned()));
        }
        if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err("expected file:/path/to/secret".to_owned());
            }
            return Ok(Self::File(base.join(path)));
        }
        if let Some(command) = text.strip_prefix("cmd:") {
            let mut words = command.split_whitespace().map(str::to_owned);
            let Some(program) = words.next() else {
                return Err("expected cmd:program [args]".to_owned());
            };
            return Ok(Self::Command { program, args: words.collect() });
        }
        Err("expected a reference, env:VAR, file:/path or cmd:program (the secret itself never goes in the \
             configuration)"
            .to_owned())
    }

    /// Reads an `env:` or `file:` secret now; refuses an unset or empty one. `cmd:` needs [`Self::resolve`].
    pub fn resolve_now(&self) -> Result<Secret, String> {
        let value = match self {
            Self::Env(var) => std::env::var(var).map_err(|_| format!("the environment variable {var} is not set"))?,
            Self::File(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?
            }
            Self::Command { .. } => return Err(format!("{self} can only be read by a running gateway")),
        };
        Secret::non_empty(&value, self)
    }

    /// Reads the secret (running the command of a `cmd:` reference, with a timeout).
    pub async fn resolve(&self) -> Result<Secret, String> {
        let Self::Command { program, args } = self else { return self.resolve_now() };
        let run = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(format!("{self}: cannot run: {}", e.kind())),
            Err(_) => return Err(format!("{self}: did not finish within {}s", COMMAND_TIMEOUT.as_secs())),
        };
        if !output.status.success() {
            return Err(format!("{self}: exited with {}", output.status));
        }
        let text = String::from_utf8(output.stdout).map_err(|_| format!("{self}: printed something not UTF-8"))?;
        Secret::non_empty(&text, self)
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "env:{var}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Command { program, .. } => write!(f, "cmd:{program}"),
        }
    }
}

impl Secret {
    fn non_empty(value: &str, from: &SecretRef) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{from} is empty"));
        }
        Ok(Self(value.into()))
    }

    /// A secret from a value already in hand (tests, API keys shown once).
    pub fn new(value: impl Into<Box<str>>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it (a header, a child's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds_and_refuses_bare_values() {
        let base = Path::new("/etc/portcullis");
        assert_eq!(SecretRef::parse("env:GH_TOKEN", base), Ok(SecretRef::Env("GH_TOKEN".into())));
        assert_eq!(SecretRef::parse("file:key", base), Ok(SecretRef::File("/etc/portcullis/key".into())));
        assert_eq!(
            SecretRef::parse("cmd:vault read -field=token x", base),
            Ok(SecretRef::Command {
                program: "vault".into(),
                args: vec!["read".into(), "-field=token".into(), "x".into()]
            })
        );
        for bad in ["ghp_0123456789", "env:", "env:A-B", "file:", "cmd:", "vault:x"] {
            let e = SecretRef::parse(bad, base).err().unwrap_or_default();
            assert!(!e.is_empty(), "{bad}");
            assert!(!e.contains("0123456789"), "never echoed: {e}");
        }
    }

    #[tokio::test]
    async fn resolves_files_and_commands_trimmed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(SecretRef::File(path).resolve().await.map(|s| s.expose().to_owned()), Ok("s3cret".into()));
        let echo = SecretRef::Command { program: "echo".into(), args: vec!["  from-cmd ".into()] };
        assert_eq!(echo.resolve().await.map(|s| s.expose().to_owned()), Ok("from-cmd".into()));
        let failing = SecretRef::Command { program: "false".into(), args: vec![] };
        assert!(failing.resolve().await.is_err());
        assert!(SecretRef::Env("PORTCULLIS_SURELY_UNSET_VAR".into()).resolve().await.is_err());
    }

    #[test]
    fn values_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }
}
