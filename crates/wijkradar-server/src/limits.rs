//! Per-partner rate limits: a token bucket of signals per organisation
//! (GCRA, the `governor` crate), checked before a batch enters the shared
//! writer's queue, so a partner that floods is refused
//! (RESOURCE_EXHAUSTED) and does not slow the others down.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::Limits;
use crate::error::{ApiError, Violation};

#[derive(Debug)]
pub(crate) struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    per_second: NonZeroU32,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Limiter {
        let per_second =
            NonZeroU32::new(limits.partner_signals_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.partner_burst_signals).unwrap_or(NonZeroU32::MIN);
        Limiter {
            buckets: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
            per_second,
        }
    }

    /// Takes `signals` from the partner's bucket, or says how long to wait.
    pub(crate) fn admit(&self, partner: &str, signals: usize) -> Result<(), ApiError> {
        let n = u32::try_from(signals)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        match self.buckets.check_key_n(&partner.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                tracing::warn!(
                    organisation = partner,
                    wait_ms = wait.as_millis() as u64,
                    "partner over its rate limit"
                );
                Err(ApiError::TooLarge(Violation::new(
                    "batch",
                    format!(
                        "organisation `{partner}` is over its limit of {} signals per second; retry in {} ms",
                        self.per_second,
                        wait.as_millis().max(1)
                    ),
                )))
            }
            Err(_) => Err(ApiError::TooLarge(Violation::new(
                "batch.signals",
                "the batch is larger than the partner's burst limit; send smaller batches",
            ))),
        }
    }
}
