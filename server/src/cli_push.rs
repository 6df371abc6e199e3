//! `patchbay plugins push <dir|manifest>`: uploads a plugin with a progress bar and prints its
//! routes.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::plugins::manifest::Manifest;

/// Uploads the plugin at `target` (a directory with `plugin.toml`, or a manifest file).
pub fn push(target: &Path, server: &str, key: &str) -> anyhow::Result<()> {
    let manifest_path: PathBuf = if target.is_dir() {
        target.join("plugin.toml")
    } else {
        target.to_path_buf()
    };
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest =
        Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", manifest_path.display()))?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let component = dir.join(
        manifest
            .component
            .clone()
            .unwrap_or_else(|| format!("{}.wasm", manifest.name)),
    );
    let file = std::fs::File::open(&component)
        .with_context(|| format!("opening {}", component.display()))?;
    let size = file.metadata()?.len();

    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("uploading {} {}", manifest.name, manifest.version));
    let reader = Progress {
        inner: file,
        bar: bar.clone(),
    };
    let form = reqwest::blocking::multipart::Form::new()
        .text("manifest", text)
        .part(
            "component",
            reqwest::blocking::multipart::Part::reader_with_length(reader, size)
                .file_name(format!("{}.wasm", manifest.name)),
        );
    let url = format!("{}/api/v1/plugins", server.trim_end_matches('/'));
    let response = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()?
        .post(&url)
        .bearer_auth(key)
        .multipart(form)
        .send()
        .with_context(|| format!("sending to {url}"))?;
    bar.finish_and_clear();
    let status = response.status();
    let body: serde_json::Value = response.json().unwrap_or_default();
    if !status.is_success() {
        bail!(
            "{status}: {}",
            body.get("detail")
                .and_then(|d| d.as_str())
                .unwrap_or("the server refused the plugin")
        );
    }
    println!(
        "{} {} is live ({})",
        body["name"].as_str().unwrap_or_default(),
        body["version"].as_str().unwrap_or_default(),
        body["digest"].as_str().unwrap_or_default()
    );
    for route in body["routes"].as_array().into_iter().flatten() {
        let methods: Vec<&str> = route["methods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
            .collect();
        println!(
            "  {:<8} {}{}",
            methods.join(","),
            server.trim_end_matches('/'),
            route["path"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// Advances the bar as the component is read for sending.
struct Progress<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
