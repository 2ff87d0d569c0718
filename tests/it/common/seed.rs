//! Randomized tests take their seed from `CCRELAY_TEST_SEED` when it is set and
//! from the clock otherwise, and print the seed they used, so that a failure seen
//! once can be replayed exactly (`CCRELAY_TEST_SEED=<printed seed> cargo test …`).

/// The seed for this test: `CCRELAY_TEST_SEED`, else the clock. Printed either way.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("CCRELAY_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(42)
        });
    println!("{test}: random seed {seed} (replay with CCRELAY_TEST_SEED={seed})");
    eprintln!("{test}: random seed {seed} (replay with CCRELAY_TEST_SEED={seed})");
    seed
}

/// A small deterministic generator (a 64-bit LCG) for cut points and choices.
pub struct Lcg(u64);

impl Lcg {
    /// Seeded by [`test_seed`].
    pub fn for_test(test: &str) -> Lcg {
        Lcg(test_seed(test))
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }

    /// Fill `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.below(256) as u8;
        }
    }
}
