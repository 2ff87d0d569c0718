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

/// The most sockets that may wait for a refusal beyond the connections.
pub const MAX_OVERFLOW: usize = 64;

/// Sockets that may wait for a refusal (over a cap, or no slot) beyond the
/// connections: a quarter of the reserve, so refusals never take the descriptors
/// the rest of the process needs.
pub fn overflow_for(limit: u64) -> usize {
    ((reserve_for(limit) / 4) as usize).clamp(1, MAX_OVERFLOW)
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

    #[test]
    fn overflow_is_a_quarter_of_the_reserve() {
        assert_eq!(overflow_for(256), 16);
        assert_eq!(overflow_for(1_048_576), 64);
        assert_eq!(overflow_for(4), 1);
    }
}
