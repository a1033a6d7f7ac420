//! The client's view of the cluster, with no I/O: broker id -> address and,
//! per topic and partition, the leader and its epoch, as of the last
//! `MetadataResponse` applied. [`super::Client`] refreshes it on demand and
//! after errors that mean it is stale (not the leader, no leader, unknown
//! topic, an unreachable leader).
//!
//! Each refresh replaces the whole view (topics deleted since disappear) and
//! bumps [`MetadataCache::version`], which lets the producer notice a change
//! with one atomic read instead of a lookup per batch.

use std::collections::HashMap;

use eddy_protocol::messages::MetadataResponse;
use eddy_protocol::ErrorCode;

use crate::error::ClientError;

/// The leader of one partition as the cache knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    /// Broker id; 0 while the partition has no leader.
    pub leader: u32,
    pub epoch: u32,
}

/// What the cache says about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The leader's id, address and epoch.
    Leader { id: u32, addr: String, epoch: u32 },
    /// The partition exists but has no leader (or one the cache has no address for).
    NoLeader,
    /// The topic is not in the cache.
    UnknownTopic,
    /// The topic has fewer partitions.
    UnknownPartition { count: u32 },
}

impl Lookup {
    /// The error a request to this partition fails with when the lookup has no leader.
    pub fn error(&self, topic: &str, partition: u32) -> Option<ClientError> {
        Some(match self {
            Lookup::Leader { .. } => return None,
            Lookup::NoLeader => ClientError::broker(
                ErrorCode::LeaderNotAvailable,
                format!("{topic}/{partition} has no leader right now"),
            ),
            Lookup::UnknownTopic => {
                ClientError::broker(ErrorCode::UnknownTopic, format!("topic {topic} does not exist"))
            }
            Lookup::UnknownPartition { count } => ClientError::broker(
                ErrorCode::UnknownPartition,
                format!("partition {partition} does not exist in topic {topic} ({count} partitions)"),
            ),
        })
    }
}

/// Brokers and partition leaders. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct MetadataCache {
    brokers: HashMap<u32, String>,
    topics: HashMap<String, Vec<Route>>,
    controller: u32,
    version: u64,
}

impl MetadataCache {
    /// Replaces the view with `resp`, a response to a request for every topic
    /// sent to the broker at `answered_by`.
    pub fn apply(&mut self, resp: &MetadataResponse, answered_by: &str) {
        self.brokers = resp.brokers.iter().map(|b| (b.id, reachable_addr(&b.addr, answered_by))).collect();
        self.topics = resp
            .topics
            .iter()
            .map(|t| {
                let mut routes = vec![Route { leader: 0, epoch: 0 }; t.partitions.len()];
                for p in &t.partitions {
                    if let Some(r) = routes.get_mut(p.partition as usize) {
                        *r = Route { leader: p.leader, epoch: p.leader_epoch };
                    }
                }
                (t.name.clone(), routes)
            })
            .collect();
        self.controller = resp.controller;
        self.version += 1;
    }

    /// Bumped by every [`MetadataCache::apply`].
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn lookup(&self, topic: &str, partition: u32) -> Lookup {
        let Some(routes) = self.topics.get(topic) else {
            return Lookup::UnknownTopic;
        };
        let Some(route) = routes.get(partition as usize) else {
            return Lookup::UnknownPartition { count: routes.len() as u32 };
        };
        match (route.leader, self.brokers.get(&route.leader)) {
            (0, _) | (_, None) => Lookup::NoLeader,
            (id, Some(addr)) => Lookup::Leader { id, addr: addr.clone(), epoch: route.epoch },
        }
    }

    /// The leader id of a partition (0: none or unknown), without allocating.
    pub fn leader_id(&self, topic: &str, partition: u32) -> u32 {
        self.topics.get(topic).and_then(|r| r.get(partition as usize)).map_or(0, |r| r.leader)
    }

    /// Partition count of a cached topic.
    pub fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics.get(topic).map(|r| r.len() as u32)
    }

    pub fn broker_addr(&self, id: u32) -> Option<&str> {
        self.brokers.get(&id).map(String::as_str)
    }

    /// Every known broker address, sorted by broker id.
    pub fn broker_addrs(&self) -> Vec<String> {
        let mut ids: Vec<(&u32, &String)> = self.brokers.iter().collect();
        ids.sort();
        ids.into_iter().map(|(_, a)| a.clone()).collect()
    }
}

