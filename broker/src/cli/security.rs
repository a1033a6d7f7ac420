//! `eddy user` and `eddy acl`: the users of a cluster and their rights.
//!
//! Passwords are read from `--password-file`, else from standard input
//! (one line; a terminal echoes it, so prefer a file or a pipe), and turned
//! into a SCRAM credential on this machine: they never cross the wire.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use eddy_sdk::protocol::security::{AclRule, Operation, PatternType, Permission, ResourceType, CLUSTER_RESOURCE};
use eddy_sdk::Security;

use super::common::ClientArgs;

/// Users.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user with a password (from --password-file, else one line of standard input).
    Create {
        name: String,
        /// File whose first line is the new user's password.
        #[arg(long = "new-password-file")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a user's password (from --new-password-file, else one line of standard input).
    Passwd {
        name: String,
        /// File whose first line is the new password.
        #[arg(long = "new-password-file")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a user (its rules stay until removed with `eddy acl remove`).
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the users.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// What a rule names: one of --topic, --group, --processor, --cluster.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// The principal: `User:NAME`, a bare user name, or `*` (everyone).
    #[arg(long)]
    principal: String,
    /// Operations to allow, comma-separated: read, write, create, delete, alter, describe, all.
    #[arg(long, value_delimiter = ',', conflicts_with = "deny")]
    allow: Vec<String>,
    /// Operations to deny (deny wins over allow), comma-separated.
    #[arg(long, value_delimiter = ',')]
    deny: Vec<String>,
    /// A topic name (`*` for all).
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A consumer group name.
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// A processor name.
    #[arg(long, group = "resource")]
    processor: Option<String>,
    /// The cluster itself (users, rules, topic creation).
    #[arg(long, group = "resource")]
    cluster: bool,
    /// The name is a prefix: the rule covers every name starting with it.
    #[arg(long)]
    prefix: bool,
}

impl RuleArgs {
    fn rules(&self) -> anyhow::Result<Vec<AclRule>> {
        let principal = match self.principal.as_str() {
            "*" => "*".to_string(),
            p if p.starts_with("User:") => p.to_string(),
            p => format!("User:{p}"),
        };
        let (kind, name) = match (&self.topic, &self.group, &self.processor, self.cluster) {
            (Some(t), None, None, false) => (ResourceType::Topic, t.clone()),
            (None, Some(g), None, false) => (ResourceType::Group, g.clone()),
            (None, None, Some(p), false) => (ResourceType::Processor, p.clone()),
            (None, None, None, true) => (ResourceType::Cluster, CLUSTER_RESOURCE.to_string()),
            _ => anyhow::bail!("name one resource: --topic, --group, --processor or --cluster"),
        };
        let (ops, permission) = match (self.allow.is_empty(), self.deny.is_empty()) {
            (false, true) => (&self.allow, Permission::Allow),
            (true, false) => (&self.deny, Permission::Deny),
            _ => anyhow::bail!("give the operations with --allow or --deny"),
        };
        ops.iter()
            .map(|op| {
                let operation = Operation::parse(op).with_context(|| {
                    format!("unknown operation {op:?}: use read, write, create, delete, alter, describe or all")
                })?;
                Ok(AclRule {
                    principal: principal.clone(),
                    resource_type: kind,
                    name: name.clone(),
                    pattern: if self.prefix { PatternType::Prefix } else { PatternType::Literal },
                    operation,
                    permission,
                })
            })
            .collect()
    }
}

/// Access-control rules.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Add rules, e.g. `eddy acl add --principal alice --allow read,write --topic orders`.
    Add {
        #[command(flatten)]
        rule: RuleArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove the rules that the same flags would add.
    Remove {
        #[command(flatten)]
        rule: RuleArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List rules.
    List {
        /// Only the rules of this principal (`User:NAME` or `*`).
        #[arg(long)]
        principal: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn read_new_password(file: &Option<PathBuf>) -> anyhow::Result<String> {
    let line = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        None => {
            eprintln!("new password (one line):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    anyhow::ensure!(!line.is_empty(), "the password is empty");
    Ok(line)
}

/// Runs a user subcommand.
pub async fn run_user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create { name, new_password_file, client } => {
            let password = read_new_password(&new_password_file)?;
            Security::new(client.connect().await?).create_user(&name, &password).await?;
            println!("created user {name}");
        }
        UserCommand::Passwd { name, new_password_file, client } => {
            let password = read_new_password(&new_password_file)?;
            Security::new(client.connect().await?).set_password(&name, &password).await?;
            println!("changed the password of {name}");
        }
        UserCommand::Delete { name, client } => {
            Security::new(client.connect().await?).delete_user(&name).await?;
            println!("deleted user {name}");
        }
        UserCommand::List { json, client } => {
            for user in Security::new(client.connect().await?).list_users().await? {
                if json {
                    let v = serde_json::json!({"name": user.name, "mechanism": user.mechanism, "iterations": user.iterations});
                    println!("{v}");
                } else {
                    println!("{}\t{}\titerations={}", user.name, user.mechanism, user.iterations);
                }
            }
        }
    }
    Ok(())
}

/// Runs an ACL subcommand.
pub async fn run_acl(cmd: AclCommand) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Add { rule, client } => {
            let rules = rule.rules()?;
            let n = rules.len();
            Security::new(client.connect().await?).add_acls(rules).await?;
            println!("added {n} rule(s)");
        }
        AclCommand::Remove { rule, client } => {
            let deleted = Security::new(client.connect().await?).remove_acls(rule.rules()?).await?;
            println!("removed {deleted} rule(s)");
        }
        AclCommand::List { principal, json, client } => {
            for r in Security::new(client.connect().await?).list_acls(principal.as_deref()).await? {
                if json {
                    let v = serde_json::json!({
                        "principal": r.principal,
                        "resource_type": r.resource_type.as_str(),
                        "name": r.name,
                        "pattern": r.pattern.as_str(),
                        "operation": r.operation.as_str(),
                        "permission": r.permission.as_str(),
                    });
                    println!("{v}");
                } else {
                    println!("{r}");
                }
            }
        }
    }
    Ok(())
}
