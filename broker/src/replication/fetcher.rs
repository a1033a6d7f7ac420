//! A follower's fetch loop for one partition: fetch from the leader, truncate
//! where the logs diverged, append durably, repeat. Runs until the replica
//! manager aborts it (the leader or its epoch changed).
//!
//! The loop never appends on top of a log that disagrees with the leader's:
//! every fetch carries the epoch of the follower's last batch, and the leader
//! answers with the point of divergence instead of records when its log
//! differs there (Kafka's KIP-320/595 check). The follower then truncates to
//! the lower of that point and its own end for that epoch, and asks again.

use std::sync::Arc;
use std::time::Duration;

use eddy_protocol::messages::ReplicaFetchRequest;
use eddy_protocol::ErrorCode;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{REPLICA_FETCH_MAX_BYTES, REPLICA_FETCH_WAIT_MS};
use crate::cluster::Cluster;
use crate::store::Store;

/// Pause after a failed fetch before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Starts following `topic/partition` from `leader` at `epoch`.
pub fn spawn(
    cluster: Arc<Cluster>,
    store: Arc<Store>,
    topic: String,
    partition: u32,
    leader: u32,
    epoch: u32,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(peer) = cluster.peers().get(leader) else {
            warn!(topic = %topic, partition, leader, "the leader is not a known broker; not following");
            return;
        };
        let me = cluster.broker_id();
        let timeout = Duration::from_millis(u64::from(REPLICA_FETCH_WAIT_MS)) + Duration::from_secs(5);
        loop {
            let state = match store.partition(&topic, partition) {
                Ok((_, state)) => state,
                Err(e) => {
                    debug!(topic = %topic, partition, error = %e, "partition gone; stop following");
                    return;
                }
            };
            let fetch_offset = state.offsets().log_end;
            let last_fetched_epoch = match store.last_epoch(&topic, partition) {
                Ok(e) => e,
                Err(e) => {
                    warn!(topic = %topic, partition, error = %e, "cannot read the epoch cache");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            let req = ReplicaFetchRequest {
                topic: topic.clone(),
                partition,
                replica_id: me,
                leader_epoch: epoch,
                fetch_offset,
                last_fetched_epoch,
                max_bytes: REPLICA_FETCH_MAX_BYTES,
                max_wait_ms: REPLICA_FETCH_WAIT_MS,
            };
            let resp = match peer.request(&req, timeout).await {
                Ok(resp) => resp,
                Err(e) => {
                    match e.code() {
                        Some(ErrorCode::FencedLeaderEpoch | ErrorCode::NotLeader | ErrorCode::LeaderNotAvailable) => {
                            debug!(topic = %topic, partition, error = %e, "leader not ready for this epoch yet")
                        }
                        _ => debug!(topic = %topic, partition, error = %e, "fetch from the leader failed"),
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            if let Some(diverging_epoch) = resp.diverging_epoch {
                let own_end = store.epoch_end_offset(&topic, partition, diverging_epoch).map(|(_, end)| end);
                let to = own_end.map_or(resp.diverging_end_offset, |own| own.min(resp.diverging_end_offset));
                info!(
                    topic = %topic, partition, leader, epoch = diverging_epoch, from = fetch_offset, to,
                    "log diverged from the leader's; truncating"
                );
                if let Err(e) = store.truncate(&topic, partition, to).await {
                    warn!(topic = %topic, partition, error = %e, "truncation failed");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                continue;
            }
            if !resp.records.is_empty() {
                if let Err(e) = store.append_replicated(&topic, partition, resp.records).await {
                    warn!(topic = %topic, partition, error = %e, "cannot append fetched records");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            }
            state.set_high_watermark(resp.high_watermark);
        }
    })
}
