//! `agentlog cmd`: one command against the embedded log (with the
//! production clock, random ids and the WASM sandbox), or over NATS.
use std::io::Read;
use std::path::{Path, PathBuf};
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
    /// refund_budget, record_action, register_module, run_module,
    /// bind_policy.
    command: String,
    /// Its fields as a JSON object; read from stdin when absent or `-`.
    body: Option<String>,
    /// Repeating a key returns the first result and appends nothing.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Who sends it: recorded as the actor on the embedded log and on a
    /// node in open mode (a signed command's actor is its key id).
    #[arg(long, default_value = "cli")]
    actor: String,
    /// Sign it with this key file (`agentlog keygen`), as a node in signed
    /// mode requires. Not used on the embedded log, which acts as its
    /// local administrator.
    #[arg(long, env = "AGENTLOG_KEY")]
    key: Option<PathBuf>,
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
    let to = Target {
        data: &args.data.data,
        nats: args.nats.as_deref(),
        key: args.key.as_deref(),
        actor: &args.actor,
        json: args.json,
    };
    send(&to, command, args.idempotency_key).await
}

/// Where a command goes and how its answer is shown.
pub struct Target<'a> {
    pub data: &'a Path,
    pub nats: Option<&'a str>,
    /// The key file signing what goes over NATS.
    pub key: Option<&'a Path>,
    pub actor: &'a str,
    pub json: bool,
}

/// Sends `command` to the command service over NATS, or decides it on the
/// embedded log (with the WASM sandbox wired in, as `serve` has it), and
/// prints the answer.
pub async fn send(to: &Target<'_>, command: Command, idempotency_key: Option<String>) -> anyhow::Result<ExitCode> {
    let outcome = match to.nats {
        Some(url) => {
            let nats = agentlog_log::jetstream::connect(url)
                .await
                .with_context(|| format!("cannot connect to NATS at {url}"))?;
            let mut client = agentlog_commands::wire::Client::new(nats, to.actor);
            if let Some(key) = to.key {
                client = client.with_signer(crate::keys::load(key)?);
            }
            client.execute(&command, idempotency_key.as_deref()).await
        }
        None => {
            let log = Arc::new(EmbeddedLog::open(to.data, Options::default())?);
            // Decisions never go back in time, even if the system clock went
            // back since the last event was written.
            let clock = HybridClock::system();
            let last_seq = log.head().await?.last_seq;
            if let Some(last) = log.read(last_seq, 1).await?.first() {
                clock.observe(Timestamp::from_nanos(last.ts));
            }
            let sandbox = agentlog_sandbox::Sandbox::new(agentlog_sandbox::Limits::default())?;
            // Whoever holds the files holds the ledger: the embedded log's
            // user is its administrator, unchecked (docs/PROTOCOL.md).
            let handler =
                Handler::new(log, Arc::new(clock), Arc::new(RandomIdGen::new())).with_modules(Arc::new(sandbox));
            let mut request = Request::new(command, to.actor);
            request.idempotency_key = idempotency_key;
            handler.execute(request).await
        }
    };
    match outcome {
        Ok(accepted) if to.json => println!("{}", serde_json::to_string(&accepted)?),
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
            if let Some(run) = &a.run {
                println!("fuel_used {}", run.fuel_used);
                println!("output_hash {}", run.output_hash);
                if let Some(charge) = &run.charge {
                    println!("charged {} to budget {} (seq {})", charge.amount, charge.budget_id, charge.seq);
                }
                match std::str::from_utf8(&run.output) {
                    Ok(text) => println!("output {text}"),
                    Err(_) => {
                        use base64::Engine as _;
                        println!("output_base64 {}", base64::engine::general_purpose::STANDARD.encode(&run.output));
                    }
                }
            }
        }
        Err(rejection) => return Ok(print_rejection(&rejection, to.json)),
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
