//! The content-addressed store: blobs named by their sha256, written once, shared physically,
//! visible to a workspace only after it uploaded the content itself.
//!
//! A blob becomes visible only once its digest is verified: small bodies are hashed in memory
//! and written straight to their final key; large ones stream to a temporary object that is
//! renamed into place after verification. A crash mid-upload leaves at most a temporary object,
//! which no reader can reach and the start-up sweep removes.

pub mod backend;
pub mod digest;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};

use crate::clock;
use crate::store::{Store, StoreError};
use crate::telemetry::names::*;
pub use digest::Digest;

/// Bodies up to this size are buffered and written with one PUT; larger ones use multipart.
const SMALL_BLOB_BYTES: usize = 8 * 1024 * 1024;
/// Multipart part size (S3 needs at least 5 MiB per part).
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts uploading at once; bounds memory per upload to about this many parts.
const PARTS_IN_FLIGHT: usize = 2;
/// Temporary objects older than this are leftovers of interrupted uploads.
const STALE_TEMP_AFTER: Duration = Duration::from_secs(3600);
const TEMP_PREFIX: &str = "tmp";

#[derive(Debug, thiserror::Error)]
pub enum CasError {
    #[error("the body's sha256 is {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the blob exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the body failed: {0}")]
    Body(PayloadError),
    #[error("blob storage failed: {0}")]
    Storage(#[from] object_store::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of an upload.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub digest: Digest,
    pub size: u64,
    /// The workspace did not see this blob before.
    pub new_for_workspace: bool,
}

pub struct Cas {
    objects: Arc<dyn ObjectStore>,
    store: Arc<dyn Store>,
    max_blob_bytes: u64,
}

/// Where verified bytes go while they are hashed.
enum Sink {
    /// Buffered in memory until the body proves small or large.
    Buffer(Vec<Bytes>, usize),
    /// Streaming to a temporary object.
    Multipart(Path, WriteMultipart),
    /// The content is already stored: hash only, to prove the caller has it.
    Discard,
}

impl Cas {
    pub fn new(objects: Arc<dyn ObjectStore>, store: Arc<dyn Store>, max_blob_bytes: u64) -> Self {
        Self {
            objects,
            store,
            max_blob_bytes,
        }
    }

    pub fn max_blob_bytes(&self) -> u64 {
        self.max_blob_bytes
    }

