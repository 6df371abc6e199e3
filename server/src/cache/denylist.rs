//! Patterns the caches refuse to store (`cache.deny_list`): personal data and secrets have no
//! place in a cache that a whole workspace reads. A refusal names the pattern, never the text.

use regex::{Regex, RegexSet};
use serde_json::Value;

use crate::config::DenyPattern;

pub struct DenyList {
    set: RegexSet,
    patterns: Vec<(String, Regex, bool)>,
}

impl DenyList {
    pub fn new(patterns: &[DenyPattern]) -> Result<Self, regex::Error> {
        let set = RegexSet::new(patterns.iter().map(|p| p.pattern.as_str()))?;
        let patterns = patterns
            .iter()
            .map(|p| Ok((p.name.clone(), Regex::new(&p.pattern)?, p.luhn)))
            .collect::<Result<_, regex::Error>>()?;
        Ok(Self { set, patterns })
    }

    /// The name of the first pattern found in any string, number or member name of `value`.
    pub fn check_value(&self, value: &Value) -> Option<&str> {
        if self.patterns.is_empty() {
            return None;
        }
        match value {
            Value::String(s) => self.check_text(s),
            Value::Number(n) => self.check_text(&n.to_string()),
            Value::Array(items) => items.iter().find_map(|v| self.check_value(v)),
            Value::Object(map) => map
                .iter()
                .find_map(|(k, v)| self.check_text(k).or_else(|| self.check_value(v))),
            Value::Null | Value::Bool(_) => None,
        }
    }

    /// The name of the first pattern found in `text`.
    pub fn check_text(&self, text: &str) -> Option<&str> {
        if self.patterns.is_empty() {
            return None;
        }
        self.set.matches(text).into_iter().find_map(|i| {
            let (name, regex, luhn) = &self.patterns[i];
            let found = !*luhn || regex.find_iter(text).any(|m| passes_luhn(m.as_str()));
            found.then_some(name.as_str())
        })
    }
}

/// The Luhn checksum over the digits of `text` (separators ignored).
fn passes_luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() < 12 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                (d * 2).div_euclid(10) + (d * 2) % 10
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_deny_list;
    use serde_json::json;

    #[test]
    fn the_defaults_catch_personal_data_and_spare_ordinary_numbers() {
        let deny = DenyList::new(&default_deny_list()).unwrap();
        let refused = [
            (json!({"to": "Ada.Lovelace+notes@example.co.uk"}), "email"),
            (json!(["pay with 4111 1111 1111 1111 today"]), "card_number"),
            (json!({"card": 4_111_111_111_111_111u64}), "card_number"),
            (json!("5500-0000-0000-0004"), "card_number"),
            (json!({"ssn": "078-05-1120"}), "us_ssn"),
            (
                json!("-----BEGIN RSA PRIVATE KEY-----\nMIIE..."),
                "private_key",
            ),
            (json!({"AKIAIOSFODNN7EXAMPLE": 1}), "aws_access_key_id"),
            (
                json!("Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345"),
                "bearer_token",
            ),
        ];
        for (value, name) in refused {
            assert_eq!(deny.check_value(&value), Some(name), "{value}");
        }
        let allowed = [
            json!({"created_at_ms": 1_700_000_000_000u64, "count": 4_111_111_111_111_112u64}),
            json!("order 1234567890123 shipped"),
            json!({"text": "write to us at support (at) example dot com", "ok": true, "n": null}),
            json!([3.25, "2024-01-02T03:04:05Z", "v1.2.3"]),
        ];
        for value in allowed {
            assert_eq!(deny.check_value(&value), None, "{value}");
        }
    }

    #[test]
    fn an_empty_list_refuses_nothing() {
        let deny = DenyList::new(&[]).unwrap();
        assert_eq!(deny.check_value(&json!("someone@example.com")), None);
    }

    #[test]
    fn luhn() {
        assert!(passes_luhn("4111111111111111"));
        assert!(passes_luhn("4111-1111-1111-1111"));
        assert!(!passes_luhn("4111111111111112"));
        assert!(!passes_luhn("1234567890123"));
    }
}
