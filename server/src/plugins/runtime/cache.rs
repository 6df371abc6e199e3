//! Precompiled components on disk, so a restart never recompiles.
//!
//! A file is named `<component sha256>.<engine key>.cwasm`, where the engine key hashes
//! wasmtime's compatibility hash (its version and every setting that changes generated code),
//! so artifacts of another wasmtime or another configuration are never even opened. Files are
//! written under a temporary name, synced, then renamed: a reader sees a whole artifact or none.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped when the layout or naming of the cache changes.
const CACHE_FORMAT: &str = "patchbay-cwasm-v1";

pub(super) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    pub(super) fn open(dir: &Path, engine: &Engine) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the plugin cache directory {}", dir.display()))?;
        let mut hasher = Sha256Hasher(Sha256::new());
        CACHE_FORMAT.hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(Self {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    pub(super) fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.{}.cwasm", self.engine_key))
    }

    /// The cached artifact for `digest`, if there is a usable one. A file that wasmtime refuses
    /// (say, after a CPU change) is removed so it is rebuilt.
    pub(super) fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.is_file() {
            return None;
        }
        // SAFETY: deserializing trusts the file to be wasmtime's own output. Only this cache
        // writes into the directory, always through an atomic rename of a complete, synced
        // artifact, and the name pins the engine configuration; wasmtime still checks the
        // header (version, target, settings) and refuses a mismatch.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "discarding an unusable precompiled plugin");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    pub(super) fn store(&self, digest: &str, artifact: &[u8]) -> std::io::Result<()> {
        let path = self.path(digest);
        let tmp = self.dir.join(format!(
            ".{digest}.{}.{}.{}.tmp",
            self.engine_key,
            std::process::id(),
            rand::random::<u64>()
        ));
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(artifact)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// Feeds `Hash` output into sha256, which unlike `DefaultHasher` is stable across Rust releases.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
    }
}
