//! Validation against a real local issuer (see [`crate::test_issuer`]). Token lifetimes are
//! an hour or more either side of now, so no test depends on the clock's luck.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use super::*;
use crate::principal::{AuthMethod, PrincipalKind};
use crate::test_issuer::{TestIssuer, TestKey};

const AUDIENCE: &str = "https://gateway.example/mcp";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// Claims a valid token from `issuer` carries.
fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": now() + 3600,
        "iat": now() - 10,
        "groups": ["eng", "oncall"],
        "tid": "acme",
        "scope": "tools:read tools:call",
    })
}

/// `claims(issuer)` with `changes` merged in (a `null` removes the claim).
fn claims_with(issuer: &str, changes: Value) -> Value {
    let mut claims = claims(issuer);
    if let (Value::Object(claims), Value::Object(changes)) = (&mut claims, changes) {
        for (name, value) in changes {
            if value.is_null() {
                claims.remove(&name);
            } else {
                claims.insert(name, value);
            }
        }
    }
    claims
}

fn settings(issuer: &TestIssuer) -> JwtSettings {
    JwtSettings {
        claims: ClaimMapping { tenant: Some(ClaimPath::from("tid")), ..ClaimMapping::default() },
        ..JwtSettings::new(issuer.issuer(), AUDIENCE)
    }
}

fn validator(issuer: &TestIssuer) -> JwtValidator {
    JwtValidator::new(settings(issuer)).expect("valid settings")
}

/// Waits (bounded) for the validator's background refresh to finish.
async fn background_refresh_done(validator: &JwtValidator) {
    for _ in 0..1000 {
        if !validator.jwks().refreshing() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the background refresh did not finish in 10 s");
}

fn b64(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

#[tokio::test]
async fn valid_token_maps_to_a_principal_with_groups_tenant_and_scopes() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let principal = validator(&issuer).validate(&key.sign(&claims(issuer.issuer()))).await.expect("valid");
    assert_eq!(principal.kind, PrincipalKind::User);
    assert_eq!(principal.id, "alice");
    assert_eq!(principal.groups, ["eng", "oncall"]);
    assert_eq!(principal.tenant.as_deref(), Some("acme"));
    assert_eq!(principal.scopes, ["tools:read", "tools:call"]);
    assert_eq!(principal.method, AuthMethod::Jwt { issuer: issuer.issuer().to_owned() });
    assert_eq!((issuer.metadata_hits(), issuer.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn rs256_and_eddsa_tokens_validate() {
    let rsa = TestKey::rsa("rsa-1");
    let ed = TestKey::ed25519("ed-1");
    let issuer = TestIssuer::start(&[&rsa, &ed]).await;
    let validator = validator(&issuer);
    for key in [&rsa, &ed] {
        let principal = validator.validate(&key.sign(&claims(issuer.issuer()))).await;
        assert_eq!(principal.map(|p| p.id), Ok("alice".to_owned()), "{:?}", key.alg);
    }
    assert_eq!(issuer.jwks_hits(), 1, "one fetch serves both keys");
}

#[tokio::test]
async fn at_jwt_typed_tokens_and_scp_arrays_are_accepted() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let mut header = key.header();
    header.typ = Some("at+jwt".to_owned());
    let token = key.sign_with(&header, &claims_with(issuer.issuer(), json!({"scope": null, "scp": ["a", "b"]})));
    let principal = validator(&issuer).validate(&token).await.expect("valid");
    assert_eq!(principal.scopes, ["a", "b"]);
}

#[tokio::test]
async fn refuses_tokens_that_are_not_access_tokens_by_type() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let mut header = key.header();
    header.typ = Some("logout+jwt".to_owned());
    let token = key.sign_with(&header, &claims(issuer.issuer()));
    assert_eq!(validator(&issuer).validate(&token).await, Err(TokenError::UnsupportedType));
}

#[tokio::test]
async fn refuses_expired_and_not_yet_valid_tokens() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = validator(&issuer);
    let validate = async |changes: Value| validator.validate(&key.sign(&claims_with(issuer.issuer(), changes))).await;
    assert_eq!(validate(json!({"exp": now() - 3600, "iat": now() - 7200})).await, Err(TokenError::Expired));
    assert_eq!(validate(json!({"nbf": now() + 3600})).await, Err(TokenError::NotYetValid));
    assert_eq!(validate(json!({"iat": now() + 3600})).await, Err(TokenError::NotYetValid));
    assert_eq!(validate(json!({"exp": null})).await, Err(TokenError::MissingClaim("exp".to_owned())));
    assert_eq!(validate(json!({"sub": null})).await, Err(TokenError::MissingClaim("sub".to_owned())));
}

#[tokio::test]
async fn refuses_lifetimes_beyond_a_configured_maximum() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let capped = JwtSettings { max_lifetime: Some(Duration::from_secs(2 * 3600)), ..settings(&issuer) };
    let validator = JwtValidator::new(capped).expect("valid settings");
    assert!(validator.validate(&key.sign(&claims(issuer.issuer()))).await.is_ok());
    let decade = key.sign(&claims_with(issuer.issuer(), json!({"exp": now() + 10 * 365 * 86_400})));
    assert_eq!(validator.validate(&decade).await, Err(TokenError::LifetimeTooLong));
}

