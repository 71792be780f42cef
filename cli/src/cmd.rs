//! `agentlog cmd`: one command against the embedded log, with the
//! production clock and random ids.
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use agentlog_commands::{Command, Handler, Request};
use agentlog_log::{EmbeddedLog, HybridClock, Log, Options, RandomIdGen, Timestamp};
use anyhow::Context;

use crate::DataArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataArg,
    /// The command: open_session, heartbeat, close_session, expire_session,
    /// register_agent, create_task, claim_task, release_task, complete_task,
    /// fail_task, expire_lease, allocate_budget, debit_budget,
    /// refund_budget, record_action.
    command: String,
    /// Its fields as a JSON object; read from stdin when absent or `-`.
    body: Option<String>,
    /// Repeating a key returns the first result and appends nothing.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Who sends it.
    #[arg(long, default_value = "cli")]
    actor: String,
    /// Print the result or the rejection as JSON.
    #[arg(long)]
    json: bool,
    /// Send it to the command service of `agentlog serve` over this NATS
    /// server instead of the embedded log in --data.
    #[arg(long, env = "AGENTLOG_NATS_URL")]
    nats: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let body = match args.body.as_deref() {
        None | Some("-") => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("cannot read the command body from stdin")?;
            text
        }
        Some(text) => text.to_owned(),
    };
    let fields: serde_json::Value = serde_json::from_str(&body).with_context(|| {
        format!("the body of {} is not valid JSON; pass an object such as '{{\"task_id\": \"t1\"}}'", args.command)
    })?;
    let command = match Command::from_json(&args.command, fields) {
        Ok(command) => command,
        Err(rejection) => return Ok(print_rejection(&rejection, args.json)),
    };
    let outcome = match &args.nats {
        Some(url) => {
            let nats = agentlog_log::jetstream::connect(url)
                .await
                .with_context(|| format!("cannot connect to NATS at {url}"))?;
            let client = agentlog_commands::wire::Client::new(nats, args.actor.clone());
            client.execute(&command, args.idempotency_key.as_deref()).await
        }
        None => {
            let log = Arc::new(EmbeddedLog::open(&args.data.data, Options::default())?);
            // Decisions never go back in time, even if the system clock went
            // back since the last event was written.
            let clock = HybridClock::system();
            let last_seq = log.head().await?.last_seq;
            if let Some(last) = log.read(last_seq, 1).await?.first() {
                clock.observe(Timestamp::from_nanos(last.ts));
            }
            let handler = Handler::new(log, Arc::new(clock), Arc::new(RandomIdGen::new()));
            let mut request = Request::new(command, args.actor);
            request.idempotency_key = args.idempotency_key;
            handler.execute(request).await
        }
    };
    match outcome {
        Ok(accepted) if args.json => println!("{}", serde_json::to_string(&accepted)?),
        Ok(a) => {
            let duplicate = if a.duplicate { " (duplicate: first result)" } else { "" };
            println!(
                "accepted{duplicate} {}: {} version {}, seq {}..{} ({})",
                a.command,
                a.stream,
                a.stream_version,
                a.first_seq,
                a.last_seq,
                a.events.join(", ")
            );
            if let Some(session) = &a.session_id {
                println!("session_id {session}");
            }
        }
        Err(rejection) => return Ok(print_rejection(&rejection, args.json)),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_rejection(rejection: &agentlog_commands::Rejection, json: bool) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"rejected": true, "kind": rejection.kind.as_str(), "code": rejection.code.as_str(), "message": rejection.message})
        );
    } else {
        println!("rejected ({}/{}): {}", rejection.kind, rejection.code, rejection.message);
    }
    ExitCode::FAILURE
}
