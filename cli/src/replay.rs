//! `agentlog replay events|state`: incident replay over everything kept
//! (the archive, then the WAL's tail), read-only.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use agentlog_log::EventSource;
use agentlog_log::Timestamp;
use agentlog_replay::filter::{parse_id, parse_type};
use agentlog_replay::{Entity, Filter, History, Invariant, Point};

use crate::{inspect, progress};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

/// Where the history is read from. Nothing there is ever written.
#[derive(clap::Args)]
struct SourceArgs {
    /// The data directory (the embedded log, or a node's mirror): its WAL.
    #[arg(long, env = "AGENTLOG_DATA")]
    data: Option<PathBuf>,
    /// The archive's root; `<data>/archive` when absent and it exists. With
    /// no --data, the archive alone.
    #[arg(long, env = "AGENTLOG_ARCHIVE")]
    archive: Option<PathBuf>,
    /// Read the WAL alone, even when `<data>/archive` exists.
    #[arg(long, conflicts_with = "archive")]
    no_archive: bool,
}

impl SourceArgs {
    fn archive(&self) -> Option<PathBuf> {
        match (&self.archive, &self.data) {
            (Some(archive), _) => Some(archive.clone()),
            (None, Some(data)) if !self.no_archive && data.join("archive").is_dir() => Some(data.join("archive")),
            _ => None,
        }
    }

    fn open(&self) -> anyhow::Result<History> {
        Ok(History::open(self.data.as_deref(), self.archive().as_deref())?)
    }
}

/// Where snapshots taken while folding are kept, so that the next jump
/// to any point folds at most `--snapshot-every` events.
#[derive(clap::Args)]
struct CacheArgs {
    /// The snapshot cache; `$HOME/.cache/agentlog/replay` when absent.
    #[arg(long, env = "AGENTLOG_REPLAY_CACHE")]
    cache: Option<PathBuf>,
    /// Fold from seq 1 in memory, keeping no snapshot.
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
    /// Events between two snapshots.
    #[arg(long, default_value_t = agentlog_replay::snapshots::DEFAULT_INTERVAL)]
    snapshot_every: u64,
}

impl CacheArgs {
    fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache.clone().or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/agentlog/replay")))
    }
}

/// Which events: every filter narrows.
#[derive(clap::Args)]
struct FilterArgs {
    /// Events on task/ID's stream, and events whose body names the task.
    #[arg(long)]
    task: Option<String>,
    /// Events on agent/ID's stream, and events whose body names the agent.
    #[arg(long)]
    agent: Option<String>,
    /// Events on the session's stream, and events in or naming it.
    #[arg(long)]
    session: Option<String>,
    /// Events on budget/ID's stream.
    #[arg(long)]
    budget: Option<String>,
    /// Events with this correlation id (a UUID, as `tail --json` prints it).
    #[arg(long)]
    correlation: Option<String>,
    /// This event (its id) and every event it caused, directly or not.
    #[arg(long)]
    caused_by: Option<String>,
    /// Events of this type, for example task_claimed.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Events this actor sent.
    #[arg(long)]
    actor: Option<String>,
    /// From this seq on.
    #[arg(long)]
    from_seq: Option<u64>,
    /// Up to this seq.
    #[arg(long)]
    to_seq: Option<u64>,
    /// At or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// At or before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
}

impl FilterArgs {
    fn filter(self) -> anyhow::Result<Filter> {
        let time = |text: Option<String>| -> anyhow::Result<Option<Timestamp>> {
            Ok(match text.map(|t| t.parse::<Point>()).transpose()? {
                Some(Point::Time(t)) => Some(t),
                Some(Point::Seq(_)) => {
                    anyhow::bail!("--since and --until take RFC 3339 times; for seqs use --from-seq and --to-seq")
                }
                None => None,
            })
        };
        Ok(Filter {
            task: self.task,
            agent: self.agent,
            session: self.session,
            budget: self.budget,
            correlation: self.correlation.map(|c| parse_id("correlation id", &c)).transpose()?,
            caused_by: self.caused_by.map(|c| parse_id("event id", &c)).transpose()?,
            event_type: self.event_type.map(|t| parse_type(&t)).transpose()?,
            actor: self.actor,
            from_seq: self.from_seq,
            to_seq: self.to_seq,
            since: time(self.since)?,
            until: time(self.until)?,
        })
    }
}

