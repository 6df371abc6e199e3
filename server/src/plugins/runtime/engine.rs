//! The wasmtime engine (pooling allocator sized from [`EngineConfig`]), the epoch ticker, and
//! the guest runtime every guest runs on.

use std::time::Duration;

use anyhow::Context as _;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::EngineConfig;

/// Core instances one component may hold. Rust components have 3-4 (the module plus shims);
/// componentize-py and JS runtimes a dozen or so.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
/// Average core instances per live component, for the pool's total.
const CORE_INSTANCES_PER_SLOT: u32 = 8;
/// Linear memories (and tables) per live component, for the pool's totals. Most components
/// define one memory; a few shims add their own.
const MEMORIES_PER_SLOT: u32 = 2;
const TABLES_PER_SLOT: u32 = 4;
/// Tables per core module: reference-types toolchains (wasi-libc with exceptions, C#) use more
/// than the single funcref table the pool allows by default.
const TABLES_PER_MODULE: u32 = 4;
const TABLE_ELEMENTS: usize = 50_000;
/// Stack left to host functions beyond the guest's own stack on each fiber (wasmtime's default
/// leaves 1.5 MiB).
const HOST_STACK_HEADROOM: usize = 1536 << 10;
/// Above this much virtual address space for the memory pool, memories stop reserving 4 GiB
/// each (which elides bounds checks) and reserve only their maximum (explicit bounds checks).
const MAX_POOL_ADDRESS_SPACE: u64 = 32 << 40;
const FOUR_GIB: u64 = 4 << 30;
/// Slot memory kept mapped after an instance ends so the next one skips page faults; small so
/// idle slots do not pin RSS. With `PAGEMAP_SCAN` (Linux 6.7+) this much of the pages the guest
/// actually dirtied is restored by copy, and only the rest is decommitted.
const KEEP_RESIDENT: usize = 64 << 10;

pub(super) fn build_engine(cfg: &EngineConfig) -> anyhow::Result<Engine> {
    anyhow::ensure!(cfg.max_instances > 0, "max_instances must be at least 1");
    anyhow::ensure!(
        cfg.max_stack_bytes >= 64 << 10,
        "max_stack_bytes must be at least 64 KiB"
    );
    anyhow::ensure!(!cfg.epoch_tick.is_zero(), "epoch_tick must be positive");
    let max_memory = usize::try_from(cfg.max_memory_bytes_per_instance)
        .context("max_memory_bytes_per_instance does not fit in memory")?;
    anyhow::ensure!(
        max_memory >= 1 << 20,
        "max_memory_bytes_per_instance must be at least 1 MiB"
    );

    let slots = cfg.max_instances;
    let total_memories = slots.saturating_mul(MEMORIES_PER_SLOT);

    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_SLOT))
        .total_memories(total_memories)
        .total_tables(slots.saturating_mul(TABLES_PER_SLOT))
        .total_stacks(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_tables_per_module(TABLES_PER_MODULE)
        .table_elements(TABLE_ELEMENTS)
        .max_memory_size(max_memory)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        // Reset only the pages an instance dirtied (found with the `PAGEMAP_SCAN` ioctl), by
        // copy, instead of `madvise`-ing the slot: no page faults for the next instance and no
        // TLB shootdowns, which were a fifth of a small plugin's per-request CPU. Falls back to
        // the old reset where the kernel lacks the ioctl.
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(cfg.max_stack_bytes)
        .async_stack_size(round_up(
            cfg.max_stack_bytes + HOST_STACK_HEADROOM,
            64 << 10,
        ))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if u64::from(total_memories) * FOUR_GIB > MAX_POOL_ADDRESS_SPACE {
        config.memory_reservation(cfg.max_memory_bytes_per_instance);
    }
    let engine = Engine::new(&config).map_err(anyhow::Error::from);
    engine.context("creating the wasmtime engine")
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Advances the engine's epoch every `tick` until the engine is dropped: a store's deadline is
/// counted in these ticks, and every tick a running guest yields its thread (see `exec`).
pub(super) fn spawn_epoch_ticker(engine: &Engine, tick: Duration) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .context("starting the epoch ticker")?;
    Ok(())
}

/// The tokio runtime guests run on, apart from actix's workers.
pub(super) struct GuestRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl GuestRuntime {
    pub(super) fn new(threads: usize) -> anyhow::Result<Self> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasm-guest")
            .enable_all()
            .build()
            .context("starting the guest runtime")?;
        Ok(Self { rt: Some(rt) })
    }

    pub(super) fn handle(&self) -> &tokio::runtime::Handle {
        self.rt
            .as_ref()
            .expect("guest runtime lives until drop")
            .handle()
    }
}

impl Drop for GuestRuntime {
    fn drop(&mut self) {
        // A plain drop blocks on the workers and panics inside an async context (tests, actix
        // shutdown); guests still running are cancelled either way.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
