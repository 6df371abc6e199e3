//! sha256 digests as the CAS names blobs.

use std::fmt;

use base64::Engine as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Parses 64 hex characters (either case).
    pub fn parse(text: &str) -> Option<Digest> {
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Digest(bytes))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The object key: `sha256/<first two hex>/<hex digest>`.
    pub fn object_path(&self) -> object_store::path::Path {
        let hex = self.hex();
        object_store::path::Path::from(format!("sha256/{}/{}", &hex[..2], hex))
    }

    /// RFC 9530 `Repr-Digest` value.
    pub fn repr_digest(&self) -> String {
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }

    /// Strong entity tag: the content never changes under a digest.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_in_either_case_and_rejects_the_rest() {
        let lower = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d = Digest::parse(lower).unwrap();
        assert_eq!(d.hex(), lower);
        assert_eq!(Digest::parse(&lower.to_uppercase()), Some(d));
        assert_eq!(d.object_path().as_ref(), format!("sha256/e3/{lower}"));
        assert!(Digest::parse("abc").is_none());
        assert!(Digest::parse(&"g".repeat(64)).is_none());
        assert_eq!(
            d.repr_digest(),
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
        );
    }
}
