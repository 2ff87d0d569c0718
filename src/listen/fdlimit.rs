//! File descriptors: raise the soft `RLIMIT_NOFILE` to the hard limit at start and
//! size `--max-connections` against it.
//!
//! Every connection holds one descriptor from its accept on; the rest of the
//! process (listeners, journals, agents' pipes, the runtime) needs a reserve.

/// Descriptors kept for everything but client connections.
pub fn reserve_for(limit: u64) -> u64 {
    // A quarter of a small limit; 256 is plenty for sessions, journals and agents.
    (limit / 4).min(256)
}

/// Raise the soft limit to the hard one; returns the soft limit now in force.
pub fn raise_nofile() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::debug!(from = soft, to = hard, "raised the open-files limit");
                return Some(hard);
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-files limit");
            }
        }
    }
    Some(soft)
}

/// `max_connections`, lowered when `nofile` descriptors cannot hold that many.
pub fn size_connections(max_connections: usize, nofile: u64) -> usize {
    let usable = nofile.saturating_sub(reserve_for(nofile)).max(1);
    if max_connections as u64 > usable {
        usable as usize
    } else {
        max_connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_the_limit_only_when_descriptors_are_short() {
        assert_eq!(size_connections(4096, 1_048_576), 4096);
        assert_eq!(size_connections(4096, 1024), 1024 - 256);
        assert_eq!(size_connections(4096, 64), 48);
        assert_eq!(size_connections(10, 64), 10);
    }
}