#[tokio::test]
async fn refuses_other_issuers_and_audiences_and_accepts_audience_arrays() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = validator(&issuer);
    let validate = async |changes: Value| validator.validate(&key.sign(&claims_with(issuer.issuer(), changes))).await;
    assert_eq!(validate(json!({"iss": "https://other.example"})).await, Err(TokenError::WrongIssuer));
    assert_eq!(validate(json!({"aud": "https://other.example/mcp"})).await, Err(TokenError::WrongAudience));
    assert_eq!(
        validate(json!({"aud": ["https://a.example", "https://b.example"]})).await,
        Err(TokenError::WrongAudience)
    );
    let array = validate(json!({"aud": ["https://other.example", AUDIENCE]})).await;
    assert_eq!(array.map(|p| p.id), Ok("alice".to_owned()));
}

#[tokio::test]
async fn refuses_unsigned_alg_none_tokens() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = validator(&issuer);
    let payload = b64(&claims(issuer.issuer()));
    for header in [json!({"alg": "none", "typ": "JWT"}), json!({"alg": "none", "kid": "ec-1"}), json!({"alg": "None"})]
    {
        for signature in ["", "c2ln"] {
            let token = format!("{}.{payload}.{signature}", b64(&header));
            let refused = validator.validate(&token).await;
            assert!(matches!(refused, Err(TokenError::UnsupportedAlgorithm(_))), "{header} → {refused:?}");
        }
    }
    assert_eq!(issuer.jwks_hits(), 0, "refused before any key is fetched");
}

#[tokio::test]
async fn refuses_hs256_maced_with_the_rsa_public_key() {
    let rsa = TestKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&rsa]).await;
    let validator = validator(&issuer);
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(rsa.kid.clone());
    for public_key in TestKey::rsa_public_encodings() {
        let forged = jsonwebtoken::encode(&header, &claims(issuer.issuer()), &EncodingKey::from_secret(public_key))
            .expect("hmac signing");
        assert_eq!(validator.validate(&forged).await, Err(TokenError::UnsupportedAlgorithm("HS256".to_owned())));
    }
    // Even an operator cannot allow HMAC: the name does not parse.
    assert_eq!("HS256".parse::<Algorithm>(), Err(AlgorithmError::Symmetric("HS256".to_owned())));
    assert_eq!(validator.validate(&rsa.sign(&claims(issuer.issuer()))).await.map(|p| p.id), Ok("alice".to_owned()));
}

#[tokio::test]
async fn refuses_a_signature_by_a_key_not_in_the_set_under_a_published_kid() {
    let published = TestKey::es256("ec-1");
    let attacker = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&published]).await;
    let forged = attacker.sign(&claims(issuer.issuer()));
    assert_eq!(validator(&issuer).validate(&forged).await, Err(TokenError::BadSignature));
}

#[tokio::test]
async fn refuses_a_tampered_payload() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let token = key.sign(&claims(issuer.issuer()));
    let mut parts: Vec<&str> = token.split('.').collect();
    let elevated = b64(&claims_with(issuer.issuer(), json!({"groups": ["admin"]})));
    parts[1] = &elevated;
    assert_eq!(validator(&issuer).validate(&parts.join(".")).await, Err(TokenError::BadSignature));
}

