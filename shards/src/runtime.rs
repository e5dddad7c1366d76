//! The seam between gyro and what runs its shards: one pinned thread per shard, running
//! either gyro's own event loop over epoll (`serve::evloop`, the default) or a glommio
//! executor (`serve::shard_main`). Everything else gyro asks of glommio (TCP, timers,
//! local tasks, channels) goes through the few glommio calls in `serve`.

use std::future::Future;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

/// io_uring buffer memory per executor: small enough for an 8 MiB memlock limit as a
/// non-root user with a few shards.
pub const IO_MEMORY: usize = 1 << 20;
/// io_uring submission queue depth per executor.
pub const RING_DEPTH: usize = 256;

/// A running shard.
pub enum ShardHandle<T: Send + 'static> {
    Glommio(glommio::ExecutorJoinHandle<T>),
    Thread(std::thread::JoinHandle<T>),
}

impl<T: Send + 'static> ShardHandle<T> {
    /// Waits for the shard to finish; an error names why it could not run.
    pub fn join(self) -> Result<T, String> {
        match self {
            ShardHandle::Glommio(h) => h.join().map_err(|e| format!("shard executor failed: {e}")),
            ShardHandle::Thread(h) => h.join().map_err(|_| "shard thread panicked".to_string()),
        }
    }
}

/// Starts shard `shard` as a thread pinned to CPU `cpu` (when the machine has it)
/// running `main` (the epoll runtime).
pub fn spawn_thread<F, T>(shard: usize, cpu: usize, main: F) -> Result<ShardHandle<T>, String>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::Builder::new()
        .name(format!("gyro-shard-{shard}"))
        .spawn(move || {
            if cpu < cpus {
                pin_to(cpu);
            }
            main()
        })
        .map(ShardHandle::Thread)
        .map_err(|e| format!("cannot start shard {shard}: {e}"))
}

/// Pins the calling thread to one CPU; where that is refused (a container's CPU set),
/// the thread runs unpinned.
fn pin_to(cpu: usize) {
    // SAFETY: `set` is a plain bit set owned by this frame; `sched_setaffinity` reads
    // `size_of::<cpu_set_t>()` bytes of it and affects only the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
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
        .map(ShardHandle::Glommio)
        .map_err(|e| {
            format!(
                "cannot start shard {shard} on CPU {cpu}: {e} (gyro needs io_uring: Linux 5.8 \
                 or later, not blocked by seccomp, and a memlock limit of at least 8 MiB; \
                 see `ulimit -l`)"
            )
        })
}
