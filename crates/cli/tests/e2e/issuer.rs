//! A small OAuth 2.1 authorization server for the tests: RFC 8414 / OpenID
//! metadata, a JWK Set of keys generated here (rotatable), dynamic client
//! registration, an authorization endpoint that approves at once as the
//! configured user (the "browser" of the test follows it), and a token endpoint
//! doing the authorization-code grant with PKCE, minting JWTs whose audience is
//! the requested `resource` (RFC 8707).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Digest;

/// A signing key and its public JWK.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Key {
    fn es256(kid: &str) -> Self {
        use p256::pkcs8::EncodePrivateKey;
        let private = p256::ecdsa::SigningKey::random(&mut rand08::rngs::OsRng);
        let point = private.verifying_key().to_encoded_point(false);
        let (x, y) = (point.x().expect("x"), point.y().expect("y"));
        let der = private.to_pkcs8_der().expect("pkcs8");
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256", "x": b64(x), "y": b64(y)}),
        }
    }

    fn rsa(kid: &str) -> Self {
        let material = rsa_material();
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&material.private_der),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&material.n), "e": b64(&material.e)}),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.encoding).expect("sign")
    }
}

struct RsaMaterial {
    private_der: Vec<u8>,
    n: Vec<u8>,
    e: Vec<u8>,
    public_pem: String,
}

/// One RSA key per test binary (slow to generate).
fn rsa_material() -> &'static RsaMaterial {
    static RSA: OnceLock<RsaMaterial> = OnceLock::new();
    RSA.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).expect("rsa key");
        let public = private.to_public_key();
        RsaMaterial {
            private_der: private.to_pkcs1_der().expect("der").as_bytes().to_vec(),
            n: public.n().to_bytes_be(),
            e: public.e().to_bytes_be(),
            public_pem: public.to_public_key_pem(LineEnding::LF).expect("pem"),
        }
    })
}

/// Who the authorization endpoint logs in as.
#[derive(Clone)]
pub struct Login {
    pub sub: String,
    pub groups: Vec<String>,
}

struct Grant {
    challenge: String,
    resource: Option<String>,
    scope: Option<String>,
    client_id: String,
    redirect_uri: String,
}

struct IssuerState {
    issuer: String,
    /// Published keys; the last one signs.
    keys: Vec<Key>,
    login: Login,
    clients: HashMap<String, Vec<String>>,
    codes: HashMap<String, Grant>,
    next: u64,
}

/// A running issuer (its server runs on its own thread until the test process ends, so it
/// works the same from sync and async tests).
pub struct Issuer {
    pub base: String,
    state: Arc<Mutex<IssuerState>>,
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Issuer {
    /// Starts an issuer with one ES256 key and one RSA key, logging in as `alice` (group `engineering`).
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(IssuerState {
            issuer: base.clone(),
            keys: vec![Key::rsa("rsa-1"), Key::es256("ec-1")],
            login: Login { sub: "alice".to_owned(), groups: vec!["engineering".to_owned()] },
            clients: HashMap::new(),
            codes: HashMap::new(),
            next: 1,
        }));
        let app = Router::new()
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/.well-known/openid-configuration", get(metadata))
            .route("/jwks", get(jwks))
            .route("/register", post(register))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(Arc::clone(&state));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app).await;
            });
        });
        Self { base, state }
    }

    fn state(&self) -> MutexGuard<'_, IssuerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> String {
        self.base.clone()
    }

    /// Sets who the authorization endpoint approves as.
    pub fn login_as(&self, sub: &str, groups: &[&str]) {
        self.state().login = Login { sub: sub.to_owned(), groups: groups.iter().map(|g| (*g).to_owned()).collect() };
    }

    /// Claims signed by the current key.
    pub fn sign(&self, claims: &Value) -> String {
        let state = self.state();
        state.keys.last().expect("a key").sign(claims)
    }

    /// Claims signed by the RSA key (`rsa-1`).
    pub fn sign_rsa(&self, claims: &Value) -> String {
        Key::rsa("rsa-1").sign(claims)
    }

    /// A user's access token for an audience, valid for an hour.
    pub fn user_token(&self, sub: &str, groups: &[&str], audience: &str, scope: &str) -> String {
        self.sign(&self.claims(sub, groups, audience, scope))
    }

    /// The standard claims of a user's token.
    pub fn claims(&self, sub: &str, groups: &[&str], audience: &str, scope: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer(), "sub": sub, "aud": audience, "groups": groups, "scope": scope,
            "iat": now, "nbf": now, "exp": now + 3600, "client_id": "host-app",
        })
    }

    /// Claims signed by a key the issuer never published, under the current key's `kid`.
    pub fn forge(&self, claims: &Value) -> String {
        let kid = self.state().keys.last().expect("a key").kid.clone();
        Key::es256(&kid).sign(claims)
    }

    /// Claims MACed with HS256 using the RSA public key's PEM as the secret (algorithm confusion).
    pub fn hs256_with_public_key(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-1".to_owned());
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(rsa_material().public_pem.as_bytes())).expect("mac")
    }

    /// An unsigned token (`alg: none`).
    pub fn unsigned(&self, claims: &Value) -> String {
        format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.to_string().as_bytes()))
    }

    /// Publishes a new ES256 key that signs from now on (the old ones stay published); its kid.
    pub fn rotate(&self) -> String {
        let mut state = self.state();
        let kid = format!("ec-{}", state.keys.len() + 1);
        state.keys.push(Key::es256(&kid));
        kid
    }

    /// Stops publishing every key but the current one.
    pub fn retire_old_keys(&self) {
        let mut state = self.state();
        let last = state.keys.pop().expect("a key");
        state.keys = vec![last];
    }
}

