//! `triggerd dlq`: the dead letters of a namespace's JetStream bus — list them, or hand them
//! back to their sensors to run the failed trigger again.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::JetStreamArgs;
use crate::bus::jetstream::{DeadLetterEntry, DeadLetters};

/// `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Print the stored dead letters, oldest first.
    List(ListArgs),
    /// Run dead letters' triggers again (through the bus) and remove them from the list;
    /// one that fails again comes back as a new dead letter.
    Replay(ReplayArgs),
}

/// Which dead letters.
#[derive(Debug, Args)]
pub struct Selection {
    #[command(flatten)]
    bus: JetStreamArgs,
    /// The namespace whose bus holds them.
    #[arg(long, env = "TRIGGERD_NAMESPACE", value_name = "NS")]
    namespace: Option<String>,
    /// Only this sensor's dead letters.
    #[arg(long)]
    sensor: Option<String>,
}

/// How `list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One line per dead letter.
    Text,
    /// One JSON object per line, events as CloudEvents.
    Json,
}

/// Arguments of `dlq list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    selection: Selection,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Arguments of `dlq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    selection: Selection,
    /// Replay every (selected) dead letter.
    #[arg(long, conflicts_with = "seq", required_unless_present = "seq")]
    all: bool,
    /// Replay the dead letter with this sequence number (as `list` shows); repeatable.
    #[arg(long, value_name = "N")]
    seq: Vec<u64>,
}

/// Runs a `dlq` subcommand.
pub fn dlq(cmd: DlqCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cmd {
            DlqCommand::List(args) => list(args).await,
            DlqCommand::Replay(args) => replay(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Selection {
    async fn load(&self) -> anyhow::Result<(DeadLetters, Vec<DeadLetterEntry>)> {
        let namespace = self.bus.namespace_or(self.namespace.as_deref());
        let dlq = DeadLetters::connect(&self.bus.nats_url, &namespace).await?;
        let mut entries = dlq.list().await?;
        if let Some(sensor) = &self.sensor {
            entries.retain(|e| &e.record.sensor == sensor);
        }
        Ok((dlq, entries))
    }
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let (_, entries) = args.selection.load().await?;
    for e in &entries {
        match args.output {
            Output::Json => outln!("{}", e.to_json()),
            Output::Text => {
                let r = &e.record;
                let ids: Vec<String> = r
                    .events
                    .iter()
                    .map(|(dep, ev)| format!("{dep}={}", ev.id))
                    .collect();
                outln!(
                    "{seq}\t{time}\t{sensor}/{trigger}\t{ids}\t{error}",
                    seq = e.seq,
                    time = r.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    sensor = r.sensor,
                    trigger = r.trigger,
                    ids = ids.join(","),
                    error = r.error,
                );
            }
        }
    }
    if args.output == Output::Text {
        eprintln!("{} dead letter(s)", entries.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let (dlq, entries) = args.selection.load().await?;
    let missing: Vec<u64> = args
        .seq
        .iter()
        .copied()
        .filter(|s| !entries.iter().any(|e| e.seq == *s))
        .collect();
    let mut replayed = 0;
    for e in entries
        .iter()
        .filter(|e| args.all || args.seq.contains(&e.seq))
    {
        dlq.replay(e).await?;
        replayed += 1;
    }
    outln!("replayed {replayed} dead letter(s)");
    if !missing.is_empty() {
        eprintln!("error: no dead letter with sequence number(s) {missing:?}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
