//! The wasmtime engine of one runner: pooling allocation sized for the app's concurrency and
//! memory limit, and epoch interruption driven by a ticker thread that only ticks while requests
//! are running (an idle runner costs no wakeups).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, Thread};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances while requests run; deadlines are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Core instances, memories and tables one component instance may use from the pool.
const POOL_ITEMS_PER_COMPONENT: u32 = 16;

/// Builds the engine for an app that may use `memory_bytes` of linear memory per memory and runs
/// at most `slots` requests at once.
pub fn build_engine(memory_bytes: u64, slots: u32) -> wasmtime::Result<Engine> {
    let slots = slots.max(1);
    let items = slots.saturating_mul(POOL_ITEMS_PER_COMPONENT);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(items)
        .total_memories(items)
        .total_tables(items)
        .total_stacks(slots)
        .max_memory_size(usize::try_from(memory_bytes).unwrap_or(usize::MAX));
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Epoch ticks to allow for `deadline`: rounded up, plus one because the first tick may come at
/// once.
pub fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    let ticks = deadline.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while at least one request is active.
#[derive(Debug)]
pub struct EpochTicker {
    shared: Arc<Shared>,
    thread: Thread,
}

#[derive(Debug)]
struct Shared {
    active: AtomicUsize,
    stop: AtomicBool,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let seen = shared.clone();
        let handle = thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !seen.stop.load(Ordering::Acquire) {
                    if seen.active.load(Ordering::Acquire) == 0 {
                        // An `activate` between the check and here leaves a token: park returns.
                        thread::park();
                        continue;
                    }
                    thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// Keeps the ticker running until the guard drops.
    pub fn activate(&self) -> TickerActive {
        if self.shared.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        TickerActive {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// One active request's hold on the ticker.
#[derive(Debug)]
pub struct TickerActive {
    shared: Arc<Shared>,
}

impl Drop for TickerActive {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks_plus_one() {
        assert_eq!(deadline_ticks(Duration::from_millis(10)), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(11)), 3);
        assert_eq!(deadline_ticks(Duration::from_secs(2)), 201);
        assert_eq!(deadline_ticks(Duration::ZERO), 1);
    }
}