type Shared = State<Arc<Mutex<IssuerState>>>;

/// RFC 8693: a token for the requested audience, acting for the subject token's user.
fn exchange(state: &IssuerState, headers: &axum::http::HeaderMap, form: &HashMap<String, String>) -> Response {
    let refuse = |status: StatusCode, error: &str| (status, axum::Json(json!({"error": error}))).into_response();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", EXCHANGE_CLIENT.0, EXCHANGE_CLIENT.1))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return refuse(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let subject =
        form.get("subject_token").and_then(|t| t.split('.').nth(1)).and_then(|p| URL_SAFE_NO_PAD.decode(p).ok());
    let Some(subject) = subject.and_then(|p| serde_json::from_slice::<Value>(&p).ok()) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request");
    };
    if subject["iss"] != json!(state.issuer)
        || form.get("subject_token_type").map(String::as_str) != Some("urn:ietf:params:oauth:token-type:access_token")
    {
        return refuse(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let now = now();
    let claims = json!({
        "iss": state.issuer, "sub": subject["sub"], "aud": form.get("audience"), "scope": form.get("scope"),
        "act": {"sub": EXCHANGE_CLIENT.0}, "iat": now, "exp": now + 600,
    });
    let access = state.keys.last().expect("a key").sign(&claims);
    axum::Json(json!({
        "access_token": access, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer", "expires_in": 600,
    }))
    .into_response()
}

fn lock(state: &Arc<Mutex<IssuerState>>) -> MutexGuard<'_, IssuerState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn metadata(State(state): Shared) -> Response {
    let issuer = lock(&state).issuer.clone();
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "registration_endpoint": format!("{issuer}/register"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["mcp", "mcp:admin"],
    }))
    .into_response()
}

async fn jwks(State(state): Shared) -> Response {
    let state = lock(&state);
    axum::Json(json!({"keys": state.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})).into_response()
}

async fn register(State(state): Shared, axum::Json(body): axum::Json<Value>) -> Response {
    let mut state = lock(&state);
    let id = format!("client-{}", state.next);
    state.next += 1;
    let redirects: Vec<String> = body["redirect_uris"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    state.clients.insert(id.clone(), redirects);
    let mut out = body.clone();
    out["client_id"] = json!(id);
    out["client_id_issued_at"] = json!(now());
    out["token_endpoint_auth_method"] = json!("none");
    (StatusCode::CREATED, axum::Json(out)).into_response()
}

async fn authorize(State(state): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut state = lock(&state);
    let (Some(client_id), Some(redirect_uri), Some(challenge)) =
        (q.get("client_id"), q.get("redirect_uri"), q.get("code_challenge"))
    else {
        return (StatusCode::BAD_REQUEST, "missing parameters").into_response();
    };
    if q.get("code_challenge_method").map(String::as_str) != Some("S256")
        || q.get("response_type").map(String::as_str) != Some("code")
    {
        return (StatusCode::BAD_REQUEST, "S256 PKCE and response_type=code only").into_response();
    }
    if !state.clients.get(client_id).is_some_and(|r| r.contains(redirect_uri)) {
        return (StatusCode::BAD_REQUEST, "unknown client or redirect").into_response();
    }
    let code = format!("code-{}", state.next);
    state.next += 1;
    state.codes.insert(
        code.clone(),
        Grant {
            challenge: challenge.clone(),
            resource: q.get("resource").cloned(),
            scope: q.get("scope").cloned(),
            client_id: client_id.clone(),
            redirect_uri: redirect_uri.clone(),
        },
    );
    let mut location = format!("{redirect_uri}?code={code}&iss={}", state.issuer);
    if let Some(s) = q.get("state") {
        location.push_str(&format!("&state={s}"));
    }
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// The client the gateway authenticates as for token exchange (HTTP Basic).
pub const EXCHANGE_CLIENT: (&str, &str) = ("portcullis", "exchange-secret");

async fn token(
    State(state): Shared,
    headers: axum::http::HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut state = lock(&state);
    let refuse = |error: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error}))).into_response();
    if form.get("grant_type").map(String::as_str) == Some("urn:ietf:params:oauth:grant-type:token-exchange") {
        return exchange(&state, &headers, &form);
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return refuse("unsupported_grant_type");
    }
    let Some(grant) = form.get("code").and_then(|c| state.codes.remove(c)) else { return refuse("invalid_grant") };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if b64(&sha2::Sha256::digest(verifier.as_bytes())) != grant.challenge
        || form.get("client_id") != Some(&grant.client_id)
        || form.get("redirect_uri") != Some(&grant.redirect_uri)
    {
        return refuse("invalid_grant");
    }
    let Some(resource) = form.get("resource").cloned().or(grant.resource) else { return refuse("invalid_target") };
    let now = now();
    let scope = grant.scope.unwrap_or_default();
    let claims = json!({
        "iss": state.issuer, "sub": state.login.sub, "aud": resource, "groups": state.login.groups,
        "scope": scope, "iat": now, "exp": now + 3600, "client_id": grant.client_id,
    });
    let access = state.keys.last().expect("a key").sign(&claims);
    axum::Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600, "scope": scope}))
        .into_response()
}
