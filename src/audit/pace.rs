//! Pacing of the audit's apiserver requests: at most `qps` a second, evenly spaced, so
//! a sweep of a large cluster is a slow trickle rather than a burst of lists.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

pub struct Pacer {
    /// Zero: unpaced.
    spacing: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    /// `qps` requests a second; 0 means no limit.
    pub fn new(qps: u32) -> Self {
        let spacing = match qps {
            0 => Duration::ZERO,
            n => Duration::from_secs(1) / n,
        };
        Self {
            spacing,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next request's turn.
    pub async fn wait(&self) {
        if self.spacing.is_zero() {
            return;
        }
        // Held across the sleep: waiters queue up in order, one per slot.
        let mut next = self.next.lock().await;
        let now = Instant::now();
        if *next > now {
            tokio::time::sleep_until(*next).await;
        }
        *next = (*next).max(now) + self.spacing;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_spaced_by_the_rate() {
        let p = Pacer::new(50);
        let start = Instant::now();
        for _ in 0..5 {
            p.wait().await;
        }
        // The first goes at once, the next four at least 20 ms apart (sleeps never end
        // early, so this lower bound cannot flake).
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "{:?}",
            start.elapsed()
        );
        let unpaced = Pacer::new(0);
        let start = Instant::now();
        for _ in 0..1000 {
            unpaced.wait().await;
        }
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
