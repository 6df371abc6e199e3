-- Workflows: a base document plus an ordered list of RFC 6902 patches. `version` is the seq of
-- the last patch (0 before any); appends advance it conditionally, so writers never race.
CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX workflows_by_workspace ON workflows (workspace_id, id);

-- The patch history; never deleted while the workflow exists. `ops` is the patch's JSON text.
CREATE TABLE workflow_patches (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    ops TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, seq)
);

-- Documents stored as CAS blobs: seq 0 is the base document, later ones are compactions made by
-- a given materializer version.
CREATE TABLE workflow_snapshots (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    materializer_version BIGINT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workflow_id, seq, materializer_version)
);
