//! Signed checkpoints: an Ed25519 signature over a stream's head (its last sequence number and
//! hash) and its floor (the first sequence number retention keeps).

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A signed statement of a stream's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub stream: String,
    /// The last record it covers.
    pub seq: i64,
    /// That record's hash.
    pub hash: String,
    /// Records below this sequence number may have been pruned.
    pub floor: i64,
    pub time_ms: i64,
    /// Which key signed it ([`VerifyingKey::id`]); "" when unsigned.
    pub key_id: String,
    /// The Ed25519 signature in hex; "" when no signing key is configured.
    pub signature: String,
}

/// Why a key does not load.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("expected an Ed25519 key: 64 hex digits or a PKCS#8 PEM block")]
    Format,
}

/// The key the gateway signs checkpoints with.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

/// The key an auditor checks checkpoints with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl SigningKey {
    /// A new random key.
    pub fn generate() -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// A key from its text: the 32-byte seed in hex, or a PKCS#8 PEM block.
    pub fn parse(text: &str) -> Result<SigningKey, KeyError> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return ed25519_dalek::SigningKey::from_pkcs8_pem(text).map(SigningKey).map_err(|_| KeyError::Format);
        }
        let bytes: [u8; 32] = hex::decode(text).ok().and_then(|b| b.try_into().ok()).ok_or(KeyError::Format)?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&bytes)))
    }

    /// The seed in hex (what [`SigningKey::parse`] reads).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Signs a stream's head.
    pub fn checkpoint(&self, stream: &str, seq: i64, hash: &str, floor: i64, time_ms: i64) -> Checkpoint {
        let mut c = Checkpoint {
            stream: stream.to_owned(),
            seq,
            hash: hash.to_owned(),
            floor,
            time_ms,
            key_id: self.verifying_key().id(),
            signature: String::new(),
        };
        c.signature = hex::encode(self.0.sign(&message(&c)).to_bytes());
        c
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.verifying_key().id())
    }
}

impl VerifyingKey {
    /// A public key from its 32 bytes in hex.
    pub fn parse(text: &str) -> Result<VerifyingKey, KeyError> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or(KeyError::Format)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map(VerifyingKey).map_err(|_| KeyError::Format)
    }

    /// The public key in hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// A short name for the key: the first 16 hex digits of its SHA-256.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.to_bytes())[..8])
    }

    /// Whether this key signed the checkpoint, exactly as it reads.
    pub fn verifies(&self, c: &Checkpoint) -> bool {
        let Some(bytes) = hex::decode(&c.signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return false;
        };
        c.key_id == self.id() && self.0.verify(&message(c), &Signature::from_bytes(&bytes)).is_ok()
    }
}

/// What a checkpoint's signature covers.
fn message(c: &Checkpoint) -> Vec<u8> {
    format!("portcullis-audit-checkpoint-v1\n{}\n{}\n{}\n{}\n{}", c.stream, c.seq, c.hash, c.floor, c.time_ms)
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_checkpoints_verify_and_any_change_breaks_them() {
        let key = SigningKey::generate();
        let public = key.verifying_key();
        let c = key.checkpoint("gw/calls", 10, &"ab".repeat(32), 1, 5);
        assert!(public.verifies(&c));
        let changes: [fn(&mut Checkpoint); 6] = [
            |c| c.seq += 1,
            |c| c.hash = "cd".repeat(32),
            |c| c.floor = 5,
            |c| c.time_ms += 1,
            |c| c.stream = "gw/access".to_owned(),
            |c| c.signature = String::new(),
        ];
        for change in changes {
            let mut forged = c.clone();
            change(&mut forged);
            assert!(!public.verifies(&forged), "{forged:?}");
        }
        assert!(!SigningKey::generate().verifying_key().verifies(&c), "another key");
    }

    #[test]
    fn keys_round_trip_through_hex_and_pem() {
        let key = SigningKey::generate();
        let again = SigningKey::parse(&key.to_hex()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.verifying_key(), key.verifying_key());
        let public = VerifyingKey::parse(&key.verifying_key().to_hex()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(public, key.verifying_key());
        // RFC 8410's example private key.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        assert!(SigningKey::parse(pem).is_ok());
        assert_eq!(SigningKey::parse("abc").err(), Some(KeyError::Format));
        assert_eq!(VerifyingKey::parse(&"zz".repeat(32)).err(), Some(KeyError::Format));
    }
}
