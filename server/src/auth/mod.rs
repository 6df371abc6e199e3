//! Who is calling: API keys, their roles and workspaces, and the limits on trying.

pub mod limits;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;

use crate::clock;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::store::{ApiKey, NewApiKey, Role, Store, StoreResult, Workspace};
use crate::telemetry::names::AUTH_ATTEMPTS_TOTAL;
use limits::Limits;
use token::Presented;

/// The workspace every server has; the bootstrap key belongs to it.
pub const DEFAULT_WORKSPACE: &str = "default";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub workspace_id: String,
    pub workspace: String,
    pub role: Role,
    /// System keys manage workspaces, mint keys anywhere and manage server-wide plugins.
    pub system: bool,
}

impl Principal {
    /// Fails with 403 unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> ApiResult<()> {
        if self.role >= role {
            return Ok(());
        }
        record(Outcome::Failure, "forbidden");
        Err(ApiError::forbidden(format!(
            "this needs a {} key; yours is {}",
            role.as_str(),
            self.role.as_str()
        )))
    }

    /// Fails with 403 unless the caller holds a system key.
    pub fn require_system(&self) -> ApiResult<()> {
        if self.system {
            return Ok(());
        }
        record(Outcome::Failure, "forbidden");
        Err(ApiError::forbidden("this needs a system key"))
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    Success,
    Failure,
}

fn record(outcome: Outcome, reason: &'static str) {
    let outcome = match outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    };
    metrics::counter!(AUTH_ATTEMPTS_TOTAL, "outcome" => outcome, "reason" => reason).increment(1);
}

pub struct AuthService {
    store: Arc<dyn Store>,
    limits: Limits,
}

impl AuthService {
    pub fn new(store: Arc<dyn Store>, config: &Config) -> Self {
        Self {
            store,
            limits: Limits::new(&config.auth),
        }
    }

    /// Checks an `Authorization` header value. Every outcome is counted by reason.
    pub async fn authenticate(
        &self,
        header: Option<&[u8]>,
        ip: Option<IpAddr>,
    ) -> ApiResult<Principal> {
        let Some(header) = header else {
            record(Outcome::Failure, "missing_auth");
            return Err(ApiError::unauthorized(
                "missing-auth",
                "send Authorization: Bearer <api key>",
            ));
        };
        if let Some(ip) = ip
            && let Some(wait) = self.limits.blocked_for(ip)
        {
            record(Outcome::Failure, "rate_limited");
            return Err(ApiError::too_many_requests(
                "auth-rate-limited",
                "too many failed authentications from this address",
                wait,
            ));
        }
        let presented = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|t| token::parse(t.trim()));
        let Some(presented) = presented else {
            return Err(self.fail(
                ip,
                "invalid_format",
                "the Authorization header must be `Bearer <api key>`",
            ));
        };
        let (id, secret) = match presented {
            Presented::Minted { id, secret } => (id, secret),
            Presented::Bootstrap { token } => (token::BOOTSTRAP_KEY_ID, token),
        };
        let key = self
            .store
            .get_key(id)
            .await
            .map_err(|e| ApiError::internal("looking up an API key failed", e))?;
        let Some(key) = key.filter(|k| token::verify(secret, &k.secret_hash)) else {
            return Err(self.fail(ip, "invalid_credentials", "unknown API key"));
        };
        if key.revoked_at_ms.is_some() {
            return Err(self.fail(ip, "revoked", "this API key was revoked"));
        }
        if key.expires_at_ms.is_some_and(|at| at <= clock::now_ms()) {
            return Err(self.fail(ip, "expired", "this API key has expired"));
        }
        if let Err(wait) = self.limits.check_key(&key.id) {
            record(Outcome::Failure, "rate_limited");
            return Err(ApiError::too_many_requests(
                "rate-limited",
                "this API key sent too many requests",
                wait,
            ));
        }
        record(Outcome::Success, "valid");
        Ok(Principal {
            key_id: key.id,
            workspace_id: key.workspace_id,
            workspace: key.workspace,
            role: key.role,
            system: key.system,
        })
    }

    fn fail(&self, ip: Option<IpAddr>, reason: &'static str, detail: &str) -> ApiError {
        if let Some(ip) = ip
            && let Some(wait) = self.limits.record_failure(ip)
        {
            record(Outcome::Failure, "rate_limited");
            return ApiError::too_many_requests(
                "auth-rate-limited",
                "too many failed authentications from this address",
                wait,
            );
        }
        record(Outcome::Failure, reason);
        let kind = match reason {
            "expired" => "key-expired",
            "revoked" => "key-revoked",
            "invalid_format" => "invalid-auth-format",
            _ => "invalid-credentials",
        };
        ApiError::unauthorized(kind, detail)
    }

    /// Mints a key; its text is returned once and never stored.
    pub async fn mint(
        &self,
        workspace: &Workspace,
        role: Role,
        system: bool,
        expires_at_ms: Option<i64>,
        label: Option<String>,
    ) -> StoreResult<(ApiKey, String)> {
        let minted = token::mint();
        let key = self
            .store
            .insert_key(&NewApiKey {
                id: minted.id,
                workspace_id: workspace.id.clone(),
                role,
                system,
                secret_hash: minted.secret_hash,
                label,
                created_at_ms: clock::now_ms(),
                expires_at_ms,
            })
            .await?;
        Ok((key, minted.text))
    }

    /// Makes sure a system key exists: the configured admin token, or on first start a minted
    /// key, whose text is returned so the caller can show it once.
    pub async fn bootstrap(&self, admin_token: Option<&str>) -> anyhow::Result<Option<String>> {
        let workspace = match self.store.get_workspace(DEFAULT_WORKSPACE).await? {
            Some(ws) => ws,
            None => match self
                .store
                .create_workspace(DEFAULT_WORKSPACE, clock::now_ms())
                .await
            {
                Ok(ws) => ws,
                // Another node created it at the same moment.
                Err(crate::store::StoreError::Conflict(_)) => self
                    .store
                    .get_workspace(DEFAULT_WORKSPACE)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("workspace {DEFAULT_WORKSPACE} vanished"))?,
                Err(e) => return Err(e.into()),
            },
        };
        if let Some(token) = admin_token {
            if !matches!(token::parse(token), Some(Presented::Bootstrap { .. })) {
                anyhow::bail!(
                    "admin_token must be printable ASCII without spaces and must not look like a minted key (pb_<id>_<secret>)"
                );
            }
            self.store
                .upsert_key(&NewApiKey {
                    id: token::BOOTSTRAP_KEY_ID.into(),
                    workspace_id: workspace.id,
                    role: Role::Admin,
                    system: true,
                    secret_hash: token::hash(token),
                    label: Some("PATCHBAY_ADMIN_TOKEN".into()),
                    created_at_ms: clock::now_ms(),
                    expires_at_ms: None,
                })
                .await?;
            return Ok(None);
        }
        if self.store.count_system_keys().await? > 0 {
            return Ok(None);
        }
        let (_, text) = self
            .mint(
                &workspace,
                Role::Admin,
                true,
                None,
                Some("generated on first start".into()),
            )
            .await?;
        Ok(Some(text))
    }

    /// Periodically forgets limiter state of idle keys and addresses.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                this.limits.sweep();
            }
        });
    }
}
