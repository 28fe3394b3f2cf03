//! Identity: the gateway as an OAuth 2.1 resource server in front of a real
//! issuer (tests/e2e/issuer.rs), workload API keys, the Python SDK's own OAuth
//! flow, sessions bound to their principal, and proof that a host's token never
//! reaches an upstream.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    DEMO_UPSTREAM, Gateway, free_port, host, modern, names, portcullis, post, raw, recording_upstream,
};
use crate::issuer::{Issuer, now};

/// A gateway on `port` taking the issuer's tokens (scope `mcp` required) and API keys, before the demo.
fn auth_config(issuer: &Issuer, port: u16, store: &str, extra: &str) -> String {
    format!(
        r#"
[listen]
address = "127.0.0.1:{port}"

[registry]
mode = "off"

[policy]
mode = "off"

[auth]
public_url = "http://127.0.0.1:{port}"
required_scopes = ["mcp"]

[auth.oauth]
issuer = "{}"
jwks_refresh = "1s"

[auth.api_keys]
store = "{store}"

{DEMO_UPSTREAM}
{extra}
[[route]]
path = "/mcp"
upstreams = ["demo"]

[[route]]
path = "/other"
upstreams = ["demo"]
"#,
        issuer.issuer()
    )
}

struct Setup {
    issuer: Issuer,
    gateway: Gateway,
    port: u16,
    store: String,
    _dir: tempfile::TempDir,
}

fn setup(extra: &str) -> Setup {
    let issuer = Issuer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}", dir.path().join("keys.db").display());
    let port = free_port();
    let gateway = Gateway::launch_at(&auth_config(&issuer, port, &store, extra), port);
    Setup { issuer, gateway, port, store, _dir: dir }
}

fn list_tools() -> Value {
    modern(1, "tools/list", json!({}))
}

async fn with_token(url: &str, token: &str) -> crate::harness::Raw {
    post(
        url,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ],
        &list_tools(),
    )
    .await
}

