//! The seam between gyro and its runtime (glommio): start one pinned executor per
//! shard. Everything else gyro asks of the runtime (TCP, timers, local tasks) goes
//! through the few glommio calls in `serve`; replacing glommio means replacing this file
//! and those calls.

use std::future::Future;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

/// io_uring buffer memory per executor: small enough for an 8 MiB memlock limit as a
/// non-root user with a few shards.
pub const IO_MEMORY: usize = 1 << 20;
/// io_uring submission queue depth per executor.
pub const RING_DEPTH: usize = 256;

/// A running shard executor.
pub struct ShardHandle<T: Send + 'static> {
    handle: glommio::ExecutorJoinHandle<T>,
}

impl<T: Send + 'static> ShardHandle<T> {
    /// Waits for the executor to finish; an error names why it could not run.
    pub fn join(self) -> Result<T, String> {
        self.handle
            .join()
            .map_err(|e| format!("shard executor failed: {e}"))
    }
}

/// Starts shard `shard` on CPU `cpu` running `main`. Fails with a clear message when
/// io_uring cannot be set up (old kernel, seccomp, memlock limit).
pub fn spawn_shard<G, F, T>(shard: usize, cpu: usize, main: G) -> Result<ShardHandle<T>, String>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let placement = if cpu < cpus {
        Placement::Fixed(cpu)
    } else {
        Placement::Unbound
    };
    LocalExecutorBuilder::new(placement)
        .name(&format!("gyro-shard-{shard}"))
        .io_memory(IO_MEMORY)
        .ring_depth(RING_DEPTH)
        .preempt_timer(Duration::from_millis(50))
        .spawn(main)
        .map(|handle| ShardHandle { handle })
        .map_err(|e| {
            format!(
                "cannot start shard {shard} on CPU {cpu}: {e} (gyro needs io_uring: Linux 5.8 \
                 or later, not blocked by seccomp, and a memlock limit of at least 8 MiB; \
                 see `ulimit -l`)"
            )
        })
}
