//! The leader-epoch cache of one partition: for every leader epoch that wrote
//! batches, the offset of its first batch (Kafka's leader-epoch checkpoint).
//! Followers use it to find where their log diverged from a new leader's
//! ([`EpochCache::end_offset`], Kafka's OffsetsForLeaderEpoch).
//!
//! Stored in the `leader_epochs` table, (topic id, partition, epoch) -> start
//! offset, written in the transaction of the batch that opened the epoch;
//! the writer keeps the same list in memory and publishes it to readers.
//!
//! Invariant (checked with `debug_assert!`): epochs strictly increase and
//! start offsets never decrease along the list.

/// One partition's epochs and their start offsets, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<(u32, u64)>,
}

impl EpochCache {
    /// A cache of `(epoch, start offset)` entries as loaded (sorted by epoch).
    pub(crate) fn from_entries(entries: Vec<(u32, u64)>) -> Self {
        let cache = Self { entries };
        cache.check();
        cache
    }

    fn check(&self) {
        debug_assert!(self.entries.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{:?}", self.entries);
    }

    /// The entries, oldest first.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[(u32, u64)] {
        &self.entries
    }

    /// The last cached epoch, if any.
    pub(crate) fn last_epoch(&self) -> Option<u32> {
        self.entries.last().map(|e| e.0)
    }

    /// Whether a batch of `epoch` appended now opens a new epoch (true for
    /// the first batch of an empty cache, whatever its epoch).
    pub(crate) fn opens(&self, epoch: u32) -> bool {
        self.last_epoch().is_none_or(|last| epoch > last)
    }

    /// Records that `epoch` starts at `start`. Only for an epoch that
    /// [`opens`](Self::opens), at or after the previous start.
    pub(crate) fn record(&mut self, epoch: u32, start: u64) {
        debug_assert!(self.opens(epoch));
        debug_assert!(self.entries.last().is_none_or(|e| e.1 <= start));
        self.entries.push((epoch, start));
        self.check();
    }

    /// Drops the epochs starting at or after `end` (a truncation to `end`);
    /// returns the dropped epochs.
    pub(crate) fn truncate(&mut self, end: u64) -> Vec<u32> {
        let keep = self.entries.partition_point(|e| e.1 < end);
        self.entries.drain(keep..).map(|e| e.0).collect()
    }

    /// Drops the epochs that lie wholly below `log_start` (the next epoch
    /// starts at or before it), keeping the one that holds `log_start`;
    /// returns the dropped epochs. Bounds the cache as retention runs.
    pub(crate) fn prune_below(&mut self, log_start: u64) -> Vec<u32> {
        let mut drop = 0;
        while drop + 1 < self.entries.len() && self.entries[drop + 1].1 <= log_start {
            drop += 1;
        }
        self.entries.drain(..drop).map(|e| e.0).collect()
    }

    /// The largest cached epoch `e <= epoch` with its end offset (the start
    /// of the next cached epoch, or `log_end` if `e` is the last); `(epoch,
    /// log_start)` if no cached epoch is `<= epoch`.
    pub(crate) fn end_offset(&self, epoch: u32, log_start: u64, log_end: u64) -> (u32, u64) {
        let after = self.entries.partition_point(|e| e.0 <= epoch);
        if after == 0 {
            return (epoch, log_start);
        }
        let found = self.entries[after - 1].0;
        let end = self.entries.get(after).map_or(log_end, |next| next.1);
        (found, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafka() {
        let mut c = EpochCache::default();
        assert!(c.opens(0));
        c.record(1, 0);
        c.record(3, 10);
        c.record(4, 25);
        assert!(!c.opens(4) && !c.opens(2) && c.opens(5));
        assert_eq!(c.end_offset(0, 0, 40), (0, 0));
        assert_eq!(c.end_offset(1, 0, 40), (1, 10));
        assert_eq!(c.end_offset(2, 0, 40), (1, 10));
        assert_eq!(c.end_offset(3, 0, 40), (3, 25));
        assert_eq!(c.end_offset(4, 0, 40), (4, 40));
        assert_eq!(c.end_offset(9, 0, 40), (4, 40));
        assert_eq!(c.truncate(25), [4]);
        assert_eq!(c.end_offset(9, 0, 25), (3, 25));
        assert_eq!(c.prune_below(9), Vec::<u32>::new());
        assert_eq!(c.prune_below(10), [1]);
        assert_eq!(c.entries(), [(3, 10)]);
        assert_eq!(c.prune_below(100), Vec::<u32>::new(), "the last epoch stays");
        assert_eq!(c.truncate(10), [3]);
        assert_eq!(c.last_epoch(), None);
    }
}
