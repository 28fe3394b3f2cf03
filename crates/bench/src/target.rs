//! What the load generator talks to: the demo upstream directly, or a gateway route in front of it.
//! A gateway *configuration* is a template, so the same scenarios can be re-run against another one
//! (forward-only today; with every control on once the controls exist: `--variant NAME=FILE`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::connection::Endpoint;
use crate::issuer::Issuer;
use crate::process::{self, Credential, Peer};

/// The baseline every other target is compared against.
pub const DIRECT: &str = "direct-http";
/// The reference relay (`relay.rs`): one HTTP hop with no logic, in front of the same demo.
pub const RELAY: &str = "relay-http";
/// The forward-only gateway in front of the HTTP demo; variants are also compared against it.
pub const GATEWAY: &str = "gateway-http";
/// The same gateway, route to a stdio demo it supervises.
pub const GATEWAY_STDIO: &str = "gateway-stdio";

/// The placeholder a gateway configuration template uses for the HTTP demo's URL.
pub const DEMO_URL: &str = "{{DEMO_URL}}";

/// One endpoint under load and the processes whose CPU time serves it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `direct-http`, `relay-http`, `gateway-http`, `gateway-stdio`, `gateway-<variant>`,
    /// `gateway-agg<N>`.
    pub name: String,
    /// Where requests go.
    pub endpoint: Arc<Endpoint>,
    /// The gateway's pid, if this is a gateway (or the reference relay, which stands in its place).
    pub gateway_pid: Option<u32>,
    /// Every server process involved (gateway and upstreams).
    pub server_pids: Vec<u32>,
}

impl Target {
    /// CPU used so far by the server processes, and by the gateway alone, µs.
    pub fn cpu_us(&self) -> (Option<u64>, Option<u64>) {
        let all = self.server_pids.iter().map(|p| process::cpu_us(*p)).sum::<Option<u64>>();
        (all, self.gateway_pid.and_then(process::cpu_us))
    }
}

/// The name of the all-controls gateway every run includes (unless `--no-controls`).
pub const CONTROLS: &str = "controls";

/// Its configuration template: every control that has landed, the audit trail included.
pub const CONTROLS_CONFIG: &str = include_str!("../controls.toml");

/// The all-controls gateway with the audit trail off, which every run includes beside it: what
/// the controls cost apart from the audit trail's durable record per call.
pub const CONTROLS_NO_AUDIT: &str = "controls-noaudit";

/// Its configuration template.
pub const CONTROLS_NO_AUDIT_CONFIG: &str = include_str!("../controls-noaudit.toml");

/// The forward-only gateway configuration: a passthrough route to the HTTP demo at `/mcp` and
/// to a supervised stdio demo at `/stdio`. `max_sessions` leaves room for the session benchmark.
pub fn forward_only_config() -> String {
    format!(
        r#"[gateway]
request_timeout = "30s"

# Forward-only: the baseline the controls are measured against.
[registry]
mode = "off"

[policy]
mode = "off"

[validation]
mode = "off"

[listen]
address = "127.0.0.1:0"
max_sessions = 100000

[[upstream]]
name = "demo"
transport = "http"
url = "{DEMO_URL}"

[[upstream]]
name = "demo_stdio"
transport = "stdio"
command = "$PORTCULLIS_EXE"
args = ["demo"]

[[route]]
path = "/mcp"
upstreams = ["demo"]
names = "passthrough"

[[route]]
path = "/stdio"
upstreams = ["demo_stdio"]
names = "passthrough"
"#
    )
}

/// A gateway aggregating `n` stdio demos at `/agg` (names prefixed `u0__` … `u{n-1}__`).
pub fn aggregate_config(n: usize) -> String {
    let mut out = String::from(
        "[registry]\nmode = \"off\"\n\n[policy]\nmode = \"off\"\n\n[validation]\nmode = \"off\"\n\n\
         [listen]\naddress = \"127.0.0.1:0\"\n\n",
    );
    for i in 0..n {
        out.push_str(&format!(
            "[[upstream]]\nname = \"u{i}\"\ntransport = \"stdio\"\ncommand = \"$PORTCULLIS_EXE\"\nargs = [\"demo\"]\n\n"
        ));
    }
    let names: Vec<String> = (0..n).map(|i| format!("\"u{i}\"")).collect();
    out.push_str(&format!("[[route]]\npath = \"/agg\"\nupstreams = [{}]\nnames = \"prefixed\"\n", names.join(", ")));
    out
}

/// The placeholder for the harness's token issuer (`http://127.0.0.1:PORT`) in a template whose
/// gateway authenticates hosts with OAuth bearer JWTs.
pub const ISSUER: &str = "{{ISSUER}}";

