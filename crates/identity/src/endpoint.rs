//! Where the gateway may fetch an issuer's documents from (metadata, key sets), and fetching them.
//!
//! Only `https` URLs are fetched, or plain `http` to a loopback address (a local issuer,
//! and the tests). Redirects are followed only to URLs that pass the same rule, so an
//! `https` endpoint cannot bounce the gateway to plain http elsewhere.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::CACHE_CONTROL;
use reqwest::{Url, redirect};

/// Why a URL is not an acceptable place to fetch issuer documents from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not an absolute URL.
    #[error("not a valid absolute url")]
    Invalid,
    /// A scheme other than https or http.
    #[error("scheme {0} is not allowed (use https, or http to a loopback address)")]
    Scheme(String),
    /// Plain http to a host that is not loopback.
    #[error("plain http is allowed only to loopback addresses (127.0.0.1, localhost, [::1])")]
    InsecureHttp,
    /// The URL carries a user name or password.
    #[error("credentials in the url are not allowed")]
    Credentials,
    /// The URL has a `#fragment`.
    #[error("a fragment in the url is not allowed")]
    Fragment,
}

/// A URL that passed the fetch rule: https, or http to a loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint(Url);

/// A fetched document and how long its server allows it to be cached.
#[derive(Debug)]
pub(crate) struct Document {
    pub(crate) body: Vec<u8>,
    /// `Cache-Control: max-age` (zero for `no-store` / `no-cache`), if the server sent one.
    pub(crate) max_age: Option<Duration>,
}

/// Why fetching a document failed (for logs; never shown to a client).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("http status {0}")]
    Status(u16),
    #[error("response larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
}

/// The largest metadata document or key set we read.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The most redirects followed for one fetch.
const MAX_REDIRECTS: usize = 5;

impl Endpoint {
    /// Checks `url` against the fetch rule.
    pub(crate) fn parse(url: &str) -> Result<Self, EndpointError> {
        let url = Url::parse(url).map_err(|_| EndpointError::Invalid)?;
        Self::from_url(url)
    }

    /// Checks an already parsed URL against the fetch rule.
    pub(crate) fn from_url(url: Url) -> Result<Self, EndpointError> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EndpointError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(EndpointError::Fragment);
        }
        match url.scheme() {
            "https" if url.host().is_some() => Ok(Self(url)),
            "https" => Err(EndpointError::Invalid),
            "http" if is_loopback(&url) => Ok(Self(url)),
            "http" => Err(EndpointError::InsecureHttp),
            other => Err(EndpointError::Scheme(other.to_owned())),
        }
    }

    /// The URL.
    pub(crate) fn url(&self) -> &Url {
        &self.0
    }

    /// GETs the document, reading at most [`MAX_DOCUMENT_BYTES`].
    pub(crate) async fn get(&self, client: &reqwest::Client) -> Result<Document, FetchError> {
        let mut response = client.get(self.0.clone()).header("accept", "application/json").send().await?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let max_age =
            response.headers().get_all(CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()).find_map(max_age);
        if response.content_length().is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Document { body, max_age })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// An HTTP client for issuer documents: overall `timeout`, redirects only to acceptable endpoints.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    let redirects = redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if Endpoint::from_url(attempt.url().clone()).is_err() {
            attempt.error("redirect to a url that is neither https nor loopback http")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(redirects)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    // IPv6 hosts come bracketed: `[::1]`.
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The freshness lifetime a `Cache-Control` value grants, if it states one.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').map(str::trim).find_map(|directive| {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        let seconds = lower.strip_prefix("max-age=")?;
        seconds.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_https_and_loopback_http() {
        for url in [
            "https://login.example.com/",
            "https://login.example.com/realms/a/protocol/openid-connect/certs",
            "http://127.0.0.1:8080/jwks",
            "http://127.1.2.3/jwks",
            "http://localhost:9000/",
            "http://[::1]:9000/jwks",
        ] {
            assert!(Endpoint::parse(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn refuses_plain_http_to_other_hosts_and_odd_urls() {
        assert_eq!(Endpoint::parse("http://login.example.com/jwks"), Err(EndpointError::InsecureHttp));
        assert_eq!(Endpoint::parse("http://10.0.0.1/jwks"), Err(EndpointError::InsecureHttp));
        assert_eq!(Endpoint::parse("http://localhost.example.com/"), Err(EndpointError::InsecureHttp));
        assert_eq!(Endpoint::parse("ftp://example.com/"), Err(EndpointError::Scheme("ftp".into())));
        assert_eq!(Endpoint::parse("file:///etc/passwd"), Err(EndpointError::Scheme("file".into())));
        assert_eq!(Endpoint::parse("https://user:pw@example.com/"), Err(EndpointError::Credentials));
        assert_eq!(Endpoint::parse("https://example.com/#keys"), Err(EndpointError::Fragment));
        assert_eq!(Endpoint::parse("/jwks"), Err(EndpointError::Invalid));
    }

    #[test]
    fn reads_max_age_from_cache_control() {
        assert_eq!(max_age("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(max_age("Max-Age=60, must-revalidate"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
