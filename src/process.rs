//! The process's own resources: the file-descriptor limit, raised at start where allowed,
//! the descriptors in use and the memory held, watched in `/metrics`.

use tracing::{info, warn};

/// Raises the soft limit on open files to the hard limit (every connection, segment and
/// WAL file is one) and returns the limit in force.
pub fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "could not read the open-file limit");
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            info!(from = limit.rlim_cur, to = limit.rlim_max, "open-file limit raised");
            limit = raised;
        } else {
            warn!(limit = limit.rlim_cur, error = %std::io::Error::last_os_error(), "could not raise the open-file limit");
        }
    }
    let max = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
    metrics::gauge!("vigil_process_max_fds").set(max as f64);
    max
}

/// Records the descriptors in use (`/proc/self/fd`, where there is one).
pub fn record_fds() {
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("vigil_process_open_fds").set(entries.count() as f64);
    }
}

/// Records the resident memory (`/proc/self/statm`), the part of it that is files mapped
/// (the program's own code most of all: a fault maps its neighbours too, so code scattered
/// over a large program maps far more than it runs; the kernel can drop these pages and read
/// them again), and what the parts that hold memory by design account for: the write buffer
/// and the running queries (the SLO rollups are recorded by the evaluator after each cycle).
/// The rest is caches and allocator slack.
pub fn record_memory(engine: &vigil_query::QueryEngine) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        // Pages: size, resident, resident backed by files (or shared), ...
        let field = |index: usize| statm.split_whitespace().nth(index)?.parse::<f64>().ok();
        if let Some(pages) = field(1) {
            metrics::gauge!("vigil_process_resident_memory_bytes").set(pages * page);
        }
        if let Some(pages) = field(2) {
            metrics::gauge!("vigil_process_resident_file_bytes").set(pages * page);
        }
    }
    metrics::gauge!("vigil_memory_bytes", "component" => "write_buffer").set(engine.storage().buffered_bytes() as f64);
    metrics::gauge!("vigil_memory_bytes", "component" => "queries").set(engine.memory_reserved() as f64);
}

/// Hands the allocator's freed memory back to the OS once its purge delay (1 s) has passed.
/// mimalloc purges such memory only when some thread next allocates or collects, so a
/// server that went quiet after a burst kept it resident: after the compaction a restart
/// runs, 137 MiB at rest (63 MiB anonymous) for 106-108 MiB (37-38 MiB) with this, and the
/// first dashboard panel's peak stood on it (215 MiB for 173-183). Called on a timer: what is
/// freed and reused within the delay is never purged, so busy work pays nothing (a purge
/// delay of 0 instead cost 8-21 % more CPU a query, every freed page faulted in again).
pub fn return_freed_memory() {
    // SAFETY: mi_collect has no preconditions; it collects the calling thread's heap and
    // purges the arenas' free ranges whose delay has expired (process-wide).
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// An exclusive lock on a data directory (`DATA_DIR/lock`, `flock`): one server, or one
/// repair, at a time. Released when dropped or when the process dies.
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    pub fn take(data_dir: &std::path::Path) -> anyhow::Result<DataDirLock> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("lock");
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            anyhow::bail!(
                "{} is in use by another Vigil process (the lock {} is held): stop it first",
                data_dir.display(),
                path.display()
            );
        }
        Ok(DataDirLock { _file: file })
    }
}