/// Starts a gateway from a configuration template, after its upstreams are ready. A template
/// naming `{{ISSUER}}` gets `issuer`'s URL there, and its hosts a token from it for the route
/// `/mcp` under the template's `[auth] public_url`.
pub fn start_gateway(exe: &Path, template: &str, demo: &Peer, issuer: Option<&Issuer>) -> anyhow::Result<Peer> {
    let config = template.replace(DEMO_URL, &format!("http://{}/mcp", demo.addr));
    let (config, token) = with_issuer(config, issuer)?;
    let mut peer = Peer::gateway(exe, &config).context("start gateway")?;
    if let Some(token) = token {
        peer.credential = Some(Credential { kind: "jwt", secret: token });
    }
    Ok(peer)
}

/// A configuration naming `{{ISSUER}}` with the issuer's URL in its place, and a token from it for
/// its hosts; any other configuration as it is.
fn with_issuer(config: String, issuer: Option<&Issuer>) -> anyhow::Result<(String, Option<String>)> {
    if !config.contains(ISSUER) {
        return Ok((config, None));
    }
    let issuer = issuer.context("this configuration needs the harness's token issuer")?;
    let public_url = process::auth_setting(&config, "public_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .context("a configuration naming {{ISSUER}} needs [auth] public_url")?;
    // The route the harness measures (`/mcp`, as every gateway template must serve it).
    let token = issuer.token(&format!("{}/mcp", public_url.trim_end_matches('/')), "bench-user")?;
    Ok((config.replace(ISSUER, &issuer.url), Some(token)))
}

/// The target for a route of a running gateway; `upstream_pids` serve it besides the gateway.
pub fn gateway_target(name: &str, gateway: &Peer, path: &str, upstream_pids: &[u32]) -> anyhow::Result<Target> {
    let mut server_pids = vec![gateway.pid()];
    server_pids.extend_from_slice(upstream_pids);
    let mut endpoint = Endpoint::new(gateway.addr, path)?;
    if let Some(credential) = &gateway.credential {
        endpoint = endpoint.with_bearer(credential)?;
    }
    Ok(Target { name: name.to_owned(), endpoint: Arc::new(endpoint), gateway_pid: Some(gateway.pid()), server_pids })
}

/// The reference relay's target: its CPU is reported as the gateway's, the demo's beside it.
pub fn relay_target(relay: &Peer, demo: &Peer) -> anyhow::Result<Target> {
    Ok(Target {
        name: RELAY.to_owned(),
        endpoint: Arc::new(Endpoint::new(relay.addr, "/mcp")?),
        gateway_pid: Some(relay.pid()),
        server_pids: vec![relay.pid(), demo.pid()],
    })
}

/// The direct target: the demo's own endpoint.
pub fn direct_target(demo: &Peer) -> anyhow::Result<Target> {
    Ok(Target {
        name: DIRECT.to_owned(),
        endpoint: Arc::new(Endpoint::new(demo.addr, "/mcp")?),
        gateway_pid: None,
        server_pids: vec![demo.pid()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_config_lists_every_upstream_on_one_route() {
        let c = aggregate_config(3);
        assert_eq!(c.matches("[[upstream]]").count(), 3);
        assert!(c.contains("upstreams = [\"u0\", \"u1\", \"u2\"]"));
    }

    #[test]
    fn reads_the_auth_settings_of_a_template() {
        let jwt = include_str!("../controls-jwt.toml");
        let url = process::auth_setting(jwt, "public_url");
        assert_eq!(url.as_ref().and_then(toml::Value::as_str), Some("http://127.0.0.1"));
        assert!(process::auth_setting(jwt, "api_keys").is_none());
        assert!(process::auth_setting(CONTROLS_CONFIG, "api_keys").is_some());
        // Commented out is not there; no [auth] at all neither.
        assert!(process::auth_setting("# [auth.api_keys]\n[auth]\npublic_url = 'x'\n", "api_keys").is_none());
        assert!(process::auth_setting(&forward_only_config(), "public_url").is_none());
    }

    #[tokio::test]
    async fn an_oauth_template_gets_the_issuer_and_a_token_or_a_clear_error() {
        let jwt = include_str!("../controls-jwt.toml").to_owned();
        let plain = forward_only_config();
        assert!(matches!(with_issuer(plain.clone(), None), Ok((c, None)) if c == plain));
        let missing = with_issuer(jwt.clone(), None).expect_err("no issuer");
        assert!(missing.to_string().contains("needs the harness's token issuer"), "{missing}");
        let issuer = Issuer::start().await.expect("issuer");
        let no_url = jwt.replace("public_url = \"http://127.0.0.1\"", "");
        let refused = with_issuer(no_url, Some(&issuer)).expect_err("no public_url");
        assert!(refused.to_string().contains("needs [auth] public_url"), "{refused}");
        let (config, token) = with_issuer(jwt, Some(&issuer)).expect("rewritten");
        assert!(!config.contains(ISSUER) && config.contains(&issuer.url));
        assert_eq!(token.map(|t| t.split('.').count()), Some(3));
    }

    #[test]
    fn forward_only_config_has_the_demo_placeholder() {
        assert!(forward_only_config().contains(DEMO_URL));
    }
}
