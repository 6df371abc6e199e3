//! Every metric's name. Kept in one place so the families table, the code that records them and
//! the cardinality test cannot drift apart.

pub const HTTP_REQUESTS_TOTAL: &str = "patchbay_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "patchbay_http_request_duration_seconds";
pub const HTTP_REQUEST_SIZE_BYTES: &str = "patchbay_http_request_size_bytes";
pub const HTTP_RESPONSE_SIZE_BYTES: &str = "patchbay_http_response_size_bytes";
pub const HTTP_REQUESTS_IN_FLIGHT: &str = "patchbay_http_requests_in_flight";

pub const BUILD_INFO: &str = "patchbay_build_info";
pub const UPTIME_SECONDS: &str = "patchbay_uptime_seconds";

pub const DB_ACQUIRE_SECONDS: &str = "patchbay_db_acquire_duration_seconds";
pub const DB_CONNECTIONS: &str = "patchbay_db_connections";
pub const DB_CONNECTIONS_MAX: &str = "patchbay_db_connections_max";

pub const AUTH_ATTEMPTS_TOTAL: &str = "patchbay_auth_attempts_total";

pub const CAS_RECEIVED_BYTES_TOTAL: &str = "patchbay_cas_received_bytes_total";
pub const CAS_SENT_BYTES_TOTAL: &str = "patchbay_cas_sent_bytes_total";
pub const CAS_PUTS_TOTAL: &str = "patchbay_cas_puts_total";
pub const CAS_DEDUP_HITS_TOTAL: &str = "patchbay_cas_dedup_hits_total";

pub const WORKFLOW_PATCHES_COMMITTED_TOTAL: &str = "patchbay_workflow_patches_committed_total";
pub const WORKFLOW_CONFLICTS_TOTAL: &str = "patchbay_workflow_conflicts_total";
pub const WORKFLOW_VALIDATION_FAILURES_TOTAL: &str = "patchbay_workflow_validation_failures_total";
pub const WORKFLOW_COMPACTIONS_TOTAL: &str = "patchbay_workflow_compactions_total";
pub const WORKFLOW_SNAPSHOT_SIZE_BYTES: &str = "patchbay_workflow_snapshot_size_bytes";
pub const WORKFLOW_SSE_CLIENTS: &str = "patchbay_workflow_sse_clients";
