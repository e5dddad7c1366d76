//! What runs a shard: one thread per shard, pinned to its CPU, running gyro's event
//! loop over epoll (`serve::evloop`).

/// A running shard.
pub struct ShardHandle<T: Send + 'static>(std::thread::JoinHandle<T>);

impl<T: Send + 'static> ShardHandle<T> {
    /// Waits for the shard to finish; an error names why it could not run.
    pub fn join(self) -> Result<T, String> {
        self.0
            .join()
            .map_err(|_| "shard thread panicked".to_string())
    }
}

/// Starts shard `shard` as a thread pinned to CPU `cpu` (when the machine has it)
/// running `main`.
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
        .map(ShardHandle)
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
