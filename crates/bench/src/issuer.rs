//! The harness's own OAuth token issuer, for gateway configurations that authenticate hosts with
//! bearer JWTs (`{{ISSUER}}` in a template): an Ed25519 key made at start, its JWK Set served on
//! 127.0.0.1 (`GET /jwks`), and access tokens signed with it for the gateway's route audience.

use std::convert::Infallible;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The `kid` of the issuer's key: in its key set and in every token's header.
const KID: &str = "portcullis-bench";
/// How long a token is valid: longer than any run.
const LIFETIME_S: u64 = 24 * 3600;

/// A running issuer; its server stops when this is dropped.
pub struct Issuer {
    /// `http://127.0.0.1:PORT`, the `iss` of its tokens; the key set is at `{url}/jwks`.
    pub url: String,
    key: SigningKey,
    server: JoinHandle<()>,
}

impl Issuer {
    /// Makes a key and starts serving its key set.
    pub async fn start() -> anyhow::Result<Issuer> {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .context("read a key seed from /dev/urandom")?;
        let key = SigningKey::from_bytes(&seed);
        let jwks = json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
            "kid": KID,
            "use": "sig",
            "alg": "EdDSA",
        }]});
        let jwks = Bytes::from(jwks.to_string());
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind the token issuer")?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let jwks = jwks.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let found = req.method() == Method::GET && req.uri().path() == "/jwks";
                        let (status, body) =
                            if found { (StatusCode::OK, jwks.clone()) } else { (StatusCode::NOT_FOUND, Bytes::new()) };
                        let mut resp = Response::new(Full::new(body));
                        *resp.status_mut() = status;
                        resp.headers_mut()
                            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Issuer { url, key, server })
    }

    /// An access token for `subject` (a person: no `client_id`), for `audience`, valid for a day.
    pub fn token(&self, audience: &str, subject: &str) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).context("clock before 1970")?.as_secs();
        let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": KID });
        let claims = json!({
            "iss": self.url,
            "aud": audience,
            "sub": subject,
            "iat": now,
            "exp": now + LIFETIME_S,
            "groups": ["engineering"],
            "scope": "mcp",
        });
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.key.sign(input.as_bytes());
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
