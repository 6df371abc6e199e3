//! Reading what `patchbay cache bench` prints: `serde_json`'s `Value`, with the dotted-path
//! look-ups the report uses.

pub use serde_json::Value as Json;

/// Look-ups by dotted path (`lookup.p99_ms`) on a parsed run.
pub trait JsonPath {
    /// The value at a dotted path; Null when absent.
    fn at(&self, path: &str) -> &Json;
    fn number(&self) -> Option<f64>;
    fn str(&self) -> Option<&str>;
}

impl JsonPath for Json {
    fn at(&self, path: &str) -> &Json {
        static NULL: Json = Json::Null;
        path.split('.')
            .try_fold(self, |here, key| here.get(key))
            .unwrap_or(&NULL)
    }

    fn number(&self) -> Option<f64> {
        self.as_f64()
    }

    fn str(&self) -> Option<&str> {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bench_output_shape() {
        let json: Json = serde_json::from_str(
            r#"{"backend": "sqlite", "lookup": {"p99_ms": 12.5, "n": -3e2}, "recall_at_1": null,
               "ok": true, "plan": ["a \"b\"", "\u00e9é"], "empty": {}, "none": []}"#,
        )
        .unwrap();
        assert_eq!(json.at("backend").str(), Some("sqlite"));
        assert_eq!(json.at("lookup.p99_ms").number(), Some(12.5));
        assert_eq!(json.at("lookup.n").number(), Some(-300.0));
        assert_eq!(json.at("recall_at_1"), &Json::Null);
        assert_eq!(json.at("missing.deeper"), &Json::Null);
        assert_eq!(json.at("ok"), &Json::Bool(true));
        assert_eq!(
            json.at("plan"),
            &Json::Array(vec![
                Json::String("a \"b\"".into()),
                Json::String("éé".into())
            ])
        );
    }
}
