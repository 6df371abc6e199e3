//! The text form of API keys: `pb_<id>_<secret>`.
//!
//! The id locates the stored record; only sha256(secret) is stored. The secret has 256 bits of
//! entropy, so a fast hash is enough: there is nothing to brute-force that a slow hash would
//! protect (slow hashes exist for low-entropy passwords).

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "pb_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

/// Fixed id under which `PATCHBAY_ADMIN_TOKEN` is stored: the operator picks its text freely.
pub const BOOTSTRAP_KEY_ID: &str = "bootstrap";

/// What a presented token refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// A minted key: look it up by id, compare the secret's hash.
    Minted { id: &'a str, secret: &'a str },
    /// Anything else well-formed is checked against the bootstrap admin token.
    Bootstrap { token: &'a str },
}

/// A freshly minted key: the text is shown once, the hash is stored.
pub struct Minted {
    pub id: String,
    pub text: String,
    pub secret_hash: String,
}

pub fn mint() -> Minted {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; SECRET_HEX / 2];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    Minted {
        text: format!("{PREFIX}{id}_{secret}"),
        secret_hash: hash(&secret),
        id,
    }
}

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of a presented secret with a stored hash.
pub fn verify(secret: &str, stored_hash: &str) -> bool {
    hash(secret).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Splits a bearer token into what it refers to; None when it cannot be a token at all.
pub fn parse(token: &str) -> Option<Presented<'_>> {
    if token.is_empty() || token.len() > 512 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    if let Some(rest) = token.strip_prefix(PREFIX)
        && let Some((id, secret)) = rest.split_once('_')
        && id.len() == ID_HEX
        && secret.len() == SECRET_HEX
        && is_lower_hex(id)
        && is_lower_hex(secret)
    {
        return Some(Presented::Minted { id, secret });
    }
    Some(Presented::Bootstrap { token })
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_parse_and_verify() {
        let key = mint();
        match parse(&key.text) {
            Some(Presented::Minted { id, secret }) => {
                assert_eq!(id, key.id);
                assert!(verify(secret, &key.secret_hash));
                assert!(!verify("0000", &key.secret_hash));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_text_is_a_bootstrap_candidate_and_garbage_is_refused() {
        assert_eq!(
            parse("my-admin-token"),
            Some(Presented::Bootstrap {
                token: "my-admin-token"
            })
        );
        assert_eq!(parse(""), None);
        assert_eq!(parse("has space"), None);
        assert_eq!(parse("naïve"), None);
    }
}
