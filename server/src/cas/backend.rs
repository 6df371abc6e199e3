//! Opens the object store a `blob_url` names: local files, memory, or S3-compatible.

use std::sync::Arc;

use anyhow::Context as _;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

use crate::config::Config;

pub fn open(config: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let url = config.blob_url.clone();
    match url.as_deref() {
        None => local(&config.data_dir.join("blobs")),
        Some(url) if url.starts_with("file://") => {
            local(std::path::Path::new(&url["file://".len()..]))
        }
        Some("memory://") | Some("memory:///") => Ok(Arc::new(InMemory::new())),
        Some(url) if url.starts_with("s3://") => {
            let bucket = url["s3://".len()..].trim_end_matches('/');
            anyhow::ensure!(
                !bucket.is_empty() && !bucket.contains('/'),
                "blob_url {url:?}: expected s3://BUCKET"
            );
            let blob = &config.blob;
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_region(&blob.s3_region)
                .with_allow_http(blob.s3_allow_http);
            if let Some(endpoint) = &blob.s3_endpoint {
                // S3-compatible servers are addressed by path, not by bucket sub-domain.
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            if let Some(id) = &blob.s3_access_key_id {
                builder = builder.with_access_key_id(id);
            }
            if let Some(secret) = &blob.s3_secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            Ok(Arc::new(
                builder.build().context("configuring the S3 blob store")?,
            ))
        }
        Some(other) => {
            anyhow::bail!("blob_url {other:?}: expected file:///PATH, memory:// or s3://BUCKET")
        }
    }
}

fn local(dir: &std::path::Path) -> anyhow::Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating blob directory {}", dir.display()))?;
    Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
}