#[derive(clap::Subcommand)]
enum Sub {
    /// The events, one per line (or --json), filtered: every filter narrows.
    Events {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// One JSON object per event, as `agentlog tail --json`.
        #[arg(long)]
        json: bool,
    },
    /// The world model and reputation as they were just after an event.
    State {
        #[command(flatten)]
        source: SourceArgs,
        /// A seq, or an RFC 3339 time: the last event at or before it.
        #[arg(long)]
        at: String,
        /// One task instead of the summary.
        #[arg(long, group = "entity")]
        task: Option<String>,
        /// One agent (with its reputation).
        #[arg(long, group = "entity")]
        agent: Option<String>,
        /// One session.
        #[arg(long, group = "entity")]
        session: Option<String>,
        /// One budget.
        #[arg(long, group = "entity")]
        budget: Option<String>,
        /// One line of JSON instead of indented JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// What changed in the views between two points: each entity the
    /// events between them touched, field by field, with those events.
    Diff {
        #[command(flatten)]
        source: SourceArgs,
        /// From just after this point (a seq or an RFC 3339 time).
        #[arg(long)]
        from: String,
        /// To just after this point.
        #[arg(long)]
        to: String,
        /// Only this entity: task/ID, agent/ID, session/ID or budget/ID.
        #[arg(long)]
        entity: Option<String>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Each field of one entity with the event that set it and that event's
    /// causation chain back to the command (actor, correlation id,
    /// idempotency key, time).
    Explain {
        #[command(flatten)]
        source: SourceArgs,
        /// task/ID, agent/ID, session/ID or budget/ID.
        entity: String,
        /// Just after this point (a seq or an RFC 3339 time); the last event when absent.
        #[arg(long)]
        at: Option<String>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// What if: copy the history up to a point into a scratch embedded log
    /// (the original is only read), run the commands of a JSONL file there
    /// through the real handler on a clock starting at that point's time,
    /// and show how the fork's views differ from the original's at the same
    /// moment (its last event by the fork's clock at the end).
    Fork {
        #[command(flatten)]
        source: SourceArgs,
        /// Fork just after this point (a seq or an RFC 3339 time).
        #[arg(long)]
        at: String,
        /// One command per line: {"command": "claim_task", "body": {...},
        /// "actor": "...", "idempotency_key": "...", "after_ms": 1000}.
        #[arg(long)]
        commands: PathBuf,
        /// A new (or empty) directory for the fork's log; it stays there to
        /// look at (`replay events --data DIR`).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the fork's ids: the same fork gives the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Fold the history and compare it with the views' checkpoints in
    /// `<data>/projections` (entity by entity where they differ), and the
    /// archive with the WAL where both hold events (the first seq that
    /// differs, field by field), and run every recorded sandbox run again
    /// (the first whose output, fuel or trap differs, by seq). Exits
    /// non-zero on any difference.
    Verify {
        #[command(flatten)]
        source: SourceArgs,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// One self-contained HTML page for people: a lane per agent with its
    /// claims as bars, budgets over time, invariant breaks marked, and the
    /// event list with a live filter (`#seq=N` links). At most 50,000
    /// events: narrow a larger history with the filters.
    Report {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Where to write the page.
        #[arg(long)]
        html: PathBuf,
        /// The page's title.
        #[arg(long, default_value = "agentlog replay")]
        title: String,
        /// The most events the page may hold; more is refused.
        #[arg(long, default_value_t = agentlog_replay::report::MAX_EVENTS)]
        max_events: u64,
    },
    /// Check every invariant over the whole history: for each one broken,
    /// the first event that breaks it and the events that witness it.
    /// Exits non-zero when any is broken.
    Check {
        #[command(flatten)]
        source: SourceArgs,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Events { source, filter, limit, json } => events(&source, &filter.filter()?, limit, json),
        Sub::State { source, at, task, agent, session, budget, json, cache } => {
            let entity = task
                .map(Entity::Task)
                .or(agent.map(Entity::Agent))
                .or(session.map(Entity::Session))
                .or(budget.map(Entity::Budget));
            state(&source, &at, entity, json, &cache)
        }
        Sub::Check { source, json } => check(&source, json),
        Sub::Report { source, filter, html, title, max_events } => {
            report(&source, filter.filter()?, &html, &title, max_events)
        }
        Sub::Verify { source, json } => verify(&source, json),
        Sub::Fork { source, at, commands, out, seed, json } => fork(&source, &at, &commands, &out, seed, json).await,
        Sub::Diff { source, from, to, entity, json } => diff(&source, &from, &to, entity.as_deref(), json),
        Sub::Explain { source, entity, at, json } => explain(&source, &entity, at.as_deref(), json),
    }
}

fn events(source: &SourceArgs, filter: &Filter, limit: Option<u64>, json: bool) -> anyhow::Result<ExitCode> {
    let history = source.open()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut left = limit.unwrap_or(u64::MAX);
    let mut failed = None;
    agentlog_replay::events(&history, filter, &mut |event| {
        if left == 0 {
            return false;
        }
        left -= 1;
        let written = if json {
            writeln!(out, "{}", agentlog_log::json::envelope(event))
        } else {
            writeln!(out, "{}", inspect::line(event))
        };
        failed = written.err();
        failed.is_none()
    })?;
    match failed.map_or_else(|| out.flush(), Err) {
        // A reader that stopped early (`| head`) is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

fn state(
    source: &SourceArgs,
    at: &str,
    entity: Option<Entity>,
    json: bool,
    cache: &CacheArgs,
) -> anyhow::Result<ExitCode> {
    let history = source.open()?;
    let seq = at.parse::<Point>()?.resolve(&history)?;
    let bar = progress::bar(seq, "folding", json);
    let state = match cache.dir() {
        Some(dir) if history.first_seq() == 1 => {
            let snapshots = agentlog_replay::Snapshots::open(&dir, &history, cache.snapshot_every)?;
            snapshots.state_at(&history, seq, &mut |done, _| bar.set_position(done))?
        }
        _ => agentlog_replay::state_at(&history, seq, &mut |done, _| bar.set_position(done))?,
    };
    bar.finish_and_clear();
    let value = match &entity {
        Some(entity) => state.entity(entity)?,
        None => state.summary(),
    };
    let text = if json { value.to_string() } else { serde_json::to_string_pretty(&value)? };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn check(source: &SourceArgs, json: bool) -> anyhow::Result<ExitCode> {
    let history = source.open()?;
    let head = history.head()?.last_seq;
    let bar = progress::bar(head, "checking", json);
    let report = agentlog_replay::check(&history, &mut |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    if json {
        let breaks: Vec<serde_json::Value> = report
            .breaks
            .iter()
            .map(|b| {
                serde_json::json!({
                    "invariant": b.invariant.name(), "seq": b.seq, "detail": b.detail, "witness": b.witness,
                })
            })
            .collect();
        let held: Vec<&str> = Invariant::ALL.iter().filter(|i| report.holds(**i)).map(|i| i.name()).collect();
        println!("{}", serde_json::json!({ "events": report.events, "held": held, "broken": breaks }));
    } else {
        println!("checked {} events", report.events);
        for invariant in Invariant::ALL {
            match report.breaks.iter().find(|b| b.invariant == invariant) {
                None => println!("  ok      {}", invariant.name()),
                Some(b) => {
                    println!("  BROKEN  {} at seq {}: {}", invariant.name(), b.seq, b.detail);
                    println!("          witnessed by:");
                    for seq in &b.witness {
                        match history.read(*seq, 1) {
                            Ok(events) if !events.is_empty() => println!("  {}", inspect::line(&events[0])),
                            _ => println!("  {seq:>8} (unreadable)"),
                        }
                    }
                }
            }
        }
    }
    Ok(if report.breaks.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A JSON leaf for a person: absent, or the value.
fn shown(value: Option<&serde_json::Value>) -> String {
    value.map_or_else(|| "(absent)".to_owned(), |v| v.to_string())
}

fn diff(source: &SourceArgs, from: &str, to: &str, entity: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let history = source.open()?;
    let from = from.parse::<Point>()?.resolve(&history)?;
    let to = to.parse::<Point>()?.resolve(&history)?;
    let entity = entity.map(Entity::parse).transpose()?;
    let bar = progress::bar(to, "folding", json);
    let changes = agentlog_replay::diff(&history, from, to, entity.as_ref(), &mut |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    if json {
        let changes: Vec<serde_json::Value> = changes.iter().map(agentlog_replay::trace::change_json).collect();
        println!("{}", serde_json::json!({ "from": from, "to": to, "changed": changes }));
        return Ok(ExitCode::SUCCESS);
    }
    println!("from just after seq {from} to just after seq {to}: {} entities changed", changes.len());
    for change in &changes {
        let shown_events: Vec<String> = change.events.iter().take(12).map(u64::to_string).collect();
        let more = change.events.len().saturating_sub(12);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        println!("{} (events {}{more}):", change.entity.name(), shown_events.join(", "));
        for field in &change.fields {
            println!("  {}: {} -> {}", field.path, shown(field.before.as_ref()), shown(field.after.as_ref()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn explain(source: &SourceArgs, entity: &str, at: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let history = source.open()?;
    let entity = Entity::parse(entity)?;
    let at = match at {
        Some(at) => at.parse::<Point>()?.resolve(&history)?,
        None => history.head()?.last_seq,
    };
    let bar = progress::bar(at, "folding", json);
    let explained = agentlog_replay::explain(&history, &entity, at, &mut |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    if json {
        println!("{}", agentlog_replay::trace::explained_json(&explained));
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} just after seq {at}", entity.name());
    for field in &explained.fields {
        println!("  {} = {}", field.path, field.value);
        if field.chain.is_empty() {
            println!("      never set by an event (its default)");
        }
        for (i, cause) in field.chain.iter().enumerate() {
            let e = &cause.event;
            let how = if i == 0 { "set by" } else { "caused by" };
            let correlation = agentlog_log::json::envelope(e)["correlation_id"].as_str().unwrap_or("none").to_owned();
            let key = cause.idempotency_key.as_deref().map(|k| format!(", idempotency key {k}")).unwrap_or_default();
            println!(
                "      {how} seq {} {} on {}@{} at {} by {} (correlation {correlation}{key})",
                e.seq,
                e.body.as_ref().map_or("?", |b| b.type_name()),
                e.stream,
                e.stream_version,
                Timestamp::from_nanos(e.ts),
                if e.actor.is_empty() { "(no actor)" } else { &e.actor },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn fork(
    source: &SourceArgs,
    at: &str,
    commands: &std::path::Path,
    out: &std::path::Path,
    seed: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let history = source.open()?;
    let at = at.parse::<Point>()?.resolve(&history)?;
    let text = std::fs::read_to_string(commands)
        .map_err(|e| anyhow::anyhow!("cannot read the commands file {}: {e}", commands.display()))?;
    let commands = agentlog_replay::parse_commands(&text)?;
    let bar = progress::bar(at, "forking", json);
    let forked = agentlog_replay::fork(&history, at, &commands, out, seed, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await?;
    bar.finish_and_clear();
    let outcomes: Vec<serde_json::Value> = forked
        .outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(a) => serde_json::json!({ "line": o.line, "command": o.command, "at": o.at.to_string(), "accepted": a }),
            Err(r) => serde_json::json!({
                "line": o.line, "command": o.command, "at": o.at.to_string(),
                "rejected": { "kind": r.kind.as_str(), "code": r.code.as_str(), "message": r.message },
            }),
        })
        .collect();
    if json {
        let changes: Vec<serde_json::Value> = forked.changes.iter().map(agentlog_replay::trace::change_json).collect();
        println!(
            "{}",
            serde_json::json!({
                "at": forked.at, "out": out, "head": forked.head, "until": forked.until.to_string(),
                "original_at": forked.original_at, "commands": outcomes, "changed": changes,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("forked just after seq {} into {} (the original is unchanged)", forked.at, out.display());
    for o in &forked.outcomes {
        match &o.result {
            Ok(a) => println!(
                "  line {}: {} accepted at {}: seq {}..{} ({})",
                o.line,
                o.command,
                o.at,
                a.first_seq,
                a.last_seq,
                a.events.join(", ")
            ),
            Err(r) => {
                println!("  line {}: {} rejected at {} ({}/{}): {}", o.line, o.command, o.at, r.kind, r.code, r.message)
            }
        }
    }
    println!(
        "the fork (to seq {}, its clock at {}) against the original just after seq {}, the same moment: {} entities differ",
        forked.head,
        forked.until,
        forked.original_at,
        forked.changes.len()
    );
    for change in &forked.changes {
        println!("{}:", change.entity.name());
        for field in &change.fields {
            println!(
                "  {}: {} (original) -> {} (fork)",
                field.path,
                shown(field.before.as_ref()),
                shown(field.after.as_ref())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(source: &SourceArgs, json: bool) -> anyhow::Result<ExitCode> {
    let bar = progress::bar(0, "verifying", json);
    let verification =
        agentlog_replay::verify(source.data.as_deref(), source.archive().as_deref(), &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })?;
    bar.finish_and_clear();
    // Every recorded sandbox run, executed again from the history alone.
    let history = source.open()?;
    let head = agentlog_log::EventSource::head(&history)?.last_seq;
    let sandbox = agentlog_sandbox::Sandbox::new(agentlog_sandbox::Limits::default())?;
    let bar = progress::bar(0, "re-running sandbox runs", json);
    let rerun = agentlog_sandbox::rerun(&history, history.first_seq(), head, &sandbox, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let ok = verification.ok() && rerun.ok();
    let rerun_json = serde_json::json!({
        "modules": rerun.modules, "compared": rerun.compared, "aborted_not_compared": rerun.aborted,
        "module_before_history_not_compared": rerun.module_before_history, "ok": rerun.ok(),
        "first_divergence": rerun.divergence.as_ref().map(|d| serde_json::json!({
            "seq": d.seq, "module_hash": d.module_hash, "what": d.what,
        })),
    });
    let views: Vec<serde_json::Value> = verification
        .views
        .iter()
        .map(|v| {
            let differing: Vec<serde_json::Value> =
                v.differing.iter().map(agentlog_replay::trace::change_json).collect();
            let first = v.first_divergent.as_ref().map(agentlog_log::json::envelope);
            serde_json::json!({
                "name": v.name, "ok": v.ok(), "position": v.position, "live_state_hash": v.live_hash,
                "replayed_state_hash": v.replayed_hash, "differing_entities": v.differing_count, "differing": differing,
                "first_divergent_event": first,
            })
        })
        .collect();
    let sources = verification.sources.as_ref().map(|s| {
        let divergence = s.divergence.as_ref().map(|d| {
            let fields: Vec<serde_json::Value> = d
                .fields
                .iter()
                .map(|f| serde_json::json!({ "path": f.path, "archive": f.before, "wal": f.after }))
                .collect();
            serde_json::json!({ "seq": d.seq, "fields": fields })
        });
        serde_json::json!({ "from": s.from, "to": s.to, "ok": s.divergence.is_none(), "first_divergence": divergence })
    });
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": ok, "views": views, "views_skipped": verification.views_skipped,
                "archive_against_wal": sources, "sandbox_runs": rerun_json,
            })
        );
    } else {
        if let Some(why) = &verification.views_skipped {
            println!("views: not compared: {why}");
        } else if verification.views.is_empty() {
            println!("views: no checkpoint to compare (no <data>/projections, or nothing saved)");
        }
        for v in &verification.views {
            if v.ok() {
                println!(
                    "{}: ok, the replayed state hash at seq {} is the checkpoint's ({})",
                    v.name, v.position, v.live_hash
                );
                continue;
            }
            println!(
                "{}: DIFFERS at seq {}: the checkpoint says {}, the history folds to {}; {} entities differ (kept -> replayed):",
                v.name, v.position, v.live_hash, v.replayed_hash, v.differing_count
            );
            for change in &v.differing {
                let set_by: Vec<String> = change.events.iter().map(u64::to_string).collect();
                let set_by =
                    if set_by.is_empty() { String::new() } else { format!(" (set by seq {})", set_by.join(", ")) };
                println!("  {}{set_by}:", change.entity.name());
                for field in &change.fields {
                    println!("    {}: {} -> {}", field.path, shown(field.before.as_ref()), shown(field.after.as_ref()));
                }
            }
            match &v.first_divergent {
                Some(event) => {
                    println!("  first divergent event (the earliest that set a differing field):");
                    println!("  {}", inspect::line(event));
                }
                None => println!("  no event set the differing fields: the checkpoint holds what no event made"),
            }
        }
        match &verification.sources {
            None => println!("archive against WAL: no seq held by both"),
            Some(s) => match &s.divergence {
                None => println!("archive against WAL: the same bytes for every seq both hold ({}..={})", s.from, s.to),
                Some(d) => {
                    println!("archive against WAL: they first differ at seq {} (archive -> WAL):", d.seq);
                    for field in &d.fields {
                        println!(
                            "  {}: {} -> {}",
                            field.path,
                            shown(field.before.as_ref()),
                            shown(field.after.as_ref())
                        );
                    }
                }
            },
        }
    }
    if !json {
        match &rerun.divergence {
            None => println!(
                "sandbox runs: {} re-executed from the history alone, each as recorded ({} aborted at their deadline and {} of modules registered before the history kept begins, not compared; {} modules)",
                rerun.compared, rerun.aborted, rerun.module_before_history, rerun.modules
            ),
            Some(d) => println!(
                "sandbox runs: the run at seq {} (module {}) DIFFERS: {} ({} runs before it matched)",
                d.seq,
                d.module_hash,
                d.what,
                rerun.compared.saturating_sub(1)
            ),
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn report(
    source: &SourceArgs,
    filter: Filter,
    html: &std::path::Path,
    title: &str,
    max_events: u64,
) -> anyhow::Result<ExitCode> {
    let history = source.open()?;
    let head = history.head()?.last_seq;
    let bar = progress::bar(head, "checking", false);
    let checked = agentlog_replay::check(&history, &mut |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    let page = agentlog_replay::report::html(&history, &filter, &checked, title, max_events)?;
    std::fs::write(html, &page).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", html.display()))?;
    println!("wrote {} ({} bytes): open it in a browser", html.display(), page.len());
    Ok(ExitCode::SUCCESS)
}
