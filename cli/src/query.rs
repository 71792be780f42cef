//! `agentlog query`: the world model and reputation views, from a data
//! directory (its saved views caught up in memory with the log) or from a
//! running `agentlog serve` over NATS (`agentlog.q.<query>`).
use std::process::ExitCode;
use std::time::Duration;

use agentlog_log::wal::Store;
use agentlog_projections::query::{self, Answer, Page, Query};
use agentlog_projections::{ProjectionStore, Views, store};
use anyhow::Context;

use crate::DataArg;

#[derive(clap::Args)]
pub struct Args {
    /// tasks, task ID, ready, sessions, agents, agent ID, budgets,
    /// modules, module HASH, violations, reputation, match TASK.
    what: String,
    /// The id the query needs.
    id: Option<String>,
    #[command(flatten)]
    data: DataArg,
    /// Ask a running `agentlog serve` on this NATS server instead.
    #[arg(long, env = "AGENTLOG_NATS_URL")]
    nats: Option<String>,
    /// With --nats: first wait until the view reflects this log sequence
    /// (read-your-writes: pass a command reply's last_seq).
    #[arg(long)]
    wait_for: Option<u64>,
    /// How long to wait for --wait-for.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// For a collection: at most this many rows (default 1,000, at most
    /// 10,000).
    #[arg(long)]
    limit: Option<usize>,
    /// For a collection: the rows after this one (the `next` cursor a page
    /// ends with: an id, or a seq for violations).
    #[arg(long)]
    after: Option<String>,
    /// For tasks: only those open, claimed, completed, failed, or ready
    /// (the ready queue, best first).
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let page = Page { limit: args.limit, after: args.after.clone(), state: args.state.clone() };
    let query = Query::parse(&args.what, args.id.as_deref(), page)?;
    let answer = ask(&args.data.data, args.nats.as_deref(), &query, args.wait_for, args.timeout_ms).await?;
    if args.json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        print_table(&query, &answer);
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks `agentlog serve` over NATS when `nats` is given, else the saved
/// views of `data` caught up with its log.
pub async fn ask(
    data: &std::path::Path,
    nats: Option<&str>,
    query: &Query,
    wait_for: Option<u64>,
    timeout_ms: u64,
) -> anyhow::Result<Answer> {
    Ok(match nats {
        Some(url) => ask_nats(url, query, wait_for, timeout_ms).await?,
        None => {
            let wal = Store::open_read_only(data)?;
            let views = match ProjectionStore::open_read_only(&store::dir(data))? {
                Some(saved) => Views::load(&saved, &wal)?,
                None => Views::default(),
            };
            views.catch_up(&wal)?;
            query::answer(&views, query)?
        }
    })
}

async fn ask_nats(url: &str, query: &Query, wait_for: Option<u64>, timeout_ms: u64) -> anyhow::Result<Answer> {
    let nats =
        agentlog_log::jetstream::connect(url).await.with_context(|| format!("cannot connect to NATS at {url}"))?;
    let request = agentlog_projections::service::Request {
        wait_for,
        timeout_ms: Some(timeout_ms),
        ..agentlog_projections::service::Request::for_query(query)
    };
    let subject = format!("{}.{}", agentlog_projections::service::SUBJECT_PREFIX, query.name());
    let reply = tokio::time::timeout(
        Duration::from_millis(timeout_ms) + Duration::from_secs(5),
        nats.request(subject, serde_json::to_vec(&request)?.into()),
    )
    .await
    .context("no answer from agentlog serve's query service")?
    .context("no answer from agentlog serve's query service (is it running?)")?;
    agentlog_projections::service::parse_reply(&reply.payload).map_err(anyhow::Error::msg)
}

fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        serde_json::Value::Object(map) if map.contains_key("agent_id") => cell(&map["agent_id"]),
        other => other.to_string(),
    }
}

/// A table of the answer's rows; the columns are each row's fields, the
/// nested ones (reputation details) left to --json.
pub fn print_table(query: &Query, answer: &Answer) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{} (as of log seq {})", query.name(), answer.seq);
    let rows: Vec<&serde_json::Value> = match &answer.result {
        serde_json::Value::Array(rows) => rows.iter().collect(),
        single => vec![single],
    };
    let Some(serde_json::Value::Object(first)) = rows.first() else {
        out.push_str("  (none)\n");
        return emit(&out);
    };
    let columns: Vec<&String> =
        first.keys().filter(|k| !matches!(first[*k], serde_json::Value::Object(_)) || *k == "holder").collect();
    let cells: Vec<Vec<String>> =
        rows.iter().map(|row| columns.iter().map(|c| cell(&row[c.as_str()])).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            // A hash is shown whole: it is what the next command names.
            let cap = if c.ends_with("_hash") { 64 } else { 40 };
            cells.iter().map(|r| r[i].chars().count()).chain([c.len()]).max().unwrap_or(0).min(cap)
        })
        .collect();
    let mut line = |values: Vec<String>| {
        let parts: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{:<w$}", v.chars().take(*w).collect::<String>(), w = *w))
            .collect();
        let _ = writeln!(out, "  {}", parts.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_string()).collect());
    for row in cells {
        line(row);
    }
    if let Some(next) = &answer.next {
        let _ = writeln!(out, "  (more: --after {next})");
    }
    emit(&out);
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
