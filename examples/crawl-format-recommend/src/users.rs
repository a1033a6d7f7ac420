//! User interest profiles: loading them from a JSON file (a list of
//! [`UserProfile`]s) and publishing them to topic `users` as a broadcast
//! table: every profile goes to every partition, because the recommend
//! processor keeps its state per input partition and each partition's state
//! needs every profile.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use eddy_sdk::{Acks, Admin, Client, ClientError, Producer, ProducerConfig, ProducerRecord};
use tracing::info;

use crate::records::UserProfile;

/// Largest interest weight accepted.
pub const MAX_WEIGHT: f64 = 100.0;
/// Most interests one profile may have.
pub const MAX_INTERESTS: usize = 256;

/// Why profiles could not be loaded or published.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a JSON list of profiles.
    #[error("{}: not a JSON list of user profiles: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A profile breaks a rule (see [`validate`]).
    #[error("user {user:?}: {reason}")]
    Invalid {
        /// The user id.
        user: String,
        /// The rule broken.
        reason: String,
    },
    /// A broker call failed.
    #[error("publishing user profiles: {0}")]
    Client(#[from] ClientError),
}

/// What [`publish_profiles`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishSummary {
    /// Profiles published.
    pub profiles: usize,
    /// Partitions of the topic (each got every profile).
    pub partitions: u32,
}

/// Reads and validates a JSON list of profiles.
pub fn load_profiles(path: &Path) -> Result<Vec<UserProfile>, UsersError> {
    let text = std::fs::read(path).map_err(|source| UsersError::Read { path: path.to_path_buf(), source })?;
    let profiles: Vec<UserProfile> =
        serde_json::from_slice(&text).map_err(|source| UsersError::Json { path: path.to_path_buf(), source })?;
    validate(&profiles)?;
    Ok(profiles)
}

/// Checks the rules every profile must follow: a non-empty unique user id;
/// 1 to [`MAX_INTERESTS`] interests, each a lowercase single word (letters
/// and digits) with a finite weight in (0, [`MAX_WEIGHT`]].
pub fn validate(profiles: &[UserProfile]) -> Result<(), UsersError> {
    let mut ids = HashSet::new();
    for p in profiles {
        let invalid = |reason: String| Err(UsersError::Invalid { user: p.user.clone(), reason });
        if p.user.trim().is_empty() {
            return invalid("empty user id".into());
        }
        if !ids.insert(p.user.as_str()) {
            return invalid("listed twice".into());
        }
        if p.interests.is_empty() || p.interests.len() > MAX_INTERESTS {
            return invalid(format!("{} interests; 1 to {MAX_INTERESTS} are allowed", p.interests.len()));
        }
        for (keyword, &weight) in &p.interests {
            if keyword.is_empty() || !keyword.chars().all(|c| c.is_lowercase() || c.is_numeric()) {
                return invalid(format!("interest {keyword:?} is not a lowercase single word"));
            }
            if !(weight.is_finite() && weight > 0.0 && weight <= MAX_WEIGHT) {
                return invalid(format!("interest {keyword:?} has weight {weight}; (0, {MAX_WEIGHT}] is allowed"));
            }
        }
    }
    Ok(())
}

/// Publishes every profile to every partition of `topic` (explicit
/// partitions, key = user id, `acks=all`) and waits for the
/// acknowledgements. Profiles are validated first.
pub async fn publish_profiles(
    client: &Client,
    topic: &str,
    profiles: &[UserProfile],
) -> Result<PublishSummary, UsersError> {
    validate(profiles)?;
    let partitions = Admin::new(client.clone()).describe_topic(topic).await?.partitions.len() as u32;
    let producer =
        Producer::new(client.clone(), ProducerConfig { acks: Acks::All, ..ProducerConfig::default() }).await?;
    let mut deliveries = Vec::with_capacity(profiles.len() * partitions as usize);
    for profile in profiles {
        let value = serde_json::to_vec(profile).expect("a UserProfile always serializes");
        for partition in 0..partitions {
            let record = ProducerRecord::new(topic, value.clone()).key(profile.user.clone()).partition(partition);
            deliveries.push(producer.send(record).await?);
        }
    }
    let mut first_error = None;
    for delivery in deliveries {
        if let Err(e) = delivery.await {
            first_error.get_or_insert(e);
        }
    }
    producer.close().await?;
    if let Some(e) = first_error {
        return Err(e.into());
    }
    info!(topic, profiles = profiles.len(), partitions, "published user profiles");
    Ok(PublishSummary { profiles: profiles.len(), partitions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(user: &str, interests: &[(&str, f64)]) -> UserProfile {
        UserProfile {
            user: user.into(),
            name: user.to_uppercase(),
            interests: interests.iter().map(|&(k, w)| (k.to_string(), w)).collect(),
        }
    }

    #[test]
    fn validation_rules() {
        assert!(validate(&[profile("a", &[("rust", 1.0)]), profile("b", &[("mars", 3.0)])]).is_ok());
        for bad in [
            vec![profile("", &[("rust", 1.0)])],
            vec![profile("a", &[("rust", 1.0)]), profile("a", &[("go", 1.0)])],
            vec![profile("a", &[])],
            vec![profile("a", &[("Rust", 1.0)])],
            vec![profile("a", &[("two words", 1.0)])],
            vec![profile("a", &[("rust", 0.0)])],
            vec![profile("a", &[("rust", f64::NAN)])],
        ] {
            assert!(matches!(validate(&bad), Err(UsersError::Invalid { .. })), "{bad:?}");
        }
    }

    #[test]
    fn the_bundled_profiles_load() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/users.json");
        let profiles = load_profiles(&path).unwrap();
        assert!(profiles.len() >= 18, "{} profiles", profiles.len());
        for p in &profiles {
            assert!((3..=8).contains(&p.interests.len()), "{}", p.user);
            assert!(p.interests.values().all(|w| (0.5..=3.0).contains(w)), "{}", p.user);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_partition_gets_every_profile() {
        let broker = crate::test_broker::TestBroker::start().await;
        broker.create_topic("users", 3).await;
        let profiles = vec![profile("u1", &[("rust", 1.0)]), profile("u2", &[("mars", 2.0), ("rocket", 0.5)])];
        let summary = publish_profiles(&broker.client, "users", &profiles).await.unwrap();
        assert_eq!(summary, PublishSummary { profiles: 2, partitions: 3 });
        let mut got = Vec::new();
        crate::topic_reader::read_topic(
            &broker.client,
            "users",
            crate::ReadUntil::LogEnd,
            std::time::Duration::from_secs(10),
            |r| {
                let p: UserProfile = serde_json::from_slice(&r.value).unwrap();
                assert_eq!(r.key.as_deref(), Some(p.user.as_bytes()));
                got.push((r.partition, p));
            },
        )
        .await
        .unwrap();
        for partition in 0..3 {
            let here: Vec<&UserProfile> = got.iter().filter(|(p, _)| *p == partition).map(|(_, u)| u).collect();
            assert_eq!(here, profiles.iter().collect::<Vec<_>>(), "partition {partition}");
        }
        let err = publish_profiles(&broker.client, "nope", &profiles).await.unwrap_err();
        assert!(matches!(err, UsersError::Client(_)), "{err}");
        broker.stop().await;
    }
}
