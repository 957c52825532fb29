//! A small deterministic random number generator (SplitMix64): enough for load shapes,
//! and no dependency.

use std::time::Duration;

/// SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed; equal seeds give equal sequences.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// A generator for one stream (an agent, a task) derived from a run seed.
    pub fn derive(seed: u64, stream: u64) -> Rng {
        let mut r = Rng::new(seed.wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03)));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Exponentially distributed with this mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// How a delay is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dist {
    /// Always the mean.
    Fixed,
    /// Exponential around the mean.
    Exp,
}

/// A delay distribution: a mean in milliseconds and a shape.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Delay {
    /// The mean, in milliseconds.
    pub mean_ms: f64,
    /// The shape.
    pub dist: Dist,
}

impl Delay {
    /// No delay at all.
    pub const ZERO: Delay = Delay {
        mean_ms: 0.0,
        dist: Dist::Fixed,
    };

    /// A fixed delay.
    pub fn fixed(ms: f64) -> Delay {
        Delay {
            mean_ms: ms,
            dist: Dist::Fixed,
        }
    }

    /// An exponential delay.
    pub fn exp(mean_ms: f64) -> Delay {
        Delay {
            mean_ms,
            dist: Dist::Exp,
        }
    }

    /// One draw.
    pub fn sample(&self, rng: &mut Rng) -> Duration {
        if self.mean_ms <= 0.0 || !self.mean_ms.is_finite() {
            return Duration::ZERO;
        }
        let ms = match self.dist {
            Dist::Fixed => self.mean_ms,
            Dist::Exp => rng.exp(self.mean_ms),
        };
        Duration::from_secs_f64((ms / 1000.0).clamp(0.0, 3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_in_range_and_exp_has_its_mean() {
        let mut r = Rng::new(7);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            sum += r.exp(10.0);
        }
        let mean = sum / n as f64;
        assert!((mean - 10.0).abs() < 0.3, "mean {mean}");
    }

    #[test]
    fn zero_delay_is_zero() {
        let mut r = Rng::new(1);
        assert_eq!(Delay::ZERO.sample(&mut r), Duration::ZERO);
        assert_eq!(Delay::fixed(5.0).sample(&mut r), Duration::from_millis(5));
    }
}
