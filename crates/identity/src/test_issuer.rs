//! A local OAuth issuer for tests: signing keys made in the test, and an HTTP server on
//! 127.0.0.1 that publishes their JWK Set and the issuer's metadata, counting requests.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use rand08::RngCore;
use rand08::rngs::OsRng;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// A private key a test signs tokens with, and its public JWK.
pub(crate) struct TestKey {
    pub(crate) kid: String,
    pub(crate) alg: jsonwebtoken::Algorithm,
    encoding: EncodingKey,
    pub(crate) jwk: Value,
}

/// A 2048-bit RSA key, made once per test binary (slow to generate).
struct RsaMaterial {
    pkcs1_der: Vec<u8>,
    n: Vec<u8>,
    e: Vec<u8>,
    /// The public key as SPKI PEM, PKCS#1 PEM and SPKI DER: what an attacker would MAC with.
    public_encodings: Vec<Vec<u8>>,
}

fn rsa_material() -> &'static RsaMaterial {
    static RSA: OnceLock<RsaMaterial> = OnceLock::new();
    RSA.get_or_init(|| {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;

        let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("rsa key generation");
        let public = private.to_public_key();
        let spki_pem = public.to_public_key_pem(LineEnding::LF).expect("spki pem");
        let pkcs1_pem = public.to_pkcs1_pem(LineEnding::LF).expect("pkcs1 pem");
        let spki_der = public.to_public_key_der().expect("spki der");
        RsaMaterial {
            pkcs1_der: private.to_pkcs1_der().expect("pkcs1 der").as_bytes().to_vec(),
            n: public.n().to_bytes_be(),
            e: public.e().to_bytes_be(),
            public_encodings: vec![spki_pem.into_bytes(), pkcs1_pem.into_bytes(), spki_der.as_bytes().to_vec()],
        }
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TestKey {
    /// The binary's RSA key under `kid`, for RS256.
    pub(crate) fn rsa(kid: &str) -> Self {
        let material = rsa_material();
        Self {
            kid: kid.to_owned(),
            alg: jsonwebtoken::Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&material.pkcs1_der),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&material.n), "e": b64(&material.e)}),
        }
    }

    /// The RSA public key's encodings (PEM and DER), as HMAC secrets for algorithm-confusion attempts.
    pub(crate) fn rsa_public_encodings() -> &'static [Vec<u8>] {
        &rsa_material().public_encodings
    }

    /// A fresh P-256 key under `kid`, for ES256.
    pub(crate) fn es256(kid: &str) -> Self {
        use p256::pkcs8::EncodePrivateKey;

        let private = p256::ecdsa::SigningKey::random(&mut OsRng);
        let point = private.verifying_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else { panic!("an uncompressed point has coordinates") };
        let der = private.to_pkcs8_der().expect("pkcs8 der");
        Self {
            kid: kid.to_owned(),
            alg: jsonwebtoken::Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "x": b64(x), "y": b64(y)}),
        }
    }

    /// A fresh Ed25519 key under `kid`, for EdDSA.
    pub(crate) fn ed25519(kid: &str) -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey;

        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let private = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = private.to_pkcs8_der().expect("pkcs8 der");
        Self {
            kid: kid.to_owned(),
            alg: jsonwebtoken::Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(private.verifying_key().as_bytes())}),
        }
    }

    /// A header for this key: its algorithm, its `kid`, `typ: JWT`.
    pub(crate) fn header(&self) -> Header {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header
    }

    /// `claims` signed with this key under [`Self::header`].
    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with(&self.header(), claims)
    }

    /// `claims` signed with this key under `header`.
    pub(crate) fn sign_with(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("signing")
    }
}

/// What the issuer serves, and what it was asked.
#[derive(Debug, Default)]
struct Published {
    jwks: Value,
    /// Paths that serve the metadata document.
    metadata_paths: Vec<String>,
    /// The `issuer` the metadata names (default: the real one).
    metadata_issuer: Option<String>,
    /// Answer 500 to key-set requests.
    failing: bool,
    jwks_hits: usize,
    metadata_hits: usize,
}

/// A running local issuer; the server stops when this is dropped.
pub(crate) struct TestIssuer {
    base: String,
    issuer: String,
    published: Arc<Mutex<Published>>,
    server: JoinHandle<()>,
}

impl TestIssuer {
    /// An issuer at `http://127.0.0.1:<port>` with RFC 8414 metadata, publishing `keys`.
    pub(crate) async fn start(keys: &[&TestKey]) -> Self {
        Self::start_at("", &["/.well-known/oauth-authorization-server"], keys).await
    }

    /// An issuer at `http://127.0.0.1:<port><path>` serving its metadata at `metadata_paths`.
    pub(crate) async fn start_at(path: &str, metadata_paths: &[&str], keys: &[&TestKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let published = Arc::new(Mutex::new(Published {
            metadata_paths: metadata_paths.iter().map(|p| (*p).to_owned()).collect(),
            ..Published::default()
        }));
        let issuer = format!("{base}{path}");
        let jwks_uri = format!("{base}/jwks");
        let app = Router::new().fallback(serve).with_state((published.clone(), issuer.clone(), jwks_uri));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let issuer = Self { base, issuer, published, server };
        issuer.publish(keys);
        issuer
    }

    /// The issuer identifier.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key set's URL.
    pub(crate) fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.base)
    }

    /// Replaces the published keys.
    pub(crate) fn publish(&self, keys: &[&TestKey]) {
        self.published().jwks = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    }

    /// Publishes a raw key-set document.
    pub(crate) fn publish_raw(&self, jwks: Value) {
        self.published().jwks = jwks;
    }

    /// Makes the metadata name another issuer.
    pub(crate) fn claim_issuer(&self, issuer: &str) {
        self.published().metadata_issuer = Some(issuer.to_owned());
    }

    /// Makes key-set requests fail (or succeed again).
    pub(crate) fn set_failing(&self, failing: bool) {
        self.published().failing = failing;
    }

    /// Key-set requests so far.
    pub(crate) fn jwks_hits(&self) -> usize {
        self.published().jwks_hits
    }

    /// Metadata requests so far (including those answered 404).
    pub(crate) fn metadata_hits(&self) -> usize {
        self.published().metadata_hits
    }

    fn published(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type ServerState = (Arc<Mutex<Published>>, String, String);

async fn serve(State((published, issuer, jwks_uri)): State<ServerState>, uri: Uri) -> (StatusCode, HeaderMap, String) {
    let mut published = published.lock().unwrap_or_else(PoisonError::into_inner);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    let path = uri.path();
    if path == "/jwks" {
        published.jwks_hits += 1;
        if published.failing {
            return (StatusCode::INTERNAL_SERVER_ERROR, headers, "{}".to_owned());
        }
        return (StatusCode::OK, headers, published.jwks.to_string());
    }
    if path.contains("/.well-known/") {
        published.metadata_hits += 1;
        if published.metadata_paths.iter().any(|p| p == path) {
            let named = published.metadata_issuer.clone().unwrap_or(issuer);
            let metadata = json!({"issuer": named, "jwks_uri": jwks_uri, "response_types_supported": ["code"]});
            return (StatusCode::OK, headers, metadata.to_string());
        }
    }
    (StatusCode::NOT_FOUND, headers, "{}".to_owned())
}
