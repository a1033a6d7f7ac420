//! `eddy topic create | list | describe | alter | delete`.

use clap::{Args, Subcommand};
use eddy_sdk::protocol::messages::TopicMetadata;
use eddy_sdk::{Admin, NewTopic};
use serde_json::json;

use super::ClientArgs;

/// Topic administration.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name ([A-Za-z0-9._-], at most 249 bytes).
        name: String,
        /// Number of partitions.
        #[arg(short, long, default_value_t = 1)]
        partitions: u32,
        /// Replication factor (at most the number of live brokers).
        #[arg(short, long, default_value_t = 1)]
        replication: u16,
        /// acks=all produces fail with NOT_ENOUGH_REPLICAS while fewer replicas
        /// are in sync (default 1, at most the replication factor).
        #[arg(long)]
        min_insync_replicas: Option<u16>,
        /// Delete records older than this many ms.
        #[arg(long)]
        retention_ms: Option<u64>,
        /// Delete the oldest records while a partition holds more bytes than this.
        #[arg(long)]
        retention_bytes: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List topics.
    List(ListArgs),
    /// Show a topic's configuration and partitions.
    Describe {
        /// Topic name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Grow a topic's partition count.
    Alter {
        /// Topic name.
        name: String,
        /// New partition count (larger than the current one).
        #[arg(short, long)]
        partitions: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a topic and all its records.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Options of `eddy topic list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn topic_json(t: &TopicMetadata) -> serde_json::Value {
    json!({
        "name": t.name,
        "replication_factor": t.replication_factor,
        "min_insync_replicas": t.min_insync_replicas,
        "retention_ms": t.retention_ms,
        "retention_bytes": t.retention_bytes,
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": p.leader,
            "leader_epoch": p.leader_epoch,
            "replicas": p.replicas,
            "isr": p.isr,
            "log_start": p.log_start,
            "log_end": p.log_end,
            "size_bytes": p.size_bytes,
        })).collect::<Vec<_>>(),
    })
}

fn print_topic(t: &TopicMetadata) {
    let retention = |v: Option<u64>, unit: &str| v.map_or("unlimited".to_string(), |v| format!("{v} {unit}"));
    println!(
        "topic {}  partitions {}  replication {}  min-insync {}  retention {} / {}",
        t.name,
        t.partitions.len(),
        t.replication_factor,
        t.min_insync_replicas,
        retention(t.retention_ms, "ms"),
        retention(t.retention_bytes, "bytes")
    );
    let list = |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    println!(
        "{:>9} {:>7} {:>6} {:>10} {:>10} {:>12} {:>12} {:>14}",
        "partition", "leader", "epoch", "replicas", "isr", "log start", "log end", "bytes"
    );
    for p in &t.partitions {
        let leader = if p.leader == 0 { "none".to_string() } else { p.leader.to_string() };
        println!(
            "{:>9} {:>7} {:>6} {:>10} {:>10} {:>12} {:>12} {:>14}",
            p.partition,
            leader,
            p.leader_epoch,
            list(&p.replicas),
            list(&p.isr),
            p.log_start,
            p.log_end,
            p.size_bytes
        );
    }
}

/// Runs a topic subcommand.
pub async fn run(cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication,
            min_insync_replicas,
            retention_ms,
            retention_bytes,
            client,
        } => {
            let admin = Admin::new(client.connect().await?);
            let mut topic = NewTopic::new(name, partitions)
                .replication_factor(replication)
                .min_insync_replicas(min_insync_replicas.unwrap_or(0));
            topic.retention_ms = retention_ms;
            topic.retention_bytes = retention_bytes;
            let t = admin.create_topic(topic).await?;
            println!("created topic {} with {} partitions", t.name, t.partitions.len());
        }
        TopicCommand::List(ListArgs { json, client }) => {
            let topics = Admin::new(client.connect().await?).list_topics().await?;
            if json {
                println!("{}", serde_json::Value::Array(topics.iter().map(topic_json).collect()));
            } else {
                for t in &topics {
                    let records: u64 = t.partitions.iter().map(|p| p.log_end - p.log_start).sum();
                    println!("{}\tpartitions={}\trecords={records}", t.name, t.partitions.len());
                }
            }
        }
        TopicCommand::Describe { name, json, client } => {
            let t = Admin::new(client.connect().await?).describe_topic(&name).await?;
            if json {
                println!("{}", topic_json(&t));
            } else {
                print_topic(&t);
            }
        }
        TopicCommand::Alter { name, partitions, client } => {
            let t = Admin::new(client.connect().await?).create_partitions(&name, partitions).await?;
            println!("topic {} now has {} partitions", t.name, t.partitions.len());
        }
        TopicCommand::Delete { name, client } => {
            Admin::new(client.connect().await?).delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}
