-- Result caches (issue 5): an exact-match cache keyed by the sha256 of canonical JSON, and a
-- semantic cache searched by cosine similarity. Timestamps are Unix milliseconds; roles are
-- 0 read, 1 write, 2 admin so that "at or below the caller's role" is a comparison.

-- Small facts about the caches, such as the dimension the semantic cache was created with.
CREATE TABLE cache_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Entries per workspace and cache, kept in the same transaction as every insert and delete, so
-- that the per-workspace cap costs one row update instead of a count.
CREATE TABLE cache_usage (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    cache TEXT NOT NULL CHECK (cache IN ('exact', 'semantic')),
    entries BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, cache)
);

CREATE TABLE exact_cache (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    key_hash TEXT NOT NULL,
    node_type TEXT NOT NULL,
    required_role SMALLINT NOT NULL,
    result TEXT,
    result_digest TEXT,
    execution_ms BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    hits BIGINT NOT NULL DEFAULT 0,
    last_hit_at BIGINT,
    last_used_at BIGINT NOT NULL,
    rejected_at BIGINT,
    CHECK ((result IS NULL) <> (result_digest IS NULL)),
    UNIQUE (workspace_id, key_hash, required_role)
);
CREATE INDEX exact_cache_lru ON exact_cache (workspace_id, last_used_at, id);
CREATE INDEX exact_cache_node_type ON exact_cache (workspace_id, node_type);
CREATE INDEX exact_cache_expiry ON exact_cache (expires_at);

-- SQLite keeps embeddings as little-endian f32 BLOBs and searches them exactly; the dimension
-- is checked by the server against cache_meta, not by the column.
CREATE TABLE semantic_cache (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    node_type TEXT NOT NULL,
    required_role SMALLINT NOT NULL,
    expires_at BIGINT NOT NULL,
    rejected_at BIGINT,
    -- Early in the record: a scan reads it without walking past prompt and result.
    embedding BLOB NOT NULL,
    prompt TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    result TEXT NOT NULL,
    execution_ms BIGINT,
    created_at BIGINT NOT NULL,
    hits BIGINT NOT NULL DEFAULT 0,
    last_hit_at BIGINT,
    last_used_at BIGINT NOT NULL
);
CREATE INDEX semantic_cache_scan ON semantic_cache (workspace_id, node_type);
CREATE INDEX semantic_cache_prompt ON semantic_cache (workspace_id, node_type, prompt_hash);
CREATE INDEX semantic_cache_lru ON semantic_cache (workspace_id, last_used_at, id);
CREATE INDEX semantic_cache_expiry ON semantic_cache (expires_at);
