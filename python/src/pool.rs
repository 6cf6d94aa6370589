//! Thread pools for `threads=`: the global rayon pool (all cores) by default, otherwise
//! one pool per requested size, built once and kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::PyResult;
use rayon::ThreadPool;

use crate::errors::{error, Kind};

/// Runs `f` on `threads` rayon threads; `None` means every core. `f` itself runs on a
/// thread of the pool, so the calling (Python) thread hands over once and sleeps until
/// the end: called from outside the pool, every parallel call in `f` (a tensor's pieces,
/// one `join` each) handed its work over and slept on its own: 28–31 voluntary context
/// switches per warm all-MiniLM load instead of 2–5. Each is a wake-up, which a virtual
/// machine whose idle cores halt may pay for with an exit to the host (suspected from
/// quiet runs, not timed).
pub(crate) fn run<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> PyResult<R> {
    let Some(n) = threads else {
        return Ok(rayon::scope(|_| f()));
    };
    if n == 0 {
        return Err(error(Kind::Argument, "threads must be at least 1"));
    }
    Ok(pool(n)?.install(f))
}

fn pool(n: usize) -> PyResult<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(p) = pools.get(&n) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("mcodec-{i}"))
        .build()
        .map_err(|e| error(Kind::Argument, format!("cannot start {n} threads: {e}")))?;
    let p = Arc::new(p);
    pools.insert(n, p.clone());
    Ok(p)
}

/// The pool `threads=` asks for (`None`: rayon's global pool, every core), started if
/// this is its first use.
pub(crate) fn get(threads: Option<usize>) -> PyResult<Option<Arc<ThreadPool>>> {
    match threads {
        None => Ok(None),
        Some(0) => Err(error(Kind::Argument, "threads must be at least 1")),
        Some(n) => pool(n).map(Some),
    }
}

/// Runs `f` once on every thread of `pool` (`None`: rayon's global pool) at the same
/// time, returning when every call has; the calling thread sleeps meanwhile, woken once.
pub(crate) fn each(pool: Option<&ThreadPool>, f: &(dyn Fn() + Sync)) {
    match pool {
        Some(p) => p.broadcast(|_| f()),
        None => rayon::broadcast(|_| f()),
    };
}
