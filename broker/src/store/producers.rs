//! Idempotent-producer state of one partition: for each producer id, the last
//! [`PRODUCER_BATCHES`] batches appended (base sequence, record count, base
//! offset), so that a retried batch is answered with its original offset
//! instead of being written twice, and a sequence gap is refused.
//!
//! Stored in the `producers` table, (topic id, partition, producer id) ->
//! [`encode`]d entries, written in the transaction of the appends that
//! changed them; the writer keeps the same map in memory and is the only one
//! that reads it, so the check and the append it guards are one atomic step.
//!
//! Memory bound: at most [`MAX_PRODUCERS_PER_PARTITION`] producers per
//! partition (a new one evicts the producer whose last batch is oldest), each
//! with at most [`PRODUCER_BATCHES`] entries of 16 bytes: about 1 MiB per
//! partition in the worst case (plus map overhead), and as much on disk.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer and partition.
pub const PRODUCER_BATCHES: usize = 64;
/// Producers remembered per partition.
pub const MAX_PRODUCERS_PER_PARTITION: usize = 1_000;
/// How many batches a truncation scans back through the remaining log to
/// rebuild the state of a producer whose remembered batches were all cut.
pub const PRODUCER_REBUILD_BATCHES: usize = 256;
/// Bytes of one encoded entry.
const ENTRY_BYTES: usize = 16;

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerBatch {
    pub(crate) base_sequence: u32,
    pub(crate) record_count: u32,
    pub(crate) base_offset: u64,
}

impl ProducerBatch {
    /// The sequence the producer's next batch must start with.
    fn next_sequence(&self) -> u32 {
        self.base_sequence.wrapping_add(self.record_count)
    }
}

/// How a producer's batch relates to what was appended before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Append it: the next sequence, or a producer not known here.
    Append,
    /// Already appended: answer with the original batch, write nothing.
    Duplicate(ProducerBatch),
    /// Behind the expected sequence but matching no remembered batch (an old
    /// batch no longer remembered, or a mismatched count).
    Stale { expected: u32 },
    /// Ahead of the expected sequence: a gap.
    OutOfOrder { expected: u32 },
}

/// Every producer's remembered batches in one partition.
#[derive(Debug, Clone, Default)]
pub(crate) struct Producers {
    map: HashMap<u64, VecDeque<ProducerBatch>>,
}

impl Producers {
    /// Number of producers remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The remembered batches of `producer_id`, oldest first (empty if unknown).
    pub(crate) fn batches(&self, producer_id: u64) -> impl Iterator<Item = &ProducerBatch> {
        self.map.get(&producer_id).into_iter().flatten()
    }

    /// Installs a producer's batches as loaded (oldest first, at most
    /// [`PRODUCER_BATCHES`]).
    pub(crate) fn insert_loaded(&mut self, producer_id: u64, batches: VecDeque<ProducerBatch>) {
        debug_assert!(batches.len() <= PRODUCER_BATCHES);
        if !batches.is_empty() {
            self.map.insert(producer_id, batches);
        }
    }

    /// Classifies a leader append of `record_count` records starting at
    /// `base_sequence` by `producer_id` (nonzero).
    ///
    /// "Behind" means within the half of the (wrapping) sequence space before
    /// the expected sequence; anything else that is not the expected
    /// sequence is a gap.
    pub(crate) fn check(&self, producer_id: u64, base_sequence: u32, record_count: u32) -> SequenceCheck {
        debug_assert_ne!(producer_id, 0);
        let Some(batches) = self.map.get(&producer_id) else { return SequenceCheck::Append };
        if let Some(b) = batches.iter().find(|b| b.base_sequence == base_sequence && b.record_count == record_count) {
            return SequenceCheck::Duplicate(*b);
        }
        let Some(last) = batches.back() else { return SequenceCheck::Append };
        let expected = last.next_sequence();
        if base_sequence == expected {
            SequenceCheck::Append
        } else if expected.wrapping_sub(base_sequence) <= u32::MAX / 2 {
            SequenceCheck::Stale { expected }
        } else {
            SequenceCheck::OutOfOrder { expected }
        }
    }

    /// Remembers an appended batch (forgetting the producer's oldest beyond
    /// [`PRODUCER_BATCHES`]). A new producer beyond
    /// [`MAX_PRODUCERS_PER_PARTITION`] evicts the producer whose last batch
    /// is oldest; returns the evicted producer id.
    pub(crate) fn record(&mut self, producer_id: u64, batch: ProducerBatch) -> Option<u64> {
        debug_assert_ne!(producer_id, 0);
        let mut evicted = None;
        if !self.map.contains_key(&producer_id) && self.map.len() >= MAX_PRODUCERS_PER_PARTITION {
            let oldest =
                self.map.iter().min_by_key(|(_, b)| b.back().map_or(0, |last| last.base_offset)).map(|(&id, _)| id);
            if let Some(id) = oldest {
                self.map.remove(&id);
                evicted = Some(id);
            }
        }
        let batches = self.map.entry(producer_id).or_default();
        debug_assert!(batches.back().is_none_or(|last| last.base_offset < batch.base_offset));
        if batches.len() == PRODUCER_BATCHES {
            batches.pop_front();
        }
        batches.push_back(batch);
        debug_assert!(self.map.len() <= MAX_PRODUCERS_PER_PARTITION);
        evicted
    }

