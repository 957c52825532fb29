//! A token bucket: the per-connection frame rate limit.

use std::time::Instant;

/// Frames allowed per second, with a burst.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> RateLimit {
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10.0, 3.0, t0);
        assert!(r.take(t0) && r.take(t0) && r.take(t0));
        assert!(!r.take(t0));
        assert!(r.take(t0 + Duration::from_millis(100)));
        assert!(!r.take(t0 + Duration::from_millis(100)));
    }
}
