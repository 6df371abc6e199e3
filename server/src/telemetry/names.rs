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

pub const PLUGIN_REQUESTS_TOTAL: &str = "patchbay_plugin_requests_total";
pub const PLUGIN_DISPATCHED_TOTAL: &str = "patchbay_plugin_dispatched_total";
pub const PLUGIN_COMPLETED_TOTAL: &str = "patchbay_plugin_completed_total";
pub const PLUGIN_SHED_TOTAL: &str = "patchbay_plugin_shed_total";
pub const PLUGIN_QUEUE_DEPTH: &str = "patchbay_plugin_queue_depth";
pub const PLUGIN_BUSY_INSTANCES: &str = "patchbay_plugin_busy_instances";
pub const PLUGIN_CAPACITY: &str = "patchbay_plugin_capacity";
pub const PLUGIN_QUEUE_WAIT_SECONDS: &str = "patchbay_plugin_queue_wait_seconds";
pub const PLUGIN_EXECUTION_SECONDS: &str = "patchbay_plugin_execution_seconds";
pub const PLUGIN_INSTANTIATION_SECONDS: &str = "patchbay_plugin_instantiation_seconds";
pub const PLUGIN_AUTOLOAD_SECONDS: &str = "patchbay_plugin_autoload_seconds";
pub const PLUGIN_AUTOLOAD_TOTAL: &str = "patchbay_plugin_autoload_total";
pub const PLUGIN_COMPILES_TOTAL: &str = "patchbay_plugin_compiles_total";
pub const PLUGIN_HEALTHY: &str = "patchbay_plugin_healthy";
pub const PLUGIN_CONSECUTIVE_FAILURES: &str = "patchbay_plugin_consecutive_failures";
pub const PLUGIN_SECONDS_SINCE_SUCCESS: &str = "patchbay_plugin_seconds_since_success";
pub const WORKFLOW_PATCHES_COMMITTED_TOTAL: &str = "patchbay_workflow_patches_committed_total";
pub const WORKFLOW_CONFLICTS_TOTAL: &str = "patchbay_workflow_conflicts_total";
pub const WORKFLOW_VALIDATION_FAILURES_TOTAL: &str = "patchbay_workflow_validation_failures_total";
pub const WORKFLOW_COMPACTIONS_TOTAL: &str = "patchbay_workflow_compactions_total";
pub const WORKFLOW_SNAPSHOT_SIZE_BYTES: &str = "patchbay_workflow_snapshot_size_bytes";
pub const WORKFLOW_SSE_CLIENTS: &str = "patchbay_workflow_sse_clients";
pub const CACHE_LOOKUPS_TOTAL: &str = "patchbay_cache_lookups_total";
pub const CACHE_STORES_TOTAL: &str = "patchbay_cache_stores_total";
pub const CACHE_SECONDS_SAVED_TOTAL: &str = "patchbay_cache_seconds_saved_total";
pub const CACHE_HIT_SIMILARITY: &str = "patchbay_cache_hit_similarity";
pub const CACHE_ENTRIES: &str = "patchbay_cache_entries";
pub const CACHE_EVICTIONS_TOTAL: &str = "patchbay_cache_evictions_total";
pub const CACHE_REJECTIONS_TOTAL: &str = "patchbay_cache_rejections_total";
pub const CACHE_EMBEDDER_REQUESTS_TOTAL: &str = "patchbay_cache_embedder_requests_total";
pub const CACHE_EMBEDDER_DURATION_SECONDS: &str = "patchbay_cache_embedder_duration_seconds";
pub const CACHE_VECTOR_INDEX_SEARCHES_TOTAL: &str = "patchbay_cache_vector_index_searches_total";
pub const CACHE_VECTOR_INDEX_FALLBACKS_TOTAL: &str = "patchbay_cache_vector_index_fallbacks_total";
pub const CACHE_VECTOR_INDEX_BYTES: &str = "patchbay_cache_vector_index_bytes";
pub const CACHE_VECTOR_INDEX_LOAD_SECONDS: &str = "patchbay_cache_vector_index_load_seconds";