    /// Stores a body for a workspace, verifying it against `expected` when given.
    pub async fn put<S>(
        &self,
        workspace_id: &str,
        expected: Option<Digest>,
        mut body: S,
    ) -> Result<Stored, CasError>
    where
        S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    {
        let already_stored = match expected {
            Some(d) => self.exists(&d).await?,
            None => false,
        };
        let mut sink = if already_stored {
            Sink::Discard
        } else {
            Sink::Buffer(Vec::new(), 0)
        };
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let result: Result<(), CasError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(CasError::Body)?;
                size += chunk.len() as u64;
                if size > self.max_blob_bytes {
                    return Err(CasError::TooLarge {
                        limit: self.max_blob_bytes,
                    });
                }
                metrics::counter!(CAS_RECEIVED_BYTES_TOTAL).increment(chunk.len() as u64);
                hasher.update(&chunk);
                self.feed(&mut sink, chunk).await?;
            }
            Ok(())
        }
        .await;
        if let Err(err) = result {
            self.discard(sink).await;
            metrics::counter!(CAS_PUTS_TOTAL, "outcome" => "rejected").increment(1);
            return Err(err);
        }
        let digest = Digest(hasher.finalize().into());
        if let Some(expected) = expected
            && expected != digest
        {
            self.discard(sink).await;
            metrics::counter!(CAS_PUTS_TOTAL, "outcome" => "rejected").increment(1);
            return Err(CasError::DigestMismatch {
                expected,
                actual: digest,
            });
        }
        let deduplicated = self.commit(sink, &digest).await?;
        if deduplicated {
            metrics::counter!(CAS_DEDUP_HITS_TOTAL).increment(1);
        }
        let new_for_workspace = self
            .store
            .add_blob_ref(workspace_id, &digest.hex(), size, clock::now_ms())
            .await?;
        let outcome = if new_for_workspace {
            "created"
        } else {
            "existing"
        };
        metrics::counter!(CAS_PUTS_TOTAL, "outcome" => outcome).increment(1);
        Ok(Stored {
            digest,
            size,
            new_for_workspace,
        })
    }

    /// Stores bytes the server produced itself (a workflow's base document or a compaction
    /// snapshot) for a workspace, which may then read them like any blob it uploaded.
    pub async fn put_bytes(&self, workspace_id: &str, bytes: Bytes) -> Result<Stored, CasError> {
        let body = futures_util::stream::iter([Ok::<_, PayloadError>(bytes)]);
        self.put(workspace_id, None, body).await
    }

    async fn feed(&self, sink: &mut Sink, chunk: Bytes) -> Result<(), CasError> {
        match sink {
            Sink::Discard => {}
            Sink::Multipart(_, writer) => {
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.put(chunk);
            }
            Sink::Buffer(chunks, buffered) => {
                *buffered += chunk.len();
                chunks.push(chunk);
                if *buffered > SMALL_BLOB_BYTES {
                    let temp =
                        Path::from(format!("{TEMP_PREFIX}/{}", uuid::Uuid::now_v7().simple()));
                    let upload = self.objects.put_multipart(&temp).await?;
                    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                    for chunk in std::mem::take(chunks) {
                        writer.put(chunk);
                    }
                    *sink = Sink::Multipart(temp, writer);
                }
            }
        }
        Ok(())
    }

    /// Makes verified content visible under its digest. True when it was already stored.
    async fn commit(&self, sink: Sink, digest: &Digest) -> Result<bool, CasError> {
        let path = digest.object_path();
        match sink {
            Sink::Discard => Ok(true),
            Sink::Buffer(chunks, _) => {
                if self.exists(digest).await? {
                    return Ok(true);
                }
                self.objects
                    .put(&path, PutPayload::from_iter(chunks))
                    .await?;
                Ok(false)
            }
            Sink::Multipart(temp, writer) => {
                writer.finish().await?;
                if self.exists(digest).await? {
                    let _ = self.objects.delete(&temp).await;
                    return Ok(true);
                }
                // Content-addressed: a concurrent upload of the same digest writes the same bytes,
                // so whichever rename lands last is still correct.
                self.objects.rename(&temp, &path).await?;
                Ok(false)
            }
        }
    }

    async fn discard(&self, sink: Sink) {
        if let Sink::Multipart(temp, writer) = sink
            && let Err(err) = writer.abort().await
        {
            tracing::warn!(error = %err, temp = %temp, "aborting an upload failed; the start-up sweep removes it");
        }
    }

    pub async fn exists(&self, digest: &Digest) -> Result<bool, object_store::Error> {
        match self.objects.head(&digest.object_path()).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The blob's size if the workspace may read it.
    pub async fn visible_size(
        &self,
        workspace_id: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, StoreError> {
        self.store.blob_ref(workspace_id, &digest.hex()).await
    }

    pub async fn missing(
        &self,
        workspace_id: &str,
        digests: &[Digest],
    ) -> Result<Vec<Digest>, StoreError> {
        let hex: Vec<String> = digests.iter().map(Digest::hex).collect();
        let missing = self.store.missing_blobs(workspace_id, &hex).await?;
        Ok(missing.iter().filter_map(|h| Digest::parse(h)).collect())
    }

    /// Streams a blob, or a byte range of it.
    pub async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, object_store::Error> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .objects
            .get_opts(&digest.object_path(), options)
            .await?;
        Ok(result
            .into_stream()
            .inspect_ok(|chunk| {
                metrics::counter!(CAS_SENT_BYTES_TOTAL).increment(chunk.len() as u64)
            })
            .boxed())
    }

    /// Reads a whole blob into memory; for small internal documents only.
    pub async fn read_all(&self, digest: &Digest) -> Result<Bytes, object_store::Error> {
        self.objects.get(&digest.object_path()).await?.bytes().await
    }

    /// True when the blob store answers (a missing probe object is an answer).
    pub async fn ping(&self) -> Result<(), object_store::Error> {
        match self.objects.head(&Path::from("readiness-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes temporary objects of uploads interrupted long ago.
    pub async fn sweep_stale_temporaries(&self) {
        let cutoff = std::time::SystemTime::now() - STALE_TEMP_AFTER;
        let mut listing = self.objects.list(Some(&Path::from(TEMP_PREFIX)));
        let mut removed = 0usize;
        while let Some(entry) = listing.next().await {
            match entry {
                Ok(meta) if std::time::SystemTime::from(meta.last_modified) < cutoff => {
                    if self.objects.delete(&meta.location).await.is_ok() {
                        removed += 1;
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "listing temporary blobs failed");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed temporary blobs of interrupted uploads");
        }
    }
}