/// The address to dial for a broker that advertises `advertised`: as is,
/// except that an unspecified host (`0.0.0.0`, `[::]`: a broker listening on
/// every interface without an advertised address) is replaced by the host of
/// the address that answered the metadata request.
pub(crate) fn reachable_addr(advertised: &str, answered_by: &str) -> String {
    let Some((host, port)) = advertised.rsplit_once(':') else {
        return advertised.to_string();
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let unspecified = bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    match (unspecified, answered_by.rsplit_once(':')) {
        (true, Some((answering_host, _))) => format!("{answering_host}:{port}"),
        _ => advertised.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_protocol::messages::{BrokerInfo, PartitionMetadata, TopicMetadata};

    fn response(leaders: &[u32]) -> MetadataResponse {
        MetadataResponse {
            brokers: vec![BrokerInfo { id: 1, addr: "h1:1".into() }, BrokerInfo { id: 2, addr: "0.0.0.0:2".into() }],
            controller: 1,
            topics: vec![TopicMetadata {
                name: "t".into(),
                replication_factor: 2,
                min_insync_replicas: 1,
                retention_ms: None,
                retention_bytes: None,
                partitions: leaders
                    .iter()
                    .enumerate()
                    .map(|(i, &leader)| PartitionMetadata {
                        partition: i as u32,
                        leader,
                        leader_epoch: 7,
                        replicas: vec![1, 2],
                        isr: vec![1, 2],
                        log_start: 0,
                        log_end: 0,
                        size_bytes: 0,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn lookups_name_leaders_and_explain_the_rest() {
        let mut cache = MetadataCache::default();
        assert_eq!(cache.lookup("t", 0), Lookup::UnknownTopic);
        cache.apply(&response(&[1, 2, 0, 9]), "bootstrap:5");
        assert_eq!(cache.version(), 1);
        assert_eq!(cache.lookup("t", 0), Lookup::Leader { id: 1, addr: "h1:1".into(), epoch: 7 });
        assert_eq!(cache.lookup("t", 1), Lookup::Leader { id: 2, addr: "bootstrap:2".into(), epoch: 7 });
        assert_eq!(cache.lookup("t", 2), Lookup::NoLeader, "leader 0: none");
        assert_eq!(cache.lookup("t", 3), Lookup::NoLeader, "a leader without an address is no leader");
        assert_eq!(cache.lookup("t", 4), Lookup::UnknownPartition { count: 4 });
        let code = |l: Lookup| l.error("t", 0).and_then(|e| e.code());
        assert_eq!(code(cache.lookup("t", 2)), Some(ErrorCode::LeaderNotAvailable));
        assert_eq!(code(cache.lookup("x", 0)), Some(ErrorCode::UnknownTopic));
        assert_eq!(code(cache.lookup("t", 4)), Some(ErrorCode::UnknownPartition));
        assert_eq!(cache.leader_id("t", 1), 2);
        assert_eq!(cache.partition_count("t"), Some(4));
        assert_eq!(cache.broker_addrs(), vec!["h1:1".to_string(), "bootstrap:2".to_string()]);
        // A refresh replaces everything.
        let mut empty = response(&[]);
        empty.topics.clear();
        cache.apply(&empty, "h1:1");
        assert_eq!(cache.lookup("t", 0), Lookup::UnknownTopic);
        assert_eq!(cache.version(), 2);
    }

    #[test]
    fn unspecified_hosts_take_the_answering_host() {
        assert_eq!(reachable_addr("0.0.0.0:9092", "10.1.2.3:9000"), "10.1.2.3:9092");
        assert_eq!(reachable_addr("[::]:9092", "[::1]:9000"), "[::1]:9092");
        assert_eq!(reachable_addr("b1.example:9092", "10.1.2.3:9000"), "b1.example:9092");
        assert_eq!(reachable_addr("127.0.0.1:1", "x:2"), "127.0.0.1:1");
    }
}
