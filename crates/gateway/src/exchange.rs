//! Per-user upstream credentials by OAuth 2.0 Token Exchange (RFC 8693): for an
//! upstream configured with `[upstream.token_exchange]`, the gateway trades the
//! host's access token (its subject token) at the authorization server for a
//! token meant for that upstream, and sends that instead of its own credential.
//! The host's token itself still never reaches the upstream; the exchanged
//! tokens are cached per user and upstream until shortly before they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderValue;

use crate::config::TokenExchangeSettings;
use crate::secret::Secret;

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// How long a token whose response gives no `expires_in` is used.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// How many users' tokens are kept before starting over.
const CACHE_LIMIT: usize = 10_000;

/// The exchanger of one upstream.
pub struct TokenExchange {
    settings: TokenExchangeSettings,
    client_secret: Option<Secret>,
    http: reqwest::Client,
    /// `Authorization` values by principal id, with when they stop being used.
    cache: Mutex<HashMap<String, (HeaderValue, Instant)>>,
}

impl TokenExchange {
    /// An exchanger with its client secret already read.
    pub fn new(settings: TokenExchangeSettings, client_secret: Option<Secret>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("token exchange client: {e}"))?;
        Ok(Self { settings, client_secret, http, cache: Mutex::new(HashMap::new()) })
    }

    /// The `Authorization` to send for this user, exchanging the subject token if none is cached.
    pub async fn authorization(&self, principal_id: &str, subject_token: &Secret) -> Result<HeaderValue, String> {
        let now = Instant::now();
        if let Some((value, until)) =
            self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(principal_id)
            && now < *until
        {
            return Ok(value.clone());
        }
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", GRANT),
            ("subject_token", subject_token.expose()),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", ACCESS_TOKEN),
        ];
        if let Some(a) = &self.settings.audience {
            form.push(("audience", a));
        }
        if let Some(r) = &self.settings.resource {
            form.push(("resource", r));
        }
        if let Some(s) = &self.settings.scope {
            form.push(("scope", s));
        }
        let mut request = self.http.post(&self.settings.token_endpoint);
        match &self.client_secret {
            Some(secret) => request = request.basic_auth(&self.settings.client_id, Some(secret.expose())),
            None => form.push(("client_id", &self.settings.client_id)),
        }
        let response = request.form(&form).send().await.map_err(|e| {
            format!(
                "the token endpoint cannot be reached: {}",
                if e.is_timeout() { "timeout" } else { "connection failed" }
            )
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|_| "the token endpoint's answer was cut off")?;
        let body: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| "the token endpoint's answer is not JSON")?;
        if !status.is_success() {
            let error = body["error"].as_str().unwrap_or("unknown_error");
            return Err(format!("the token endpoint refused the exchange ({status}, {error})"));
        }
        let token = body["access_token"].as_str().filter(|t| !t.is_empty()).ok_or("no access_token in the answer")?;
        if !body["token_type"].as_str().is_none_or(|t| t.eq_ignore_ascii_case("bearer")) {
            return Err("the exchanged token is not a bearer token".to_owned());
        }
        let mut value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| "the exchanged token is not header-safe")?;
        value.set_sensitive(true);
        let lifetime = body["expires_in"].as_u64().map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let until = now + lifetime.saturating_sub(RENEW_BEFORE);
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(principal_id.to_owned(), (value.clone(), until));
        Ok(value)
    }
}