#[tokio::test]
async fn refuses_a_kid_whose_key_is_of_another_type() {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&rsa, &ec]).await;
    let validator = validator(&issuer);
    let mut header = ec.header();
    header.kid = Some("rsa-1".to_owned());
    assert_eq!(
        validator.validate(&ec.sign_with(&header, &claims(issuer.issuer()))).await,
        Err(TokenError::KeyMismatch)
    );
}

#[tokio::test]
async fn ignores_keys_published_for_encryption() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[]).await;
    let mut jwk = key.jwk.clone();
    jwk["use"] = json!("enc");
    issuer.publish_raw(json!({ "keys": [jwk] }));
    assert_eq!(validator(&issuer).validate(&key.sign(&claims(issuer.issuer()))).await, Err(TokenError::UnknownKey));
}

#[tokio::test]
async fn uses_the_only_key_of_the_right_type_when_the_token_names_none() {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&rsa, &ec]).await;
    let fixed = JwtSettings { jwks_uri: Some(issuer.jwks_uri()), ..settings(&issuer) };
    let validator = JwtValidator::new(fixed).expect("valid settings");
    let mut header = ec.header();
    header.kid = None;
    let principal = validator.validate(&ec.sign_with(&header, &claims(issuer.issuer()))).await;
    assert_eq!(principal.map(|p| p.id), Ok("alice".to_owned()));
    assert_eq!(issuer.metadata_hits(), 0, "a configured jwks_uri needs no discovery");

    let second = TestKey::es256("ec-2");
    issuer.publish(&[&rsa, &ec, &second]);
    validator.jwks().age(true);
    let ambiguous = validator.validate(&ec.sign_with(&header, &claims(issuer.issuer()))).await;
    assert_eq!(ambiguous, Err(TokenError::UnknownKey));
}

#[tokio::test]
async fn unknown_kid_refetches_and_accepts_a_rotated_key() {
    let old = TestKey::es256("2025-old");
    let new = TestKey::es256("2026-new");
    let issuer = TestIssuer::start(&[&old]).await;
    let validator = validator(&issuer);
    assert!(validator.validate(&old.sign(&claims(issuer.issuer()))).await.is_ok());
    assert_eq!(issuer.jwks_hits(), 1);

    issuer.publish(&[&new]);
    let principal = validator.validate(&new.sign(&claims(issuer.issuer()))).await;
    assert_eq!(principal.map(|p| p.id), Ok("alice".to_owned()));
    assert_eq!(issuer.jwks_hits(), 2);

    // The old key left the set with that refetch.
    assert_eq!(validator.validate(&old.sign(&claims(issuer.issuer()))).await, Err(TokenError::UnknownKey));
    assert_eq!(issuer.metadata_hits(), 1, "the discovered jwks_uri is remembered");
}

#[tokio::test]
async fn a_removed_key_stops_validating_after_the_scheduled_refresh() {
    let retiring = TestKey::es256("retiring");
    let current = TestKey::es256("current");
    let issuer = TestIssuer::start(&[&retiring, &current]).await;
    let validator = validator(&issuer);
    let token = retiring.sign(&claims(issuer.issuer()));
    assert!(validator.validate(&token).await.is_ok());
    // A repeat is answered from memory while the set is fresh...
    assert!(validator.validate(&token).await.is_ok());
    assert_eq!(validator.verifications(), 1);

    issuer.publish(&[&current]);
    validator.jwks().age(false);
    // ...not once it is stale: checked again, and a stale set still serves while it is refetched...
    assert!(validator.validate(&token).await.is_ok());
    assert_eq!(validator.verifications(), 2);
    background_refresh_done(&validator).await;
    assert_eq!(issuer.jwks_hits(), 2);
    // ...and once refreshed, the removed key is gone: what was checked before does not stand.
    assert_eq!(validator.validate(&token).await, Err(TokenError::UnknownKey));
    assert!(validator.validate(&current.sign(&claims(issuer.issuer()))).await.is_ok());
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = validator(&issuer);
    assert!(validator.validate(&key.sign(&claims(issuer.issuer()))).await.is_ok());
    for attempt in 0..20 {
        let stranger = TestKey::es256(&format!("random-{attempt}"));
        let refused = validator.validate(&stranger.sign(&claims(issuer.issuer()))).await;
        assert_eq!(refused, Err(TokenError::UnknownKey));
    }
    assert_eq!(issuer.jwks_hits(), 2, "the first fetch, and one refetch for all twenty unknown kids");
    assert!(validator.validate(&key.sign(&claims(issuer.issuer()))).await.is_ok());
}

