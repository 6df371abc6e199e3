//! `POST /json/sum` with `{"numbers": [..]}` -> `{"sum": f64, "count": n}`.
//!
//! The host validates the body against the manifest's `request_schema` before the guest runs,
//! so the guest only re-checks what it needs to compute and answers 400 if that fails anyway
//! (e.g. when run under a host without schema validation).

use patchbay_guest::{read_body, respond};
use serde_json::{Value, json};
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

/// The schema allows 1000 numbers; this is comfortably above what they can take as JSON text.
const MAX_BODY: usize = 1 << 20;

struct JsonApi;

fn sum(body: &[u8]) -> Result<Value, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let numbers = doc
        .get("numbers")
        .and_then(Value::as_array)
        .ok_or("`numbers` must be an array")?;
    let mut sum = 0.0;
    for n in numbers {
        sum += n.as_f64().ok_or("`numbers` must hold only numbers")?;
    }
    Ok(json!({ "sum": sum, "count": numbers.len() }))
}

impl Guest for JsonApi {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let result = read_body(&request, MAX_BODY).and_then(|body| sum(&body));
        match result {
            Ok(v) => respond(out, 200, "application/json", v.to_string().as_bytes()),
            Err(e) => {
                let problem = json!({
                    "type": "about:blank",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": e,
                });
                respond(
                    out,
                    400,
                    "application/problem+json",
                    problem.to_string().as_bytes(),
                );
            }
        }
    }
}

wasip2::http::proxy::export!(JsonApi);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_numbers() {
        let v = sum(br#"{"numbers": [1, 2.5, -0.5]}"#).unwrap();
        assert_eq!(v, json!({ "sum": 3.0, "count": 3 }));
        assert_eq!(sum(br#"{"numbers": []}"#).unwrap()["count"], 0);
        assert!(sum(br#"{"numbers": [1, "2"]}"#).is_err());
        assert!(sum(br#"{"nums": []}"#).is_err());
        assert!(sum(b"not json").is_err());
    }
}
