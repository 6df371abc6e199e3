//! The plugin manifest (TOML, or the same fields as JSON) and its resolution against the
//! server's defaults and ceilings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::PluginsConfig;

/// Path prefixes that belong to the server itself.
pub const RESERVED_PREFIXES: &[&str] = &["/api", "/metrics", "/health", "/ready", "/ui"];

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `[a-z0-9-]{1,64}`
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The component file, relative to the manifest (plugin directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// A component already in the CAS (uploads without a `component` part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_digest: Option<String>,
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Environment variables the guest sees.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Hosts the guest may call (exact names, or `*.example.com`); none by default.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backpressure {
    /// Wait up to `block_timeout_ms` for a queue place, then 503.
    Block,
    /// 429 at once when the queue is full.
    Shed,
}

/// Limits as written; absent fields take the plugin's, then the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub max_instances: Option<u32>,
    pub queue: Option<u32>,
    pub backpressure: Option<Backpressure>,
    pub block_timeout_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    pub max_request_body_bytes: Option<u64>,
    pub max_response_body_bytes: Option<u64>,
    pub stack_kb: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    #[default]
    Public,
    Read,
    Write,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `/static/{param}/...`; a trailing `/{*rest}` catches the rest.
    pub path: String,
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    #[serde(default)]
    pub auth: RouteAuth,
    /// JSON Schema for JSON request bodies, compiled once at upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub request_schema: Option<serde_json::Value>,
    #[serde(default)]
    pub limits: LimitsSpec,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into()]
}

/// Limits in force for one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Limits {
    pub max_instances: u32,
    pub queue: u32,
    pub backpressure: Backpressure,
    pub block_timeout_ms: u64,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    pub max_request_body_bytes: u64,
    pub max_response_body_bytes: u64,
    pub stack_kb: u64,
}

impl Limits {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn block_timeout(&self) -> Duration {
        Duration::from_millis(self.block_timeout_ms)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {message}")]
pub struct ManifestError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError {
        field: field.into(),
        message: message.into(),
    }
}

impl Manifest {
    /// Parses TOML, or JSON when the text starts with `{`.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| err("manifest", format!("invalid JSON: {e}")))
        } else {
            toml::from_str(text)
                .map_err(|e| err("manifest", format!("invalid TOML: {}", e.message())))
        }
    }

    /// The first route that claims a path of the server's own, with that prefix.
    pub fn reserved_route(&self) -> Option<(String, &'static str)> {
        self.routes.iter().find_map(|r| {
            RESERVED_PREFIXES
                .iter()
                .find(|p| r.path == **p || r.path.starts_with(&format!("{p}/")))
                .map(|p| (r.path.clone(), *p))
        })
    }

    /// Checks names and routes and resolves every route's limits.
    pub fn resolve(&self, server: &PluginsConfig) -> Result<Vec<Limits>, ManifestError> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(err(
                "name",
                format!("{:?} must match [a-z0-9-]{{1,64}}", self.name),
            ));
        }
        if self.version.is_empty()
            || self.version.len() > 64
            || self.version.chars().any(char::is_whitespace)
        {
            return Err(err("version", "must be 1-64 characters without spaces"));
        }
        if self.routes.is_empty() {
            return Err(err("routes", "a plugin needs at least one route"));
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(err(format!("env.{name}"), "not a valid variable name"));
            }
        }
        let plugin_limits =
            resolve_limits(&self.limits, &server.defaults_spec(), "limits", server)?;
        let plugin_spec = plugin_limits.as_spec();
        let mut resolved = Vec::with_capacity(self.routes.len());
        for (i, route) in self.routes.iter().enumerate() {
            let field = format!("routes[{i}]");
            check_path(&route.path).map_err(|m| err(format!("{field}.path"), m))?;
            if route.methods.is_empty() {
                return Err(err(format!("{field}.methods"), "list at least one method"));
            }
            for method in &route.methods {
                if actix_web::http::Method::from_bytes(method.as_bytes()).is_err()
                    || method.to_uppercase() != *method
                {
                    return Err(err(
                        format!("{field}.methods"),
                        format!("{method:?} is not an upper-case HTTP method"),
                    ));
                }
            }
            if let Some(schema) = &route.request_schema {
                jsonschema::validator_for(schema).map_err(|e| {
                    err(
                        format!("{field}.request_schema"),
                        format!("invalid JSON Schema: {e}"),
                    )
                })?;
            }
            resolved.push(resolve_limits(
                &route.limits,
                &plugin_spec,
                &format!("{field}.limits"),
                server,
            )?);
        }
        Ok(resolved)
    }
}

impl Limits {
    fn as_spec(&self) -> LimitsSpec {
        LimitsSpec {
            max_instances: Some(self.max_instances),
            queue: Some(self.queue),
            backpressure: Some(self.backpressure),
            block_timeout_ms: Some(self.block_timeout_ms),
            timeout_ms: Some(self.timeout_ms),
            memory_mb: Some(self.memory_mb),
            max_request_body_bytes: Some(self.max_request_body_bytes),
            max_response_body_bytes: Some(self.max_response_body_bytes),
            stack_kb: Some(self.stack_kb),
        }
    }
}