#[tokio::test]
async fn concurrent_validations_share_one_fetch() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = validator(&issuer);
    let token = key.sign(&claims(issuer.issuer()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (validator, token) = (validator.clone(), token.clone());
        tasks.spawn(async move { validator.validate(&token).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert!(result.expect("task completes").is_ok());
    }
    assert_eq!((issuer.metadata_hits(), issuer.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn keeps_the_last_good_key_set_while_the_issuer_is_down_until_its_hard_expiry() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = validator(&issuer);
    let token = key.sign(&claims(issuer.issuer()));
    assert!(validator.validate(&token).await.is_ok());

    issuer.set_failing(true);
    validator.jwks().age(false);
    assert!(validator.validate(&token).await.is_ok(), "stale keys serve while the refresh fails");
    background_refresh_done(&validator).await;
    assert!(validator.validate(&token).await.is_ok());
    assert_eq!(issuer.jwks_hits(), 2, "no retry within the pause after a failure");

    validator.jwks().age(true);
    let refused = validator.validate(&token).await;
    assert!(matches!(&refused, Err(TokenError::IssuerUnavailable(detail)) if detail.contains("500")), "{refused:?}");
    assert_eq!(refused.as_ref().map_err(TokenError::reason), Err("issuer_unavailable"));
    assert!(refused.as_ref().is_err_and(|e| !e.is_client_fault()));

    issuer.set_failing(false);
    validator.jwks().age(true);
    assert!(validator.validate(&token).await.is_ok(), "recovers once the issuer answers");
}

#[tokio::test]
async fn an_unreachable_issuer_fails_without_hammering_it() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    issuer.set_failing(true);
    let validator = validator(&issuer);
    let token = key.sign(&claims(issuer.issuer()));
    for _ in 0..5 {
        assert!(matches!(validator.validate(&token).await, Err(TokenError::IssuerUnavailable(_))));
    }
    assert_eq!(issuer.jwks_hits(), 1);
}

#[tokio::test]
async fn discovery_refuses_metadata_naming_another_issuer() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    issuer.claim_issuer("https://evil.example");
    let refused = validator(&issuer).validate(&key.sign(&claims(issuer.issuer()))).await;
    assert!(
        matches!(&refused, Err(TokenError::IssuerUnavailable(detail)) if detail.contains("not the configured issuer")),
        "{refused:?}"
    );
    assert_eq!(issuer.jwks_hits(), 0, "the key set named by untrusted metadata is never fetched");
    assert_eq!(issuer.metadata_hits(), 2, "both metadata locations were tried");
}

#[tokio::test]
async fn discovery_falls_back_to_openid_configuration_appended_to_the_issuer_path() {
    let key = TestKey::es256("ec-1");
    let issuer =
        TestIssuer::start_at("/realms/acme", &["/realms/acme/.well-known/openid-configuration"], &[&key]).await;
    let principal = validator(&issuer).validate(&key.sign(&claims(issuer.issuer()))).await;
    assert_eq!(principal.map(|p| p.id), Ok("alice".to_owned()));
    assert_eq!(issuer.metadata_hits(), 3, "path insertion for RFC 8414 and OIDC, then OIDC appending");
}

#[tokio::test]
async fn discovery_uses_rfc8414_path_insertion() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start_at("/tenant1", &["/.well-known/oauth-authorization-server/tenant1"], &[&key]).await;
    assert!(validator(&issuer).validate(&key.sign(&claims(issuer.issuer()))).await.is_ok());
    assert_eq!(issuer.metadata_hits(), 1);
}

#[tokio::test]
async fn malformed_tokens_are_refused_without_fetching_keys() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = validator(&issuer);
    let good = key.sign(&claims(issuer.issuer()));
    let parts: Vec<&str> = good.split('.').collect();
    let header = parts[0];
    for bad in [
        String::new(),
        "not-a-jwt".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        format!("{header}.%%%.{}", parts[2]),
        format!("{header}.{}.{}", URL_SAFE_NO_PAD.encode("not json"), parts[2]),
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("{\"alg\""), parts[1], parts[2]),
        format!("{header}.{}.!!", parts[1]),
        format!("{header}.{}.", parts[1]),
        format!("{}.{}.{}", b64(&json!({"kid": "ec-1"})), parts[1], parts[2]),
        format!("Bearer {good}"),
    ] {
        assert_eq!(validator.validate(&bad).await, Err(TokenError::Malformed), "{bad:.60}");
    }
    assert_eq!(issuer.jwks_hits(), 0);
}

