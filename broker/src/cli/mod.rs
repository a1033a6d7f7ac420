//! Command-line definitions (clap) and dispatch to one module per command family.

mod bench;
mod bench_failover;
mod bench_processor;
mod ca;
mod common;
mod consume;
mod group;
mod log;
mod processor;
mod produce;
mod runtime;
mod security;
mod serve;
mod topic;

use clap::{Parser, Subcommand};

pub use common::ClientArgs;

/// Eddy: a WebAssembly-extensible stream-processing platform.
#[derive(Debug, Parser)]
#[command(name = "eddy", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker.
    Broker(serve::BrokerArgs),
    /// Run a single-node broker with development defaults.
    Dev(serve::DevArgs),
    /// Create the certificate authority of a cluster; issue broker and client certificates.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce one record per line of standard input.
    Produce(produce::ProduceArgs),
    /// Print records of a topic (alone, or as a member of a consumer group).
    Consume(consume::ConsumeArgs),
    /// List and describe consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Deploy, inspect, delete and test Wasm processors.
    #[command(subcommand)]
    Processor(processor::ProcessorCommand),
    /// Run a standalone processor worker that joins the processors' groups on a broker.
    Runtime(runtime::RuntimeArgs),
    /// Create, list and delete users, and change their passwords.
    #[command(subcommand)]
    User(security::UserCommand),
    /// Add, remove and list access-control rules.
    #[command(subcommand)]
    Acl(security::AclCommand),
    /// Inspect a stopped broker's partition logs.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

impl Cli {
    /// Log filter when EDDY_LOG is unset: servers log their progress, client
    /// commands only warnings.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Broker(_) | Command::Dev(_) | Command::Runtime(_) => "info",
            _ => "warn",
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Broker(args) => serve::broker(args).await,
        Command::Dev(args) => serve::dev(args).await,
        Command::Ca(cmd) => ca::run(cmd),
        Command::Topic(cmd) => topic::run(cmd).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(args).await,
        Command::Group(cmd) => group::run(cmd).await,
        Command::User(cmd) => security::run_user(cmd).await,
        Command::Acl(cmd) => security::run_acl(cmd).await,
        Command::Processor(cmd) => processor::run(cmd).await,
        Command::Runtime(args) => runtime::run(args).await,
        Command::Log(cmd) => log::run(cmd).await,
        Command::Bench(cmd) => bench::run(cmd).await,
    }
}