fn challenge(r: &crate::harness::Raw) -> String {
    r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn refuses_hosts_without_valid_tokens_and_points_them_at_the_metadata() {
    let s = setup("");
    let url = s.gateway.url("/mcp");
    let aud = format!("http://127.0.0.1:{}/mcp", s.port);
    let metadata_url = format!("http://127.0.0.1:{}/.well-known/oauth-protected-resource/mcp", s.port);

    let missing =
        post(&url, &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list")], &list_tools()).await;
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(missing.code(), -31013);
    assert_eq!(missing.reason(), "credentials_missing");
    let c = challenge(&missing);
    assert!(c.starts_with("Bearer "), "{c}");
    assert!(c.contains(&format!("resource_metadata=\"{metadata_url}\"")), "{c}");
    assert!(c.contains("scope=\"mcp\""), "{c}");

    let prm = raw(reqwest::Method::GET, &metadata_url, &[], "").await;
    assert_eq!(prm.status, 200, "{}", prm.body);
    let doc = prm.json();
    assert_eq!(doc["resource"], aud);
    assert_eq!(doc["authorization_servers"], json!([s.issuer.issuer()]));
    assert!(doc["scopes_supported"].as_array().is_some_and(|a| a.contains(&json!("mcp"))), "{doc}");

    let good = s.issuer.claims("alice", &["engineering"], &aud, "mcp");
    let ok = with_token(&url, &s.issuer.sign(&good)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("demo__echo"), "{}", ok.body);
    let rsa = with_token(&url, &s.issuer.sign_rsa(&good)).await;
    assert_eq!(rsa.status, 200, "RS256 tokens are accepted too: {}", rsa.body);

    let mut cases: Vec<(&str, String)> = Vec::new();
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    cases.push(("expired", s.issuer.sign(&expired)));
    let mut early = good.clone();
    early["nbf"] = json!(now() + 3600);
    cases.push(("not yet valid", s.issuer.sign(&early)));
    let mut elsewhere = good.clone();
    elsewhere["aud"] = json!("https://some-other-api.example.com");
    cases.push(("wrong audience", s.issuer.sign(&elsewhere)));
    let mut sibling = good.clone();
    sibling["aud"] = json!(format!("http://127.0.0.1:{}/other", s.port));
    cases.push(("another route's audience", s.issuer.sign(&sibling)));
    let mut stranger = good.clone();
    stranger["iss"] = json!("https://evil.example.com");
    cases.push(("wrong issuer", s.issuer.sign(&stranger)));
    cases.push(("alg none", s.issuer.unsigned(&good)));
    cases.push(("HS256 keyed with the RSA public key", s.issuer.hs256_with_public_key(&good)));
    cases.push(("forged signature", s.issuer.forge(&good)));
    cases.push(("garbage", "not.a.jwt".to_owned()));
    for (what, token) in &cases {
        let r = with_token(&url, token).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.code(), -31013, "{what}");
        assert!(challenge(&r).contains("error=\"invalid_token\""), "{what}: {}", challenge(&r));
        assert!(!r.body.contains(token.as_str()), "{what}: the token is never echoed");
    }

    let unscoped = with_token(&url, &s.issuer.user_token("alice", &["engineering"], &aud, "profile")).await;
    assert_eq!(unscoped.status, 403, "{}", unscoped.body);
    assert_eq!(unscoped.code(), -31014);
    assert!(challenge(&unscoped).contains("error=\"insufficient_scope\""), "{}", challenge(&unscoped));
    assert!(!s.gateway.log().contains(&s.issuer.sign(&good)), "tokens are never logged");
}

#[tokio::test]
async fn follows_the_issuers_key_rotation() {
    let s = setup("");
    let url = s.gateway.url("/mcp");
    let aud = format!("http://127.0.0.1:{}/mcp", s.port);
    let old = s.issuer.user_token("alice", &["engineering"], &aud, "mcp");
    assert_eq!(with_token(&url, &old).await.status, 200);
    s.issuer.rotate();
    let new = s.issuer.user_token("alice", &["engineering"], &aud, "mcp");
    let r = with_token(&url, &new).await;
    assert_eq!(r.status, 200, "a token signed with the new key is accepted at once: {}", r.body);
    s.issuer.retire_old_keys();
    let start = Instant::now();
    loop {
        let r = with_token(&url, &old).await;
        if r.status == 401 {
            break;
        }
        // The validator trusts a fetched key set for at least 30 s (it never hammers the issuer).
        assert!(start.elapsed() < Duration::from_secs(45), "a retired key stops working once the key set is refreshed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(with_token(&url, &new).await.status, 200);
}

#[test]
fn python_sdk_client_completes_the_oauth_flow() {
    let s = setup("");
    s.issuer.login_as("bob", &["support"]);
    let url = s.gateway.url("/mcp");
    for mode in ["legacy", "2026-07-28"] {
        let out = host(
            &url,
            mode,
            json!([{"op": "list_tools"}, {"op": "call_tool", "name": "demo__echo", "args": {"text": "hi"}}]),
            &["--oauth", r#"{"scope": "mcp"}"#],
        );
        let tools = names(&out["results"][0], "tools");
        assert!(tools.contains(&"demo__echo".to_owned()), "{mode}: {out}");
        assert!(out["results"][1]["content"][0]["text"].as_str().is_some_and(|t| t.contains("hi")), "{mode}: {out}");
        let authorize = out["oauth"]["authorization_urls"][0].as_str().unwrap_or_default().to_owned();
        assert!(authorize.starts_with(&format!("{}/authorize", s.issuer.issuer())), "{mode}: {out}");
        let resource = format!("resource=http%3A%2F%2F127.0.0.1%3A{}%2Fmcp", s.port);
        assert!(authorize.contains(&resource), "RFC 8707 resource is this route: {authorize}");
    }
}

fn apikey(store: &str, args: &[&str]) -> std::process::Output {
    Command::new(portcullis()).args(["apikey", "--store", store]).args(args).output().expect("run portcullis apikey")
}

#[tokio::test]
async fn api_keys_authenticate_workloads_until_revoked() {
    let s = setup("");
    let url = s.gateway.url("/mcp");
    let out = apikey(
        &s.store,
        &["create", "--principal", "ci-bot", "--name", "ci", "--scope", "mcp", "--group", "deployers"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("pcl_"), "{key}");
    let id = key.split('_').nth(1).unwrap_or_default().to_owned();

    let by_header = post(
        &url,
        &[("x-api-key", &key), ("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list")],
        &list_tools(),
    )
    .await;
    assert_eq!(by_header.status, 200, "{}", by_header.body);
    let as_bearer = with_token(&url, &key).await;
    assert_eq!(as_bearer.status, 200, "{}", as_bearer.body);
    let mut wrong = key.clone();
    wrong.pop();
    wrong.push(if key.ends_with('A') { 'B' } else { 'A' });
    let bad = with_token(&url, &wrong).await;
    assert_eq!((bad.status, bad.reason().as_str()), (401, "api_key_invalid"), "{}", bad.body);

    let unscoped = apikey(&s.store, &["create", "--principal", "reporter"]);
    let unscoped = String::from_utf8_lossy(&unscoped.stdout).trim().to_owned();
    assert_eq!(with_token(&url, &unscoped).await.status, 403, "a key without the required scope");

    let listed = apikey(&s.store, &["list"]);
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains(&id) && listing.contains("ci-bot"), "{listing}");
    assert!(!listing.contains(&key), "a key's secret is never shown again");

    assert!(apikey(&s.store, &["revoke", &id]).status.success());
    let start = Instant::now();
    loop {
        let r = with_token(&url, &key).await;
        if r.status == 401 {
            assert_eq!(r.reason(), "api_key_revoked", "{}", r.body);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "revocation takes effect within seconds");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_legacy_session_belongs_to_the_principal_that_opened_it() {
    let s = setup("");
    let url = s.gateway.url("/mcp");
    let aud = format!("http://127.0.0.1:{}/mcp", s.port);
    let alice = s.issuer.user_token("alice", &["engineering"], &aud, "mcp");
    let bob = s.issuer.user_token("bob", &["support"], &aud, "mcp");
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let opened = post(&url, &[("authorization", &format!("Bearer {alice}"))], &init).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let session = opened.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let as_alice =
        post(&url, &[("authorization", &format!("Bearer {alice}")), ("mcp-session-id", &session)], &list).await;
    assert_eq!(as_alice.status, 200, "{}", as_alice.body);
    let as_bob = post(&url, &[("authorization", &format!("Bearer {bob}")), ("mcp-session-id", &session)], &list).await;
    assert_eq!(as_bob.status, 404, "another principal cannot use the session: {}", as_bob.body);
    let anonymous = post(&url, &[("mcp-session-id", &session)], &list).await;
    assert_eq!(anonymous.status, 401, "a session id is not a credential: {}", anonymous.body);
}

/// A gateway like [`setup`]'s whose `/other` route fronts the `recorder` upstream `extra` defines;
/// returns it, its port and its key store.
fn recorder_gateway(issuer: &Issuer, dir: &std::path::Path, extra: &str) -> (Gateway, u16, String) {
    let port = free_port();
    let store = format!("sqlite://{}", dir.join("keys.db").display());
    let config = auth_config(issuer, port, &store, extra).replace(
        "[[route]]\npath = \"/other\"\nupstreams = [\"demo\"]",
        "[[route]]\npath = \"/other\"\nupstreams = [\"recorder\"]",
    );
    (Gateway::launch_at(&config, port), port, store)
}

#[test]
fn never_forwards_the_hosts_token_upstream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("headers.jsonl");
    let secret = dir.path().join("upstream.token");
    std::fs::write(&secret, "upstream-credential-7f3a\n").expect("write secret");
    let (_upstream, upstream_port) = recording_upstream(&log);
    let extra = format!(
        r#"
[[upstream]]
name = "recorder"
transport = "http"
url = "http://127.0.0.1:{upstream_port}/mcp"
bearer = "file:{}"
headers = {{ "X-Tenant" = "acme" }}
"#,
        secret.display()
    );
    // The recorder is the only upstream of the /other route.
    let issuer = Issuer::start();
    let (gateway, port, _store) = recorder_gateway(&issuer, dir.path(), &extra);
    let token = issuer.user_token("alice", &["engineering"], &format!("http://127.0.0.1:{port}/other"), "mcp");
    for mode in ["legacy", "2026-07-28"] {
        let out = host(
            &gateway.url("/other"),
            mode,
            json!([{"op": "call_tool", "name": "recorder__echo", "args": {"text": "hello"}}]),
            &["--bearer", &token],
        );
        assert_eq!(out["results"][0]["content"][0]["text"], "hello", "{mode}: {out}");
    }
    let seen = std::fs::read_to_string(&log).expect("the upstream recorded requests");
    let requests: Vec<Value> = seen.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!requests.is_empty());
    for r in &requests {
        let headers = r["headers"].as_object().expect("headers");
        assert_eq!(headers.get("authorization"), Some(&json!("Bearer upstream-credential-7f3a")), "{r}");
        assert_eq!(headers.get("x-tenant"), Some(&json!("acme")), "{r}");
        assert!(!r.to_string().contains(&token), "the host's token reached the upstream: {r}");
    }
    assert!(!gateway.log().contains("upstream-credential-7f3a"), "the upstream credential is never logged");
}

#[test]
fn each_user_reaches_a_delegating_upstream_with_their_own_exchanged_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("headers.jsonl");
    let secret = dir.path().join("client.secret");
    std::fs::write(&secret, crate::issuer::EXCHANGE_CLIENT.1).expect("write secret");
    let (_upstream, upstream_port) = recording_upstream(&log);
    let issuer = Issuer::start();
    let extra = format!(
        r#"
[[upstream]]
name = "recorder"
transport = "http"
url = "http://127.0.0.1:{upstream_port}/mcp"

[upstream.token_exchange]
token_endpoint = "{}/token"
client_id = "{}"
client_secret = "file:{}"
audience = "https://recorder.example"
scope = "records:read"
"#,
        issuer.issuer(),
        crate::issuer::EXCHANGE_CLIENT.0,
        secret.display()
    );
    let (gateway, port, store) = recorder_gateway(&issuer, dir.path(), &extra);
    let url = gateway.url("/other");
    let aud = format!("http://127.0.0.1:{port}/other");
    let mut host_tokens = Vec::new();
    for (user, mode) in [("alice", "legacy"), ("bob", "2026-07-28")] {
        let token = issuer.user_token(user, &["engineering"], &aud, "mcp");
        let out = host(
            &url,
            mode,
            json!([{"op": "list_tools"}, {"op": "call_tool", "name": "recorder__echo", "args": {"text": user}}]),
            &["--bearer", &token],
        );
        assert_eq!(out["results"][1]["content"][0]["text"], user, "{mode}: {out}");
        host_tokens.push(token);
    }
    let seen = std::fs::read_to_string(&log).expect("the upstream recorded requests");
    let mut subjects = std::collections::BTreeSet::new();
    for line in seen.lines() {
        let r: Value = serde_json::from_str(line).expect("json line");
        for t in &host_tokens {
            assert!(!line.contains(t.as_str()), "a host's token reached the upstream: {line}");
        }
        let Some(auth) = r["headers"]["authorization"].as_str() else { continue };
        if !r["body"].as_str().unwrap_or_default().contains("tools/call") {
            continue;
        }
        let payload = auth.strip_prefix("Bearer ").and_then(|t| t.split('.').nth(1)).expect("a JWT");
        let claims: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).expect("base64"),
        )
        .expect("claims");
        assert_eq!(claims["aud"], "https://recorder.example", "{claims}");
        assert_eq!(claims["act"]["sub"], "portcullis", "{claims}");
        subjects.insert(claims["sub"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(subjects.into_iter().collect::<Vec<_>>(), ["alice", "bob"], "each call carried its own user's token");

    // A workload with an API key has no user token to exchange: refused, with a clear reason.
    let key = Command::new(portcullis())
        .args(["apikey", "--store", &store, "create", "--principal", "ci", "--scope", "mcp"])
        .output()
        .expect("apikey");
    let key = String::from_utf8_lossy(&key.stdout).trim().to_owned();
    let refused = host(
        &url,
        "2026-07-28",
        json!([{"op": "call_tool", "name": "recorder__echo", "args": {"text": "x"}}]),
        &["--bearer", &key],
    );
    assert_eq!(refused["results"][0]["error"]["data"]["reason"], "delegation_unavailable", "{refused}");
}
