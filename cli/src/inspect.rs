//! `agentlog tail` and `stats`: read-only looks at a data
//! directory. They open the store without its lock, so they also work on a
//! log that a running process is writing (as of the moment they open it).
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use agentlog_log::chain::to_hex;
use agentlog_log::jetstream::StreamReader;
use agentlog_log::wal::Store;
use agentlog_log::{Envelope, Timestamp};

use crate::{DataArg, progress};

#[derive(clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    data: DataArg,
    /// First sequence number to print.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Only this stream (`task/t1`, `session/<id>` …).
    #[arg(long)]
    stream: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Read the JetStream stream on this NATS server instead of --data
    /// (events as published: no chain hash, which each node's mirror adds).
    #[arg(long, env = "AGENTLOG_NATS_URL")]
    nats: Option<String>,
    /// With --nats: keep printing new events instead of stopping at the end.
    #[arg(long, requires = "nats")]
    follow: bool,
}

#[derive(clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    data: DataArg,
    #[arg(long)]
    json: bool,
}

const PAGE: usize = 4096;

pub(crate) fn line(event: &Envelope) -> String {
    let mut body = agentlog_log::json::envelope(event)["body"].clone();
    if let Some(object) = body.as_object_mut() {
        object.remove("type");
    }
    format!(
        "{:>8} {} {}@{} {} {}",
        event.seq,
        Timestamp::from_nanos(event.ts),
        event.stream,
        event.stream_version,
        event.body.as_ref().map_or("?", |b| b.type_name()),
        body
    )
}

impl TailArgs {
    pub fn nats_url(&self) -> Option<String> {
        self.nats.clone()
    }
}

/// `tail --nats`: the stream itself from `--from`, up to the last event
/// at the start (or on, with `--follow`).
pub async fn tail_nats(args: TailArgs, url: &str) -> anyhow::Result<ExitCode> {
    let reader = StreamReader::open(url, "AGENTLOG").await?;
    // Where "the end" is: the stream's last event, or the aggregate's (none:
    // nothing to print).
    let last = reader.last_seq(args.stream.as_deref()).await?;
    let mut following = reader.follow(args.stream.as_deref(), args.from).await?;
    let mut out = std::io::stdout().lock();
    let mut left = args.limit.unwrap_or(u64::MAX);
    while left > 0 && (args.follow || last >= args.from.max(1)) {
        let Some(event) = following.next().await else { break };
        let event = event?;
        if args.json {
            writeln!(out, "{}", agentlog_log::json::envelope(&event))?;
        } else {
            writeln!(out, "{}", line(&event))?;
        }
        left -= 1;
        if !args.follow && event.seq >= last {
            break;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open_read_only(&args.data.data)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut left = args.limit.unwrap_or(u64::MAX);
    let print = |event: &Envelope, out: &mut dyn Write| -> std::io::Result<()> {
        if args.json {
            writeln!(out, "{}", agentlog_log::json::envelope(event))
        } else {
            writeln!(out, "{}", line(event))
        }
    };
    match &args.stream {
        Some(stream) => {
            let mut version = 1;
            while left > 0 {
                let page = store.read_stream(stream, version, PAGE)?;
                for event in
                    page.iter().filter(|e| e.seq >= args.from).take(usize::try_from(left).unwrap_or(usize::MAX))
                {
                    print(event, &mut out)?;
                    left -= 1;
                }
                if page.len() < PAGE {
                    break;
                }
                version += PAGE as u64;
            }
        }
        None => {
            let mut seq = args.from.max(1);
            while left > 0 {
                let page = store.read(seq, PAGE.min(usize::try_from(left).unwrap_or(usize::MAX)))?;
                for event in &page {
                    print(event, &mut out)?;
                    left -= 1;
                }
                if page.len() < PAGE {
                    break;
                }
                seq += PAGE as u64;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open_read_only(&args.data.data)?;
    let head = store.head()?;
    let bar = progress::bar(head.last_seq, "counting", args.json || head.last_seq < 200_000);
    let mut types: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut streams: BTreeMap<String, u64> = BTreeMap::new();
    let (mut first_ts, mut last_ts) = (None, None);
    // A pruned WAL is counted from its prune mark; the archive holds the rest.
    let pruned_through = store.pruned_through()?.map_or(0, |p| p.seq);
    let mut seq = pruned_through + 1;
    while seq <= head.last_seq {
        let page = store.read(seq, PAGE)?;
        for event in &page {
            *types.entry(event.body.as_ref().map_or("unknown", |b| b.type_name())).or_default() += 1;
            let kind = event.stream.split_once('/').map_or(event.stream.as_str(), |(k, _)| k);
            if event.stream_version == 1 {
                *streams.entry(kind.to_owned()).or_default() += 1;
            }
            first_ts.get_or_insert(event.ts);
            last_ts = Some(event.ts);
        }
        bar.set_position(seq + page.len() as u64 - 1);
        if page.len() < PAGE {
            break;
        }
        seq += PAGE as u64;
    }
    bar.finish_and_clear();
    let ts = |t: Option<u64>| t.map(|t| Timestamp::from_nanos(t).to_string());
    if args.json {
        let out = serde_json::json!({
            "events": head.last_seq,
            "last_seq": head.last_seq,
            "pruned_through": pruned_through,
            "head_hash": to_hex(&head.hash),
            "first_ts": ts(first_ts),
            "last_ts": ts(last_ts),
            "streams": streams,
            "event_types": types,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("data        {}", args.data.data.display());
        println!("events      {}", head.last_seq);
        println!("last seq    {}", head.last_seq);
        println!("head hash   {}", to_hex(&head.hash));
        if pruned_through > 0 {
            println!("pruned      through seq {pruned_through} (the archive holds it; counts below are from there)");
        }
        if let (Some(first), Some(last)) = (ts(first_ts), ts(last_ts)) {
            println!("time        {first} .. {last}");
        }
        let streams: Vec<String> = streams.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("streams     {}", streams.join(", "));
        println!("event types");
        for (name, n) in &types {
            println!("  {name:<28} {n:>10}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
