//! Signature verification off the async workers, with bounded concurrency.
//!
//! Owns: where the expensive step of an authentication (the signature
//! arithmetic, up to an RSA-16384 verification) runs. Ed25519 (a fixed ~50 µs)
//! is verified in place on the async worker: the blocking-pool hop (two thread
//! wake-ups, a task allocation) cost more than the arithmetic and serialized
//! connect storms behind one permit on a 2-core machine. Everything else runs on
//! tokio's blocking pool, at most `concurrency` at a time (one fewer than the cores, at
//! least one), so a flood of expensive signatures queues here instead of
//! occupying the runtime workers that answer pings, forward agent output and
//! serve health probes. Must not: decide anything about keys or throttling.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{AuthError, Candidate};

/// The verification pool. Shared by every connection.
#[derive(Debug)]
pub struct Verifier {
    permits: Arc<Semaphore>,
    concurrency: usize,
}

impl Verifier {
    /// At most `concurrency` verifications at once (at least one).
    pub fn new(concurrency: usize) -> Verifier {
        let concurrency = concurrency.max(1);
        Verifier {
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
        }
    }

    /// Sized to this machine: one fewer than its cores, so one stays free for the
    /// async workers; at least one.
    pub fn for_this_machine() -> Verifier {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier::new(cores.saturating_sub(1))
    }

    /// How many verifications may run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Verify `candidate` over `msg`: an Ed25519 signature right here (about
    /// 50 µs of arithmetic, less than the hop to the blocking pool and back costs
    /// in a connect storm), anything else on the blocking pool once a
    /// permit is free.
    pub async fn verify(&self, candidate: Candidate, msg: Vec<u8>) -> Result<(), AuthError> {
        if is_cheap(candidate.key()) {
            return candidate.verify(&msg);
        }
        // The semaphore is never closed; `ok()` only keeps this panic-free.
        let _permit = self.permits.clone().acquire_owned().await.ok();
        tokio::task::spawn_blocking(move || candidate.verify(&msg))
            .await
            .unwrap_or_else(|e| {
                // Only a panic inside the arithmetic gets here: refuse, and say so.
                tracing::error!(error = %e, "signature verification task failed");
                Err(AuthError::BadSignature(
                    "verification failed internally".into(),
                ))
            })
    }
}

/// Key types whose verification is cheap and bounded enough to run on an async
/// worker: Ed25519 (also FIDO `sk-` Ed25519), a fixed ~50 µs whatever the input.
/// ECDSA (P-384/P-521 cost several times more) and RSA (up to 16384 bits) go
/// to the pool.
fn is_cheap(key: &ssh_key::public::KeyData) -> bool {
    matches!(
        key,
        ssh_key::public::KeyData::Ed25519(_) | ssh_key::public::KeyData::SkEd25519(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_one_permit() {
        assert_eq!(Verifier::new(0).concurrency(), 1);
        assert!(Verifier::for_this_machine().concurrency() >= 1);
    }
}