#[tokio::test]
async fn refuses_tokens_with_critical_header_extensions() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let mut header = key.header();
    header.crit = Some(vec!["exp".to_owned()]);
    let token = key.sign_with(&header, &claims(issuer.issuer()));
    assert_eq!(validator(&issuer).validate(&token).await, Err(TokenError::CriticalHeader));
}

#[tokio::test]
async fn refuses_algorithms_outside_the_allow_list() {
    let rsa = TestKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&rsa]).await;
    let ec_only = JwtSettings { algorithms: vec![Algorithm::ES256], ..settings(&issuer) };
    let validator = JwtValidator::new(ec_only).expect("valid settings");
    let refused = validator.validate(&rsa.sign(&claims(issuer.issuer()))).await;
    assert_eq!(refused, Err(TokenError::UnsupportedAlgorithm("RS256".to_owned())));
}

#[tokio::test]
async fn maps_workload_tokens_by_rule() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let mut settings = settings(&issuer);
    settings.claims.workload =
        WorkloadRule::ClaimEquals { claim: ClaimPath::from("token_use"), value: "machine".into() };
    let validator = JwtValidator::new(settings).expect("valid settings");
    let machine = key.sign(&claims_with(issuer.issuer(), json!({"token_use": "machine", "sub": "ci-bot"})));
    let principal = validator.validate(&machine).await.expect("valid");
    assert_eq!((principal.kind, principal.id.as_str()), (PrincipalKind::Workload, "ci-bot"));
    let person = validator.validate(&key.sign(&claims(issuer.issuer()))).await.expect("valid");
    assert_eq!(person.kind, PrincipalKind::User);
}

#[tokio::test]
async fn client_credentials_tokens_are_workloads_by_default() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = validator(&issuer);
    let machine = key.sign(&claims_with(issuer.issuer(), json!({"sub": "ci-bot", "client_id": "ci-bot"})));
    assert_eq!(validator.validate(&machine).await.map(|p| p.kind), Ok(PrincipalKind::Workload));
    let person = key.sign(&claims_with(issuer.issuer(), json!({"client_id": "mcp-host"})));
    assert_eq!(validator.validate(&person).await.map(|p| p.kind), Ok(PrincipalKind::User));
}