/// Fills `spec` from `base` and checks each value against the server's ceilings.
fn resolve_limits(
    spec: &LimitsSpec,
    base: &LimitsSpec,
    field: &str,
    server: &PluginsConfig,
) -> Result<Limits, ManifestError> {
    let pick = |a: Option<u64>, b: Option<u64>| a.or(b).unwrap_or_default();
    let limits = Limits {
        max_instances: spec.max_instances.or(base.max_instances).unwrap_or(1),
        queue: spec.queue.or(base.queue).unwrap_or(0),
        backpressure: spec
            .backpressure
            .or(base.backpressure)
            .unwrap_or(Backpressure::Block),
        block_timeout_ms: pick(spec.block_timeout_ms, base.block_timeout_ms),
        timeout_ms: pick(spec.timeout_ms, base.timeout_ms),
        memory_mb: pick(spec.memory_mb, base.memory_mb),
        max_request_body_bytes: pick(spec.max_request_body_bytes, base.max_request_body_bytes),
        max_response_body_bytes: pick(spec.max_response_body_bytes, base.max_response_body_bytes),
        stack_kb: pick(spec.stack_kb, base.stack_kb),
    };
    let ceilings: [(&str, u64, u64, u64); 7] = [
        (
            "max_instances",
            u64::from(limits.max_instances),
            1,
            u64::from(server.max_instances_total),
        ),
        (
            "queue",
            u64::from(limits.queue),
            0,
            u64::from(server.max_queue),
        ),
        ("timeout_ms", limits.timeout_ms, 1, server.max_timeout_ms),
        ("memory_mb", limits.memory_mb, 1, server.max_memory_mb),
        (
            "max_request_body_bytes",
            limits.max_request_body_bytes,
            0,
            server.max_body_bytes,
        ),
        (
            "max_response_body_bytes",
            limits.max_response_body_bytes,
            0,
            server.max_body_bytes,
        ),
        ("stack_kb", limits.stack_kb, 64, server.max_stack_kb),
    ];
    for (name, value, min, max) in ceilings {
        if value < min || value > max {
            return Err(err(
                format!("{field}.{name}"),
                format!("{value} is outside {min}..={max} (the server's limits)"),
            ));
        }
    }
    if limits.block_timeout_ms > limits.timeout_ms {
        return Err(err(
            format!("{field}.block_timeout_ms"),
            "must not exceed timeout_ms",
        ));
    }
    Ok(limits)
}

/// Route paths: absolute, `{name}` parameters, a final `{*rest}`, nothing reserved.
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.len() > 512 {
        return Err(format!(
            "{path:?} must start with '/' and be at most 512 characters"
        ));
    }
    for prefix in RESERVED_PREFIXES {
        if path == *prefix
            || path.starts_with(&format!("{prefix}/"))
            || path == "/" && *prefix == "/"
        {
            return Err(format!("{path:?} conflicts with the server's own {prefix}"));
        }
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, catch_all) = match inner.strip_prefix('*') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "parameter {segment:?} needs a name of letters, digits and '_'"
                ));
            }
            if catch_all && i != segments.len() - 1 {
                return Err(format!("{segment:?} must be the last segment"));
            }
        } else if segment.contains(['{', '}', '*']) {
            return Err(format!("segment {segment:?} mixes text and a parameter"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
name = "hello"
version = "1.0.0"
[limits]
max_instances = 16
queue = 256
backpressure = "block"
block_timeout_ms = 50
timeout_ms = 5000
memory_mb = 64
[[routes]]
path = "/hello/{name}"
methods = ["GET"]
[[routes]]
path = "/hello-admin/{*rest}"
auth = "write"
[routes.limits]
max_instances = 2
backpressure = "shed"
"#;

    #[test]
    fn routes_inherit_plugin_limits_and_override_them() {
        let manifest = Manifest::parse(HELLO).unwrap();
        let limits = manifest.resolve(&PluginsConfig::default()).unwrap();
        assert_eq!(limits[0].max_instances, 16);
        assert_eq!(limits[0].backpressure, Backpressure::Block);
        assert_eq!(limits[1].max_instances, 2);
        assert_eq!(limits[1].queue, 256);
        assert_eq!(limits[1].backpressure, Backpressure::Shed);
        assert_eq!(manifest.routes[1].auth, RouteAuth::Write);
        let json = serde_json::to_string(&manifest).unwrap();
        assert_eq!(Manifest::parse(&json).unwrap().routes.len(), 2);
    }

    #[test]
    fn bad_manifests_name_the_field() {
        let config = PluginsConfig::default();
        let cases = [
            (
                HELLO.replace("name = \"hello\"", "name = \"Hello!\""),
                "name",
            ),
            (
                HELLO.replace("/hello/{name}", "/api/hello"),
                "routes[0].path",
            ),
            (
                HELLO.replace("/hello/{name}", "/hello/{*rest}/more"),
                "routes[0].path",
            ),
            (HELLO.replace("/hello/{name}", "hello"), "routes[0].path"),
            (
                HELLO.replace("max_instances = 16", "max_instances = 100000"),
                "limits.max_instances",
            ),
            (
                HELLO.replace("methods = [\"GET\"]", "methods = [\"get\"]"),
                "routes[0].methods",
            ),
            (
                HELLO.replace("memory_mb = 64", "memory_mb = 0"),
                "limits.memory_mb",
            ),
        ];
        for (text, field) in cases {
            let manifest = Manifest::parse(&text).unwrap();
            let e = manifest.resolve(&config).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        assert_eq!(Manifest::parse("name = 1").unwrap_err().field, "manifest");
        let schema = HELLO.replace(
            "methods = [\"GET\"]",
            "methods = [\"POST\"]\nrequest_schema = { type = \"nonsense\" }",
        );
        assert_eq!(
            Manifest::parse(&schema)
                .unwrap()
                .resolve(&config)
                .unwrap_err()
                .field,
            "routes[0].request_schema"
        );
    }
}
