-- pgvector backs the semantic cache; created here so every later migration may use it.
CREATE EXTENSION IF NOT EXISTS vector;

-- Workspaces, API keys and per-workspace visibility of content-addressed blobs.
CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    is_system BOOLEAN NOT NULL,
    secret_hash TEXT NOT NULL,
    label TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id, id);

-- A blob is stored once; a workspace sees it only after uploading it itself.
CREATE TABLE blob_refs (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, digest)
);
