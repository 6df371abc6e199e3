//! Starts the real `patchbay` binary on a free port, against SQLite or PostgreSQL, and speaks
//! HTTP to it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares `mod $name { sqlite, postgres }` running `$name(Backend)` on both databases.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }
        }
    )*};
}

pub struct Server {
    pub url: String,
    /// The bootstrap system key (`PATCHBAY_ADMIN_TOKEN`).
    pub admin: String,
    pub addr: std::net::SocketAddr,
    pub client: Client,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub data_dir: Arc<tempfile::TempDir>,
    pub database_url: Option<String>,
    backend: Backend,
    env: Vec<(String, String)>,
}

pub struct ServerBuilder {
    backend: Backend,
    env: Vec<(String, String)>,
    data_dir: Option<Arc<tempfile::TempDir>>,
    database_url: Option<String>,
    admin: Option<String>,
}

impl ServerBuilder {
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Reuses another server's data directory and database (restarts, several nodes).
    pub fn sharing(mut self, other: &Server) -> Self {
        self.data_dir = Some(Arc::clone(&other.data_dir));
        self.database_url = other.database_url.clone();
        self.admin = Some(other.admin.clone());
        self
    }

    pub async fn start(self) -> Server {
        self.try_start()
            .await
            .unwrap_or_else(|logs| panic!("the server did not start:\n{logs}"))
    }

    /// Starts the server; Err carries its output when it exits or never listens.
    pub async fn try_start(self) -> Result<Server, String> {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().unwrap()));
        let database_url = match (self.backend, self.database_url) {
            (_, Some(url)) => Some(url),
            (Backend::Postgres, None) => Some(patchbay::testing::fresh_postgres_database().await),
            (Backend::Sqlite, None) => None,
        };
        let admin = self
            .admin
            .clone()
            .unwrap_or_else(|| format!("admin-{}", uuid::Uuid::new_v4().simple()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchbay"));
        cmd.arg("serve")
            .env("PATCHBAY_LISTEN", "127.0.0.1:0")
            .env("PATCHBAY_DATA_DIR", data_dir.path())
            .env("PATCHBAY_ADMIN_TOKEN", &admin)
            .env("PATCHBAY_HTTP__WORKERS", "2")
            .env("PATCHBAY_LOG__LEVEL", "info,sqlx=warn")
            .env_remove("PATCHBAY_DATABASE_URL")
            .env_remove("PATCHBAY_BLOB_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(url) = &database_url {
            cmd.env("PATCHBAY_DATABASE_URL", url);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning patchbay");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = Arc::clone(&logs);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(at) = line.find("listening on http://") {
                        let url: String = line[at + "listening on ".len()..]
                            .chars()
                            .take_while(|c| !c.is_whitespace() && *c != '"')
                            .collect();
                        let _ = tx.send(url);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        drop(tx);
        let url = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap();
        let url = match url {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                return Err(logs.lock().unwrap().join("\n"));
            }
        };
        let addr = url.trim_start_matches("http://").parse().unwrap();
        Ok(Server {
            url,
            admin,
            addr,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                // Below the server's keep-alive (`http.keep_alive_ms`, 5 s): a connection idle
                // for about that long may be closed by the server just as a request is sent on
                // it (reqwest: IncompleteMessage). Seen between two bursts of a test.
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
            child,
            logs,
            data_dir,
            database_url,
            backend: self.backend,
            env: self.env,
        })
    }
}

impl Server {
    pub fn builder(backend: Backend) -> ServerBuilder {
        ServerBuilder {
            backend,
            env: Vec::new(),
            data_dir: None,
            database_url: None,
            admin: None,
        }
    }

    pub async fn start(backend: Backend) -> Server {
        Self::builder(backend).start().await
    }

    /// Stops this server and starts a new process on the same data, database and settings.
    pub async fn restart(mut self) -> Server {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let builder = ServerBuilder {
            backend: self.backend,
            env: std::mem::take(&mut self.env),
            data_dir: Some(Arc::clone(&self.data_dir)),
            database_url: self.database_url.clone(),
            admin: Some(self.admin.clone()),
        };
        builder.start().await
    }

    /// A request with no credentials.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{}", self.url, path))
    }

    /// The `/metrics` exposition text.
    pub async fn scrape(&self) -> String {
        self.anon(Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A request with the given key.
    pub fn with_key(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.anon(method, path).bearer_auth(key)
    }

    /// A request with the bootstrap system key.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.with_key(&self.admin.clone(), method, path)
    }

    /// Creates a workspace (system key) and returns a key of `role` in it.
    pub async fn workspace_key(&self, workspace: &str, role: &str) -> String {
        let res = self
            .admin(Method::POST, "/api/v1/workspaces")
            .json(&serde_json::json!({"name": workspace}))
            .send()
            .await
            .unwrap();
        assert!(
            res.status() == 201 || res.status() == 409,
            "creating {workspace}: {}",
            res.status()
        );
        self.mint(workspace, role).await
    }

    /// Mints a key of `role` in an existing workspace with the system key.
    pub async fn mint(&self, workspace: &str, role: &str) -> String {
        let res = self
            .admin(Method::POST, "/api/v1/keys")
            .json(&serde_json::json!({"workspace": workspace, "role": role}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        body["key"].as_str().unwrap().to_string()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts a problem+json response with the given status and `type` suffix; returns the body.
pub async fn expect_problem(res: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status of {}", res.url());
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(ct, "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["type"],
        format!("urn:patchbay:problem:{kind}"),
        "{body}"
    );
    assert_eq!(body["status"], status);
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}
