//! `eddy group list | describe`: consumer groups, their members and lag.

use std::collections::BTreeMap;

use clap::Subcommand;
use eddy_sdk::protocol::messages::{GroupDescription, GroupPartition, GroupSummary, TopicPartitions};
use eddy_sdk::Admin;
use serde_json::json;

use super::ClientArgs;

/// Consumer group inspection.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups that have members or committed offsets.
    List {
        /// Only groups whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a group's state, generation, members and per-partition committed offset, log end and lag.
    Describe {
        /// Group id.
        group: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Records between the committed offset and the log end (none without a commit).
fn lag(p: &GroupPartition) -> Option<u64> {
    p.committed.map(|c| p.log_end.saturating_sub(c))
}

fn assignment_json(assignment: &[TopicPartitions]) -> serde_json::Value {
    assignment.iter().map(|tp| json!({"topic": tp.topic, "partitions": tp.partitions})).collect()
}

fn summary_json(g: &GroupSummary) -> serde_json::Value {
    json!({"group": g.group, "state": g.state, "generation": g.generation, "members": g.member_count})
}

fn description_json(g: &GroupDescription) -> serde_json::Value {
    json!({
        "group": g.group,
        "state": g.state,
        "generation": g.generation,
        "strategy": g.strategy.name(),
        "members": g.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "client_id": m.client_id,
            "host": m.host,
            "assignment": assignment_json(&m.assignment),
        })).collect::<Vec<_>>(),
        "partitions": g.partitions.iter().map(|p| json!({
            "topic": p.topic,
            "partition": p.partition,
            "owner": p.owner,
            "committed": p.committed,
            "log_end": p.log_end,
            "lag": lag(p),
        })).collect::<Vec<_>>(),
        "total_lag": g.partitions.iter().filter_map(lag).sum::<u64>(),
    })
}

/// `topic:0,1,2 other:3`
fn assignment_text(assignment: &[TopicPartitions]) -> String {
    if assignment.is_empty() {
        return "-".to_string();
    }
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for tp in assignment {
        by_topic.entry(&tp.topic).or_default().extend(&tp.partitions);
    }
    by_topic
        .into_iter()
        .map(|(t, mut ps)| {
            ps.sort_unstable();
            format!("{t}:{}", ps.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_description(g: &GroupDescription) {
    println!(
        "group {}  state {}  generation {}  strategy {}  members {}",
        g.group,
        g.state,
        g.generation,
        g.strategy.name(),
        g.members.len()
    );
    if !g.members.is_empty() {
        println!();
        println!("{:<40} {:<24} {:<22} partitions", "member", "client", "host");
        for m in &g.members {
            println!("{:<40} {:<24} {:<22} {}", m.member_id, m.client_id, m.host, assignment_text(&m.assignment));
        }
    }
    if !g.partitions.is_empty() {
        println!();
        println!("{:<24} {:>9} {:>12} {:>12} {:>10}  owner", "topic", "partition", "committed", "log end", "lag");
        let dash = || "-".to_string();
        for p in &g.partitions {
            println!(
                "{:<24} {:>9} {:>12} {:>12} {:>10}  {}",
                p.topic,
                p.partition,
                p.committed.map_or_else(dash, |c| c.to_string()),
                p.log_end,
                lag(p).map_or_else(dash, |l| l.to_string()),
                p.owner.as_deref().unwrap_or("-"),
            );
        }
    }
}

/// Runs a group subcommand.
pub async fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List { prefix, json, client } => {
            let groups = Admin::new(client.connect().await?).list_groups(prefix.as_deref()).await?;
            if json {
                println!("{}", serde_json::Value::Array(groups.iter().map(summary_json).collect()));
            } else {
                for g in &groups {
                    println!("{}\tstate={}\tgeneration={}\tmembers={}", g.group, g.state, g.generation, g.member_count);
                }
            }
        }
        GroupCommand::Describe { group, json, client } => {
            let g = Admin::new(client.connect().await?).describe_group(&group).await?;
            if json {
                println!("{}", description_json(&g));
            } else {
                print_description(&g);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use eddy_sdk::protocol::messages::{AssignmentStrategy, MemberDescription};

    use super::*;

    fn tp(topic: &str, partitions: &[u32]) -> TopicPartitions {
        TopicPartitions { topic: topic.into(), partitions: partitions.to_vec() }
    }

    #[test]
    fn lag_is_log_end_minus_committed() {
        let p = GroupPartition { topic: "t".into(), partition: 0, owner: None, committed: Some(7), log_end: 10 };
        assert_eq!(lag(&p), Some(3));
        assert_eq!(lag(&GroupPartition { committed: None, ..p.clone() }), None);
        assert_eq!(lag(&GroupPartition { committed: Some(12), ..p }), Some(0));
    }

    #[test]
    fn assignments_print_compactly() {
        assert_eq!(assignment_text(&[]), "-");
        assert_eq!(assignment_text(&[tp("b", &[3, 1]), tp("a", &[0])]), "a:0 b:1,3");
    }

    #[test]
    fn description_json_has_members_partitions_and_lag() {
        let g = GroupDescription {
            group: "g".into(),
            state: "Stable".into(),
            generation: 2,
            strategy: AssignmentStrategy::Sticky,
            members: vec![MemberDescription {
                member_id: "m1".into(),
                client_id: "c".into(),
                host: "127.0.0.1:1".into(),
                assignment: vec![tp("t", &[0])],
            }],
            partitions: vec![GroupPartition {
                topic: "t".into(),
                partition: 0,
                owner: Some("m1".into()),
                committed: Some(4),
                log_end: 9,
            }],
        };
        let v = description_json(&g);
        assert_eq!(v["strategy"], "sticky");
        assert_eq!(v["members"][0]["assignment"][0]["partitions"][0], 0);
        assert_eq!(v["partitions"][0]["lag"], 5);
        assert_eq!(v["total_lag"], 5);
    }
}
