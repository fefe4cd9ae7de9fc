//! Capped exponential backoff with deterministic jitter.
//!
//! The jitter comes from a seed passed in (derived from the activation id and the attempt), never
//! from a random source, so `decide` stays deterministic and a replay reproduces every retry time.

use std::time::Duration;

/// The delay before retry number `attempt + 1`, after `attempt` failed tries (`attempt >= 1`).
///
/// "Equal jitter": half of the capped exponential delay is fixed, the other half is spread by the
/// seed, so retries of many activations failing together do not arrive at the target in lockstep,
/// yet no retry comes sooner than half the nominal delay.
pub fn delay(attempt: u32, base: Duration, cap: Duration, seed: u64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let nominal = base
        .checked_mul(1u32 << exponent.min(31))
        .unwrap_or(cap)
        .min(cap);
    let half = nominal / 2;
    let spread_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    let jitter_ms = if spread_ms == 0 {
        0
    } else {
        splitmix64(seed ^ u64::from(attempt)) % (spread_ms + 1)
    };
    half + Duration::from_millis(jitter_ms)
}

/// SplitMix64: a small, well-mixed hash used as a deterministic jitter source.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_stays_within_half_to_full() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for seed in 0..50u64 {
            for attempt in 1..40 {
                let nominal = (base * (1u32 << (attempt - 1).min(31))).min(cap);
                let d = delay(attempt, base, cap, seed);
                assert!(d >= nominal / 2 && d <= nominal, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(delay(1, base, cap, 7), delay(1, base, cap, 7));
        assert!(delay(100, base, cap, 1) <= cap);
    }

    #[test]
    fn seeds_spread_the_delays() {
        let base = Duration::from_secs(8);
        let cap = Duration::from_secs(600);
        let distinct: std::collections::BTreeSet<_> =
            (0..32u64).map(|s| delay(3, base, cap, s)).collect();
        assert!(distinct.len() > 16, "{distinct:?}");
    }
}
