-- Plugins are server-wide. Every uploaded version is kept (rollback); one is active.
CREATE TABLE plugin_versions (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    manifest TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE plugins (
    name TEXT PRIMARY KEY,
    active_version TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    FOREIGN KEY (name, active_version) REFERENCES plugin_versions (name, version)
);

-- Bumped on every change, so other nodes notice with one cheap read.
CREATE TABLE plugin_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO plugin_generation (id, generation) VALUES (1, 0);