#[tokio::test]
async fn validate_for_checks_a_per_route_audience() {
    let key = TestKey::es256("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = validator(&issuer);
    let route_a = "https://gateway.example/mcp/a";
    let token = key.sign(&claims_with(issuer.issuer(), json!({"aud": route_a})));
    assert!(validator.validate_for(&token, route_a).await.is_ok());
    let other_route = validator.validate_for(&token, "https://gateway.example/mcp/b").await;
    assert_eq!(other_route, Err(TokenError::WrongAudience));
    assert_eq!(validator.validate(&token).await, Err(TokenError::WrongAudience));
}

#[tokio::test]
async fn a_verified_token_is_answered_from_memory_until_it_expires() {
    let key = TestKey::ed25519("ed-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let validator = validator(&issuer);
    let token = key.sign(&claims(issuer.issuer()));
    let first = validator.validate(&token).await.expect("valid");
    assert_eq!(validator.validate(&token).await, Ok(first.clone()));
    assert_eq!(validator.validate(&token).await, Ok(first.clone()));
    assert_eq!(validator.verifications(), 1, "the repeats were checked again");
    // The same token for another route is checked in full (and refused), not served from memory.
    assert_eq!(validator.validate_for(&token, "https://gateway.example/other").await, Err(TokenError::WrongAudience));
    assert_eq!(validator.verifications(), 2);
    // What is remembered expires with the token (two hours earlier: past its `exp` and the leeway).
    validator.expire_verified(7200.0);
    assert_eq!(validator.validate(&token).await, Ok(first));
    assert_eq!(validator.verifications(), 3, "an expired entry was served");
}

#[test]
fn settings_report_every_problem_at_once() {
    let bad = JwtSettings {
        jwks_uri: Some("http://keys.example/jwks".to_owned()),
        algorithms: Vec::new(),
        leeway: Duration::from_secs(600),
        jwks_refresh: Duration::ZERO,
        http_timeout: Duration::ZERO,
        claims: ClaimMapping { subject: ClaimPath::from(""), ..ClaimMapping::default() },
        ..JwtSettings::new("", "")
    };
    let Err(InvalidSettings(problems)) = JwtValidator::new(bad) else { panic!("settings should be refused") };
    assert_eq!(
        problems,
        [
            SettingsError::EmptyIssuer,
            SettingsError::EmptyAudience,
            SettingsError::Url { setting: "jwks_uri", problem: EndpointError::InsecureHttp },
            SettingsError::NoAlgorithms,
            SettingsError::LeewayTooLarge(Duration::from_secs(600)),
            SettingsError::EmptyClaim("claims.subject"),
            SettingsError::RefreshOutOfRange,
            SettingsError::TimeoutOutOfRange,
        ]
    );
}

#[test]
fn discovery_needs_an_https_or_loopback_issuer_url() {
    let refused = |issuer: &str| JwtValidator::new(JwtSettings::new(issuer, AUDIENCE)).map(|_| ()).map_err(|e| e.0);
    assert_eq!(
        refused("http://idp.example"),
        Err(vec![SettingsError::Url { setting: "issuer", problem: EndpointError::InsecureHttp }])
    );
    assert_eq!(refused("https://idp.example/?tenant=1"), Err(vec![SettingsError::IssuerNotDiscoverable]));
    assert_eq!(refused("https://idp.example/#x"), Err(vec![SettingsError::IssuerNotDiscoverable]));
    assert!(refused("https://idp.example/realms/acme").is_ok());
    // With a configured key set, the issuer is only compared, so any identifier will do.
    let fixed =
        JwtSettings { jwks_uri: Some("https://idp.example/keys".to_owned()), ..JwtSettings::new("urn:idp", AUDIENCE) };
    assert!(JwtValidator::new(fixed).is_ok());
}

#[test]
fn default_settings_are_documented_values() {
    let defaults = JwtSettings::new("https://idp.example", AUDIENCE);
    assert_eq!(defaults.algorithms, [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]);
    assert_eq!(defaults.leeway, Duration::from_secs(60));
    assert_eq!(defaults.jwks_refresh, Duration::from_secs(300));
    assert_eq!(defaults.jwks_hard_expiry, Duration::from_secs(86_400));
    assert_eq!(defaults.http_timeout, Duration::from_secs(5));
    assert_eq!(defaults.max_lifetime, None);
    assert_eq!(defaults.claims, ClaimMapping::default());
}

#[test]
fn reasons_are_distinct_and_messages_are_lowercase_without_a_period() {
    let errors = [
        TokenError::Malformed,
        TokenError::UnsupportedAlgorithm("HS256".into()),
        TokenError::UnsupportedType,
        TokenError::CriticalHeader,
        TokenError::UnknownKey,
        TokenError::KeyMismatch,
        TokenError::BadSignature,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::LifetimeTooLong,
        TokenError::WrongIssuer,
        TokenError::WrongAudience,
        TokenError::MissingClaim("sub".into()),
        TokenError::InvalidClaim("groups".into()),
        TokenError::IssuerUnavailable("fetching https://idp.example/jwks: http status 500".into()),
    ];
    let mut reasons: Vec<&str> = errors.iter().map(TokenError::reason).collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), errors.len());
    for error in &errors {
        let message = error.to_string();
        assert!(message.starts_with(char::is_lowercase) && !message.ends_with('.'), "{message}");
        assert!(!message.contains("idp.example"), "details stay out of client messages: {message}");
    }
}
