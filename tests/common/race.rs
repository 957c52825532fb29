//! An accept racing its offer's expiry: where to aim each accept, and what the deadline
//! rule says the outcome must be.
//!
//! The hub's clock runs on the same monotonic clock as the test (`tokio::time::Instant`;
//! separate node processes anchor it to the same wall clock), so the test can bound the
//! deadline it cannot see: the offer was made after the task was created and before the
//! offer frame was read, so the deadline lies between `created + timeout` and
//! `offered + timeout`. Accepts are aimed at staggered offsets around the later bound,
//! round after round, until both outcomes have happened; every round is checked against
//! the bounds (an accept sent after the latest possible deadline must lose, one answered
//! before the earliest must win), and the caller checks it against the task's state.

use std::time::Duration;
use tokio::time::Instant;

/// The instants one round is judged by.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Just before the task was created: the offer, and so its deadline, came later.
    pub created: Instant,
    /// When the offer frame was read: the offer was made before.
    pub offered: Instant,
    /// When the accept was sent.
    pub sent: Instant,
    /// When its answer was read.
    pub answered: Instant,
}

#[derive(Debug)]
struct Round {
    offset_ms: i64,
    won: bool,
    /// Where the accept was sent relative to the latest possible deadline, in ms.
    sent_ms: f64,
}

/// The rounds of one race test.
pub struct Race {
    timeout: Duration,
    margin: Duration,
    offsets_ms: &'static [i64],
    max_sweeps: usize,
    rounds: Vec<Round>,
}

fn signed_ms(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64() * 1000.0
    } else {
        -((b - a).as_secs_f64() * 1000.0)
    }
}

impl Race {
    /// `offsets_ms`: where each round sends its accept, relative to the latest possible
    /// deadline (offer read + `timeout`); some should be well before it, some at and after.
    /// `margin`: how far apart two processes' clocks may be (zero in one process, but at
    /// least the microsecond rounding of the hub's clock).
    pub fn new(timeout: Duration, margin: Duration, offsets_ms: &'static [i64]) -> Race {
        Race {
            timeout,
            margin,
            offsets_ms,
            max_sweeps: 5,
            rounds: Vec::new(),
        }
    }

    fn seen(&self, won: bool) -> bool {
        self.rounds.iter().any(|r| r.won == won)
    }

    /// The next round's offset, or None when done: at least one whole sweep, and both
    /// outcomes seen (or `max_sweeps` sweeps run; then `assert_both_outcomes` fails).
    pub fn next_offset(&self) -> Option<i64> {
        let n = self.rounds.len();
        let swept = n >= self.offsets_ms.len();
        if (swept && self.seen(true) && self.seen(false))
            || n >= self.offsets_ms.len() * self.max_sweeps
        {
            return None;
        }
        Some(self.offsets_ms[n % self.offsets_ms.len()])
    }

    /// When to send the accept of a round whose offer frame was read at `offered`.
    pub fn aim(&self, offered: Instant, offset_ms: i64) -> Instant {
        let latest = offered + self.timeout;
        let d = Duration::from_millis(offset_ms.unsigned_abs());
        if offset_ms >= 0 {
            latest + d
        } else {
            latest - d
        }
    }

    /// Records a round; fails when the deadline rule forced the other outcome.
    pub fn record(&mut self, offset_ms: i64, t: &Timing, won: bool) {
        let earliest = t.created + self.timeout;
        let latest = t.offered + self.timeout;
        let round = Round {
            offset_ms,
            won,
            sent_ms: signed_ms(t.sent, latest),
        };
        if won {
            assert!(
                t.sent < latest + self.margin,
                "the accept won though it was sent {:.1} ms after the latest possible deadline: {round:?}; earlier rounds: {:?}",
                round.sent_ms,
                self.rounds
            );
        } else {
            assert!(
                t.answered + self.margin > earliest,
                "the accept lost though its answer came {:.1} ms before the earliest possible deadline: {round:?}; earlier rounds: {:?}",
                signed_ms(earliest, t.answered),
                self.rounds
            );
        }
        self.rounds.push(round);
    }

    /// Both outcomes happened. Prints the rounds (visible with `--nocapture`).
    pub fn assert_both_outcomes(&self) {
        let wins = self.rounds.iter().filter(|r| r.won).count();
        let losses = self.rounds.len() - wins;
        let summary: Vec<String> = self
            .rounds
            .iter()
            .map(|r| {
                format!(
                    "{:+}ms(sent {:+.1}):{}",
                    r.offset_ms,
                    r.sent_ms,
                    if r.won { "won" } else { "lost" }
                )
            })
            .collect();
        eprintln!("accept vs expiry: {wins} won, {losses} lost: {summary:?}");
        assert!(
            wins > 0 && losses > 0,
            "both outcomes must happen: {wins} won, {losses} lost over {} rounds: {summary:?}",
            self.rounds.len()
        );
    }
}
