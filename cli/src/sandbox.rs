//! `agentlog sandbox`: WASM modules — register one (a binary or WAT text
//! file), run an action module for an agent, bind a policy module to a
//! command type (or unbind it), list the registered modules and inspect
//! one — on the embedded log or through `agentlog serve` over NATS.
//! Register, run and bind are the `register_module`, `run_module` and
//! `bind_policy` commands (`agentlog cmd` sends the same); list and inspect
//! ask the world view (`agentlog query modules`, `module HASH`).
use std::path::PathBuf;
use std::process::ExitCode;

use agentlog_commands::module::{ModuleKind, RegisterModule, RunModule};
use agentlog_commands::policy::BindPolicy;
use agentlog_projections::query::{Page, Query};
use anyhow::Context;

use crate::DataArg;
use crate::cmd::{Target, send};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

/// Where the commands go.
#[derive(clap::Args)]
struct To {
    #[command(flatten)]
    data: DataArg,
    /// Send to `agentlog serve` on this NATS server instead of the
    /// embedded log in --data.
    #[arg(long, env = "AGENTLOG_NATS_URL")]
    nats: Option<String>,
    /// Sign what goes over NATS with this key file (`agentlog keygen`);
    /// not used on the embedded log.
    #[arg(long, env = "AGENTLOG_KEY")]
    key: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Register a module: a WASM binary, or WAT text. Prints its hash.
    Register {
        /// The module file (.wasm or .wat).
        file: PathBuf,
        /// What to call it (an id: letters, digits, '_', '-', ':', '@').
        #[arg(long)]
        name: String,
        /// action (run by agents) or policy.
        #[arg(long, default_value = "action")]
        kind: String,
        /// Who sends it.
        #[arg(long, default_value = "cli")]
        actor: String,
        #[command(flatten)]
        to: To,
    },
    /// Run a registered action module for an agent, in its live session.
    Run {
        /// The module's hash (`sandbox list`).
        module_hash: String,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        session: String,
        /// The task the run is for, if any.
        #[arg(long, default_value = "")]
        task: String,
        /// The input, from this file (`-`: stdin).
        #[arg(long, conflicts_with = "input_text")]
        input: Option<PathBuf>,
        /// The input, as this text.
        #[arg(long)]
        input_text: Option<String>,
        /// The most fuel the run may use.
        #[arg(long, default_value_t = 10_000_000)]
        fuel: u64,
        /// Charge the fuel used to this budget (one unit per 1,000 fuel,
        /// rounded up); the run is refused unless the budget holds what
        /// the whole --fuel would cost.
        #[arg(long, default_value = "")]
        budget: String,
        /// Repeating a key returns the first result and runs nothing.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long, default_value = "cli")]
        actor: String,
        #[command(flatten)]
        to: To,
    },
    /// Bind a registered policy module to a command type: every such
    /// command is put to it first.
    Bind {
        /// The command type (`debit_budget`, `claim_task`, …).
        command: String,
        module_hash: String,
        #[arg(long, default_value = "cli")]
        actor: String,
        #[command(flatten)]
        to: To,
    },
    /// Take the policy off a command type.
    Unbind {
        command: String,
        #[arg(long, default_value = "cli")]
        actor: String,
        #[command(flatten)]
        to: To,
    },
    /// The registered modules, with their runs and what each policy is
    /// bound to.
    List {
        #[arg(long)]
        limit: Option<usize>,
        /// The rows after this module hash (the cursor a page ends with).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        to: To,
    },
    /// One module: its name, kind, size, registration and runs.
    Inspect {
        module_hash: String,
        #[command(flatten)]
        to: To,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Register { file, name, kind, actor, to } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read the module {}", file.display()))?;
            let module = agentlog_sandbox::module_from_file(&bytes)
                .with_context(|| format!("{} is not a module", file.display()))?;
            let kind = match kind.as_str() {
                "action" => ModuleKind::Action,
                "policy" => ModuleKind::Policy,
                other => anyhow::bail!("--kind {other:?}: a module is an `action` or a `policy`"),
            };
            if !to.json {
                println!("module_hash {}", agentlog_commands::module::content_hash(&module));
            }
            let target = Target {
                data: &to.data.data,
                nats: to.nats.as_deref(),
                key: to.key.as_deref(),
                actor: &actor,
                json: to.json,
            };
            send(&target, RegisterModule { name, kind, module }.into(), None).await
        }
        Sub::Run { module_hash, agent, session, task, input, input_text, fuel, budget, idempotency_key, actor, to } => {
            let input = match (input, input_text) {
                (Some(path), _) if path.as_os_str() == "-" => {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).context("cannot read stdin")?;
                    bytes
                }
                (Some(path), _) => {
                    std::fs::read(&path).with_context(|| format!("cannot read the input {}", path.display()))?
                }
                (None, Some(text)) => text.into_bytes(),
                (None, None) => Vec::new(),
            };
            let command = RunModule {
                module_hash,
                agent_id: agent,
                session_id: session,
                task_id: task,
                input,
                fuel,
                budget_id: budget,
            }
            .into();
            let target = Target {
                data: &to.data.data,
                nats: to.nats.as_deref(),
                key: to.key.as_deref(),
                actor: &actor,
                json: to.json,
            };
            send(&target, command, idempotency_key).await
        }
        Sub::Bind { command, module_hash, actor, to } => {
            let target = Target {
                data: &to.data.data,
                nats: to.nats.as_deref(),
                key: to.key.as_deref(),
                actor: &actor,
                json: to.json,
            };
            send(&target, BindPolicy { command, module_hash }.into(), None).await
        }
        Sub::Unbind { command, actor, to } => {
            let target = Target {
                data: &to.data.data,
                nats: to.nats.as_deref(),
                key: to.key.as_deref(),
                actor: &actor,
                json: to.json,
            };
            send(&target, BindPolicy { command, module_hash: String::new() }.into(), None).await
        }
        Sub::List { limit, after, to } => show(&to, &Query::Modules { page: Page { limit, after, state: None } }).await,
        Sub::Inspect { module_hash, to } => show(&to, &Query::Module { id: module_hash }).await,
    }
}

async fn show(to: &To, query: &Query) -> anyhow::Result<ExitCode> {
    let answer = crate::query::ask(&to.data.data, to.nats.as_deref(), query, None, 5000).await?;
    if to.json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        crate::query::print_table(query, &answer);
    }
    Ok(ExitCode::SUCCESS)
}
