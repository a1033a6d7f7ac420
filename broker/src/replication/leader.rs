//! What a partition leader knows about its followers, as a state machine
//! with no I/O: time is passed in, decisions are read back.
//!
//! * Each follower's log end is what its last fetch asked for (a follower
//!   asks for offset N only once it holds everything below N, durably).
//! * The high watermark may advance to the lowest log end among the in-sync
//!   replicas; [`LeaderState::remote_min`] is that minimum over the followers
//!   in the ISR (the leader's own log end is the store's). A follower whose
//!   log end is not known yet (no fetch since this broker became leader)
//!   counts as being at the high watermark the leader started with, so a new
//!   leader never advances the high watermark past what its ISR has shown.
//! * A follower is caught up at time t if it fetched the leader's whole log
//!   (Kafka's rule: a fetch at or past the log end the leader had at the
//!   follower's previous fetch means it was caught up at that previous fetch).
//!   An ISR member not caught up for longer than the lag time leaves the ISR;
//!   a replica outside it whose log end reached the high watermark (and the
//!   start of this leader's epoch) rejoins.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One follower's progress as the leader sees it.
#[derive(Debug, Clone, Copy)]
struct Follower {
    /// Log end from its last fetch; None before its first fetch to this leader.
    log_end: Option<u64>,
    last_fetch: Option<Instant>,
    leader_end_at_last_fetch: u64,
    last_caught_up: Instant,
}

/// The leader's view of one partition's followers.
#[derive(Debug, Clone)]
pub struct LeaderState {
    self_id: u32,
    isr: Vec<u32>,
    followers: BTreeMap<u32, Follower>,
    start_hw: u64,
    epoch_start_offset: u64,
    lag_time: Duration,
}

impl LeaderState {
    /// A leader of `replicas` (including itself) with in-sync replicas `isr`,
    /// starting at `now` with high watermark `start_hw`; its epoch's first
    /// offset is `epoch_start_offset` (its log end when it became leader).
    pub fn new(
        self_id: u32,
        replicas: &[u32],
        isr: &[u32],
        start_hw: u64,
        epoch_start_offset: u64,
        lag_time: Duration,
        now: Instant,
    ) -> Self {
        let followers = replicas
            .iter()
            .filter(|r| **r != self_id)
            .map(|r| {
                (*r, Follower { log_end: None, last_fetch: None, leader_end_at_last_fetch: 0, last_caught_up: now })
            })
            .collect();
        Self { self_id, isr: isr.to_vec(), followers, start_hw, epoch_start_offset, lag_time }
    }

    /// Takes a new ISR (after the metadata log applied a change).
    pub fn set_isr(&mut self, isr: &[u32]) {
        self.isr = isr.to_vec();
    }

    /// Whether `replica` is one of this partition's followers.
    pub fn is_follower(&self, replica: u32) -> bool {
        self.followers.contains_key(&replica)
    }

    /// Records a fetch by `replica` asking for `fetch_offset` while the
    /// leader's log ends at `leader_end`.
    pub fn on_fetch(&mut self, replica: u32, fetch_offset: u64, leader_end: u64, now: Instant) {
        let Some(f) = self.followers.get_mut(&replica) else { return };
        if fetch_offset >= leader_end {
            f.last_caught_up = now;
        } else if let Some(previous) = f.last_fetch {
            if fetch_offset >= f.leader_end_at_last_fetch {
                f.last_caught_up = f.last_caught_up.max(previous);
            }
        }
        f.log_end = Some(fetch_offset);
        f.last_fetch = Some(now);
        f.leader_end_at_last_fetch = leader_end;
    }

    /// The lowest log end among the ISR's followers (`u64::MAX` when the
    /// leader is the only member): the high watermark may not pass it.
    pub fn remote_min(&self) -> u64 {
        self.isr
            .iter()
            .filter(|r| **r != self.self_id)
            .map(|r| self.followers.get(r).and_then(|f| f.log_end).unwrap_or(self.start_hw))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The ISR this leader should ask for now, if it differs from the
    /// current one: laggards out, caught-up replicas in. `hw` is the current
    /// high watermark.
    pub fn wanted_isr(&self, hw: u64, now: Instant) -> Option<Vec<u32>> {
        let mut wanted: Vec<u32> = Vec::with_capacity(self.followers.len() + 1);
        for r in std::iter::once(self.self_id).chain(self.followers.keys().copied()) {
            if r == self.self_id {
                wanted.push(r);
                continue;
            }
            let f = &self.followers[&r];
            let in_isr = self.isr.contains(&r);
            let keep = if in_isr {
                now.saturating_duration_since(f.last_caught_up) <= self.lag_time
            } else {
                f.log_end.is_some_and(|end| end >= hw && end >= self.epoch_start_offset)
            };
            if keep {
                wanted.push(r);
            }
        }
        let mut current = self.isr.clone();
        current.sort_unstable();
        wanted.sort_unstable();
        (wanted != current).then_some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(10);

    fn leader(now: Instant) -> LeaderState {
        LeaderState::new(1, &[1, 2, 3], &[1, 2, 3], 100, 100, LAG, now)
    }

    #[test]
    fn the_high_watermark_waits_for_every_isr_follower() {
        let t0 = Instant::now();
        let mut l = leader(t0);
        assert_eq!(l.remote_min(), 100, "unknown followers hold the start high watermark");
        l.on_fetch(2, 150, 200, t0);
        assert_eq!(l.remote_min(), 100);
        l.on_fetch(3, 180, 200, t0);
        assert_eq!(l.remote_min(), 150);
        l.on_fetch(2, 200, 200, t0);
        assert_eq!(l.remote_min(), 180);
        l.set_isr(&[1, 2]);
        assert_eq!(l.remote_min(), 200, "followers outside the ISR do not hold it back");
        l.set_isr(&[1]);
        assert_eq!(l.remote_min(), u64::MAX);
    }

    #[test]
    fn a_follower_lagging_past_the_lag_time_leaves_and_rejoins_when_caught_up() {
        let t0 = Instant::now();
        let mut l = leader(t0);
        l.on_fetch(2, 200, 200, t0);
        l.on_fetch(3, 200, 200, t0);
        assert_eq!(l.wanted_isr(200, t0), None);
        // Follower 3 stops fetching; follower 2 keeps up.
        let t1 = t0 + LAG + Duration::from_secs(1);
        l.on_fetch(2, 500, 500, t1);
        assert_eq!(l.wanted_isr(500, t1), Some(vec![1, 2]));
        l.set_isr(&[1, 2]);
        // Follower 3 comes back and catches up to the high watermark.
        l.on_fetch(3, 300, 600, t1);
        assert_eq!(l.wanted_isr(500, t1), None, "not yet at the high watermark");
        l.on_fetch(3, 600, 600, t1);
        assert_eq!(l.wanted_isr(500, t1), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_follower_that_keeps_fetching_behind_a_busy_leader_stays_in_sync() {
        let t0 = Instant::now();
        let mut l = leader(t0);
        let mut leader_end = 1000;
        let mut t = t0;
        for _ in 0..100 {
            // Each fetch reaches what the leader had at the previous fetch, never the current end.
            let fetch = leader_end;
            leader_end += 50;
            t += Duration::from_secs(1);
            l.on_fetch(2, fetch, leader_end, t);
            l.on_fetch(3, fetch, leader_end, t);
        }
        assert_eq!(l.wanted_isr(leader_end - 50, t), None);
    }
}
