//! The `patchbay` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use patchbay::config::Config;
use patchbay::store::Role;
use patchbay::{auth, clock, server, store, telemetry};

#[derive(Parser)]
#[command(name = "patchbay", version, about = "A server people extend with WebAssembly")]
struct Cli {
    /// A TOML file; PATCHBAY_* environment variables override it.
    #[arg(long, global = true, env = "PATCHBAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Run the database migrations and exit.
    Migrate,
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Plugins on a running server.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// API keys, managed offline against the configured database.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration with secrets masked.
    Show,
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Upload a plugin: a directory with plugin.toml, or a manifest file.
    Push {
        target: PathBuf,
        /// The server's base URL.
        #[arg(long, env = "PATCHBAY_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        /// A system key.
        #[arg(long, env = "PATCHBAY_KEY", hide_env_values = true)]
        key: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it alone.
    Create {
        #[arg(long)]
        workspace: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A system key (manages workspaces and plugins).
        #[arg(long)]
        system: bool,
        /// RFC 3339 expiry.
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long)]
        label: Option<String>,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("{text:?} is not a role: read, write or admin"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("patchbay: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::logging::init(&config.log);
    let result = match cli.command {
        Command::Config { command: ConfigCommand::Show } => {
            println!("{}", serde_json::to_string_pretty(&config.masked()).unwrap_or_default());
            Ok(())
        }
        Command::Plugins { command: PluginsCommand::Push { target, server, key } } => patchbay::cli_push::push(&target, &server, &key),
        Command::Serve => actix_web::rt::System::new().block_on(server::serve(config)),
        Command::Migrate => runtime().and_then(|rt| rt.block_on(migrate(config))),
        Command::Keys { command: KeysCommand::Create { workspace, role, system, expires_at, label } } => {
            runtime().and_then(|rt| rt.block_on(create_key(config, workspace, role, system, expires_at, label)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("patchbay: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = store::open(&config).await?;
    eprintln!("patchbay: {} migrations are up to date", store.backend());
    Ok(())
}

async fn create_key(
    config: Config,
    workspace: String,
    role: Role,
    system: bool,
    expires_at: Option<String>,
    label: Option<String>,
) -> anyhow::Result<()> {
    let store = store::open(&config).await?;
    let expires_at_ms = match expires_at.as_deref() {
        None => None,
        Some(text) => Some(clock::parse_rfc3339(text).ok_or_else(|| anyhow::anyhow!("--expires-at {text:?} is not RFC 3339"))?),
    };
    let service = auth::AuthService::new(std::sync::Arc::clone(&store), &config);
    service.bootstrap(config.admin_token.as_deref()).await?;
    let ws = store
        .get_workspace(&workspace)
        .await?
        .ok_or_else(|| anyhow::anyhow!("workspace {workspace:?} does not exist"))?;
    let (_, text) = service.mint(&ws, role, system, expires_at_ms, label).await?;
    println!("{text}");
    Ok(())
}