    /// Forgets the batches at or after `end` (a truncation to `end`).
    /// Returns every producer that lost batches, and whether it lost all of
    /// them (its state must then be rebuilt or dropped by the caller).
    pub(crate) fn truncate(&mut self, end: u64) -> Vec<(u64, bool)> {
        let mut changed = Vec::new();
        for (&id, batches) in self.map.iter_mut() {
            let before = batches.len();
            while batches.back().is_some_and(|b| b.base_offset >= end) {
                batches.pop_back();
            }
            if batches.len() != before {
                changed.push((id, batches.is_empty()));
            }
        }
        self.map.retain(|_, b| !b.is_empty());
        changed
    }
}

/// The stored form of a producer's batches: per batch, oldest first,
/// base_sequence u32 LE, record_count u32 LE, base_offset u64 LE.
pub(crate) fn encode<'a>(batches: impl Iterator<Item = &'a ProducerBatch>) -> Vec<u8> {
    let mut out = Vec::with_capacity(PRODUCER_BATCHES * ENTRY_BYTES);
    for b in batches {
        out.extend_from_slice(&b.base_sequence.to_le_bytes());
        out.extend_from_slice(&b.record_count.to_le_bytes());
        out.extend_from_slice(&b.base_offset.to_le_bytes());
    }
    out
}

/// Decodes [`encode`]'s output; an error names what is wrong.
pub(crate) fn decode(bytes: &[u8]) -> Result<VecDeque<ProducerBatch>, String> {
    if !bytes.len().is_multiple_of(ENTRY_BYTES) || bytes.len() / ENTRY_BYTES > PRODUCER_BATCHES {
        return Err(format!("producer state of {} bytes", bytes.len()));
    }
    Ok(bytes
        .chunks_exact(ENTRY_BYTES)
        .map(|c| ProducerBatch {
            base_sequence: u32::from_le_bytes(c[0..4].try_into().expect("4 bytes")),
            record_count: u32::from_le_bytes(c[4..8].try_into().expect("4 bytes")),
            base_offset: u64::from_le_bytes(c[8..16].try_into().expect("8 bytes")),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(base_sequence: u32, record_count: u32, base_offset: u64) -> ProducerBatch {
        ProducerBatch { base_sequence, record_count, base_offset }
    }

    #[test]
    fn sequences_are_checked_against_the_last_batch() {
        let mut p = Producers::default();
        assert_eq!(p.check(7, 500, 2), SequenceCheck::Append, "unknown producer: any sequence");
        p.record(7, b(500, 2, 0));
        p.record(7, b(502, 3, 2));
        assert_eq!(p.check(7, 505, 1), SequenceCheck::Append);
        assert_eq!(p.check(7, 502, 3), SequenceCheck::Duplicate(b(502, 3, 2)));
        assert_eq!(p.check(7, 502, 2), SequenceCheck::Stale { expected: 505 });
        assert_eq!(p.check(7, 100, 1), SequenceCheck::Stale { expected: 505 });
        assert_eq!(p.check(7, 506, 1), SequenceCheck::OutOfOrder { expected: 505 });
        // Wrapping sequences.
        p.record(8, b(u32::MAX - 1, 2, 5));
        assert_eq!(p.check(8, 0, 1), SequenceCheck::Append);
        assert_eq!(p.check(8, u32::MAX - 3, 1), SequenceCheck::Stale { expected: 0 });
        assert_eq!(p.check(8, 1, 1), SequenceCheck::OutOfOrder { expected: 0 });
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = Producers::default();
        for i in 0..(PRODUCER_BATCHES as u32 + 10) {
            p.record(1, b(i, 1, u64::from(i) + 1_000));
        }
        assert_eq!(p.batches(1).count(), PRODUCER_BATCHES);
        assert_eq!(p.batches(1).next().unwrap().base_sequence, 10);
        for id in 2..=MAX_PRODUCERS_PER_PARTITION as u64 {
            assert_eq!(p.record(id, b(0, 1, id)), None);
        }
        // Producer 2's last batch (offset 2) is the oldest.
        assert_eq!(p.record(5_000, b(0, 1, 9_999)), Some(2));
        assert_eq!(p.len(), MAX_PRODUCERS_PER_PARTITION);
    }

    #[test]
    fn truncation_and_encoding() {
        let mut p = Producers::default();
        p.record(1, b(0, 2, 0));
        p.record(1, b(2, 2, 4));
        p.record(2, b(0, 1, 6));
        let mut changed = p.truncate(4);
        changed.sort();
        assert_eq!(changed, [(1, false), (2, true)]);
        assert_eq!(p.len(), 1);
        let bytes = encode(p.batches(1));
        assert_eq!(decode(&bytes).unwrap(), [b(0, 2, 0)]);
        assert!(decode(&bytes[..5]).is_err());
    }
}
