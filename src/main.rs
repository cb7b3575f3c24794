//! The `c360` binary: parses the command line and maps failures to exit codes.

use clap::Parser;

// The identity graph and the aggregates allocate and free millions of small strings; the
// system allocator spent a sixth of a run's time on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_t` of the mimalloc (v3) that libmimalloc-sys
/// builds. [`keep_freed_memory`] sets it only while it holds the default below, so options
/// renumbered by an upgrade change nothing (and fail the test).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
/// mimalloc's default purge delay in milliseconds.
const MI_DEFAULT_PURGE_DELAY: std::ffi::c_long = 1000;

unsafe extern "C" {
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// mimalloc hands memory back to the OS a second after it is freed, and a run frees
/// gigabytes between its phases only to fault them in again: at 1M customers that was
/// 3-4 s of kernel time. Kept, freed memory serves the next phase; the peak grows by
/// about a third, so a run with a memory budget, and the REPL, keep mimalloc's default.
/// A purge delay set in `MIMALLOC_PURGE_DELAY` is left as it is.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: both take and return integers; mimalloc reads the delay each time it purges.
    unsafe {
        if mi_option_get(MI_OPTION_PURGE_DELAY) == MI_DEFAULT_PURGE_DELAY {
            mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

#[tokio::main]
async fn main() {
    // Transparent huge pages make a touched byte of the graph's hash tables cost 2 MiB of
    // resident memory: at 1M customers they added 0.35 GiB to the peak, and saved no time.
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no memory of ours.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let cli = c360::cli::Cli::parse();
    let keep = match &cli.command {
        c360::cli::Command::Run(run) => run.memory_limit.is_none(),
        // A session left open would hold its largest query's memory for good.
        c360::cli::Command::Repl(_) => false,
        _ => true,
    };
    if keep {
        keep_freed_memory();
    }
    if let Err(e) = c360::cli::run(cli).await {
        eprintln!("Error: {}", c360::redact::redact(&e.to_string()));
        std::process::exit(e.exit_code());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_mimalloc_documents() {
        // SAFETY: as in keep_freed_memory.
        let (before, after) = unsafe {
            let before = mi_option_get(MI_OPTION_PURGE_DELAY);
            keep_freed_memory();
            (before, mi_option_get(MI_OPTION_PURGE_DELAY))
        };
        assert_eq!(before, MI_DEFAULT_PURGE_DELAY);
        assert_eq!(after, -1);
    }
}
