//! `eddy processor`: deploy Wasm processors to the cluster, inspect and
//! delete them, read their logs, and test a module locally.
//!
//! One module per job: `deploy` (deploy and redeploy), `inspect` (list and
//! describe), `logs` (the processor's logs topic) and `test` (a module run on
//! stdin records, no broker).

mod deploy;
mod inspect;
mod logs;
mod test;

use clap::Subcommand;
use eddy_sdk::Processors;

use super::ClientArgs;

/// Processor commands.
#[derive(Debug, Subcommand)]
pub enum ProcessorCommand {
    /// Deploy a processor, or redeploy it (a new version resumes from the committed offsets).
    Deploy(deploy::DeployArgs),
    /// List the deployed processors with their status and counters.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a processor's configuration, status, counters, workers and lag.
    Describe {
        /// Processor name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a processor with its module, state, counters and committed offsets
    /// (its logs and dead-letter topics are kept).
    Delete {
        /// Processor name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the messages the processor and its module logged.
    Logs(logs::LogsArgs),
    /// Run a module locally on stdin records (one per line, or JSON lines with key/value/headers).
    Test(test::TestArgs),
}

/// Runs a processor subcommand.
pub async fn run(cmd: ProcessorCommand) -> anyhow::Result<()> {
    match cmd {
        ProcessorCommand::Deploy(args) => deploy::run(args).await,
        ProcessorCommand::List { json, client } => inspect::list(&client, json).await,
        ProcessorCommand::Describe { name, json, client } => inspect::describe(&client, &name, json).await,
        ProcessorCommand::Delete { name, client } => {
            Processors::new(client.connect().await?).delete(&name).await?;
            println!("deleted processor {name}");
            Ok(())
        }
        ProcessorCommand::Logs(args) => logs::run(args).await,
        ProcessorCommand::Test(args) => test::run(args).await,
    }
}

/// Parses one `key=value` parameter.
fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("'{s}' is not key=value"))
}

/// A time in milliseconds since the Unix epoch as RFC 3339 in UTC, with
/// milliseconds: `2024-05-01T12:34:56.789Z`.
fn rfc3339_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let day_secs = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_key_value() {
        assert_eq!(parse_param("match=a=b"), Ok(("match".into(), "a=b".into())));
        assert!(parse_param("novalue").is_err());
    }

    #[test]
    fn times_print_as_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_utc(1_714_566_896_789), "2024-05-01T12:34:56.789Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
    }
}
