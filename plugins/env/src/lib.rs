//! `/env` -> the guest's environment variables as a JSON object; also writes one line to
//! stdout and one to stderr so tests can find them in the host's log, tagged with the plugin.

use patchbay_guest::respond;
use serde_json::{Map, Value};
use wasip2::cli::environment::get_environment;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Env;

impl Guest for Env {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let vars: Map<String, Value> = get_environment()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        println!("env plugin: stdout line ({} variables)", vars.len());
        eprintln!("env plugin: stderr line");
        let body = Value::Object(vars).to_string();
        respond(out, 200, "application/json", body.as_bytes());
    }
}

wasip2::http::proxy::export!(Env);
