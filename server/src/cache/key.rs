//! The exact cache's key: sha256 of the RFC 8785 (JCS) canonical JSON of
//! `{"workspace", "node_type", "config", "inputs"}`, computed by the server.
//!
//! Canonicalization is `serde_jcs` (sorted keys by UTF-16 code units, ECMAScript number
//! formatting via `ryu-js`, minimal string escapes); the tests below pin it to the RFC's own
//! examples. RFC 8785 reads every number as an IEEE 754 double, so two integers beyond 2^53 can
//! canonicalize alike; such a cache key would serve one input's result for another, so those
//! integers are refused (send them as strings).

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The largest integer a double holds exactly: 2^53.
const MAX_SAFE_INTEGER: u64 = 1 << 53;

/// A number RFC 8785 cannot keep apart from its neighbours, with its JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{pointer} is an integer beyond ±2^53, which RFC 8785 canonical JSON cannot keep exact; send it as a string"
)]
pub struct UnsafeNumber {
    pub pointer: String,
}

/// The canonical JSON text of a value.
pub fn canonical(value: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its numbers are finite and its keys are strings.
    serde_jcs::to_vec(value).expect("a serde_json::Value canonicalizes")
}

/// Lower-case hex sha256 of the canonical JSON of workspace, node type, config and inputs.
pub fn exact_key(
    workspace_id: &str,
    node_type: &str,
    config: &Value,
    inputs: &Value,
) -> Result<String, UnsafeNumber> {
    check_numbers(config, "/config")?;
    check_numbers(inputs, "/inputs")?;
    let document = json!({
        "workspace": workspace_id,
        "node_type": node_type,
        "config": config,
        "inputs": inputs,
    });
    Ok(hex::encode(Sha256::digest(canonical(&document))))
}

fn check_numbers(value: &Value, pointer: &str) -> Result<(), UnsafeNumber> {
    match value {
        Value::Number(n) => {
            let unsafe_int = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u > MAX_SAFE_INTEGER,
                (None, Some(i)) => i.unsigned_abs() > MAX_SAFE_INTEGER,
                _ => false,
            };
            if unsafe_int {
                return Err(UnsafeNumber {
                    pointer: pointer.to_string(),
                });
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_numbers(v, &format!("{pointer}/{i}"))),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_numbers(
                v,
                &format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1")),
            )
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &Value) -> String {
        String::from_utf8(canonical(value)).unwrap()
    }

    #[test]
    fn the_rfc_8785_examples_canonicalize_as_published() {
        // RFC 8785 section 3.2.2: whitespace removed, numbers in ECMAScript form, minimal
        // string escapes.
        let input: Value = serde_json::from_str(
            r#"{
              "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
              "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
              "literals": [null, true, false]
            }"#,
        )
        .unwrap();
        assert_eq!(
            text(&input),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
        // Section 3.2.3: properties sorted by their UTF-16 code units, not by UTF-8 bytes.
        let input: Value = serde_json::from_str(
            r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        assert_eq!(
            text(&input),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\
             \"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
    }

    #[test]
    fn keys_ignore_member_order_and_number_spelling_but_not_content() {
        let a = exact_key(
            "ws",
            "function",
            &json!({"b": 1, "a": [1.0, "x"]}),
            &json!({"n": 10}),
        )
        .unwrap();
        let b = exact_key(
            "ws",
            "function",
            &serde_json::from_str(r#"{"a":[1,"x"],"b":1e0}"#).unwrap(),
            &json!({"n": 1e1}),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(
            a,
            exact_key(
                "other-ws",
                "function",
                &json!({"b": 1, "a": [1.0, "x"]}),
                &json!({"n": 10})
            )
            .unwrap()
        );
        assert_ne!(
            a,
            exact_key(
                "ws",
                "pure",
                &json!({"b": 1, "a": [1.0, "x"]}),
                &json!({"n": 10})
            )
            .unwrap()
        );
        assert_ne!(
            a,
            exact_key(
                "ws",
                "function",
                &json!({"b": 1, "a": [1.0, "x"]}),
                &json!({"n": 11})
            )
            .unwrap()
        );
        // Config and inputs are not interchangeable.
        assert_ne!(
            exact_key("ws", "f", &json!(1), &json!(2)).unwrap(),
            exact_key("ws", "f", &json!(2), &json!(1)).unwrap()
        );
    }

    #[test]
    fn integers_beyond_two_to_the_53_are_refused_with_their_pointer() {
        assert!(
            exact_key(
                "ws",
                "f",
                &json!({"n": 9_007_199_254_740_992u64}),
                &json!(null)
            )
            .is_ok()
        );
        let err = exact_key(
            "ws",
            "f",
            &json!({}),
            &json!({"ids": [1, 9_007_199_254_740_993u64]}),
        )
        .unwrap_err();
        assert_eq!(err.pointer, "/inputs/ids/1");
        assert!(
            exact_key(
                "ws",
                "f",
                &json!({"a/b": -9_007_199_254_740_993i64}),
                &json!(null)
            )
            .unwrap_err()
            .pointer
                == "/config/a~1b"
        );
        assert!(
            exact_key("ws", "f", &json!(1e300), &json!(null)).is_ok(),
            "floats are doubles already"
        );
    }
}
