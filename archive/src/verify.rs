//! `archive verify`: re-reads every day the archive holds and checks it
//! against its manifest, against itself (the hash chain through every
//! envelope, every flat column derived again from the envelope) and, when
//! given the WAL, against the WAL where the two overlap.
use std::fs::File;
use std::io::Read;
use std::path::Path;

use agentlog_log::EventSource;
use agentlog_log::chain::{self, GENESIS, Hash};
use agentlog_log::codec;
use arrow_array::cast::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::columns::{self, BatchBuilder};
use crate::day::Day;
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest::{FileEntry, Manifest};
use crate::writer::parse_hash;

/// What a verified archive holds.
#[derive(Clone, Debug, Default)]
pub struct Verified {
    /// Every day's manifest, in date order.
    pub manifests: Vec<Manifest>,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: Option<Hash>,
    /// Whether the WAL was compared, and the seq it was compared through.
    pub wal_checked_through: Option<u64>,
}

impl Verified {
    pub fn first_day(&self) -> Option<Day> {
        self.manifests.first().and_then(Manifest::day)
    }

    pub fn last_day(&self) -> Option<Day> {
        self.manifests.last().and_then(Manifest::day)
    }
}

/// Progress: the day being read and how many days there are.
pub type OnDay<'a> = &'a mut dyn FnMut(Day, usize, usize);

/// Verifies the whole archive at `root`; with `store`, also that the WAL
/// agrees with it where both hold events and that the WAL's first event
/// after the archive chains from its last.
pub fn verify(root: &Path, store: Option<&dyn EventSource>, on_day: OnDay<'_>) -> Result<Verified> {
    let damaged = |problem: String| Error::Damaged { root: root.to_owned(), problem };
    let days = layout::days(root)?;
    let mut verified = Verified::default();
    let mut previous: Option<(Day, u64, Hash)> = None;
    for (index, (day, dir)) in days.iter().enumerate() {
        on_day(*day, index, days.len());
        let manifest = Manifest::read_required(dir, root)?;
        if manifest.day() != Some(*day) {
            return Err(damaged(format!("{} holds the manifest of {}", dir.display(), manifest.date)));
        }
        let hash_of = |field: &str, hex: &str| {
            parse_hash(hex).ok_or_else(|| damaged(format!("the manifest of {day} has a malformed {field}")))
        };
        let previous_hash = hash_of("previous_hash", &manifest.previous_hash)?;
        match previous {
            Some((before, last_seq, last_hash)) => {
                if manifest.first_seq != last_seq + 1 || previous_hash != last_hash {
                    return Err(damaged(format!(
                        "{day} does not continue {before}: it starts at seq {} from hash {}, {before} ends at seq {last_seq} with hash {}",
                        manifest.first_seq,
                        manifest.previous_hash,
                        chain::to_hex(&last_hash)
                    )));
                }
            }
            None => {
                if manifest.first_seq == 1 && previous_hash != GENESIS {
                    return Err(damaged(format!("{day} starts at seq 1 but not from the genesis hash")));
                }
                verified.first_seq = manifest.first_seq;
            }
        }
        check_listing(dir, &manifest).map_err(damaged)?;
        let mut chain = ChainCheck { previous: previous_hash, next_seq: manifest.first_seq, first_hash: None };
        for entry in &manifest.files {
            verify_file(dir, entry, &mut chain).map_err(|problem| damaged(format!("{day}: {problem}")))?;
            verified.files += 1;
            verified.bytes += entry.bytes;
        }
        let rows = chain.next_seq - manifest.first_seq;
        if rows != manifest.rows || chain.next_seq != manifest.last_seq + 1 {
            return Err(damaged(format!(
                "{day}: the files hold {rows} rows up to seq {}, the manifest says {} rows up to seq {}",
                chain.next_seq - 1,
                manifest.rows,
                manifest.last_seq
            )));
        }
        if chain.first_hash != Some(hash_of("first_hash", &manifest.first_hash)?)
            || chain.previous != hash_of("last_hash", &manifest.last_hash)?
        {
            return Err(damaged(format!("{day}: the chain hashes of the files differ from the manifest's")));
        }
        verified.rows += rows;
        verified.last_seq = manifest.last_seq;
        verified.last_hash = Some(chain.previous);
        previous = Some((*day, manifest.last_seq, chain.previous));
        verified.manifests.push(manifest);
    }
    if let Some(store) = store {
        verified.wal_checked_through = Some(check_wal(root, store, &verified)?);
    }
    Ok(verified)
}

/// The day's directory holds exactly the manifest's Parquet files: a stray
/// one would be read by every glob.
fn check_listing(dir: &Path, manifest: &Manifest) -> Result<(), String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".parquet"))
        .collect();
    found.sort();
    let mut listed: Vec<String> = manifest.files.iter().map(|f| f.name.clone()).collect();
    listed.sort();
    if found != listed {
        let missing: Vec<&String> = listed.iter().filter(|n| !found.contains(n)).collect();
        let extra: Vec<&String> = found.iter().filter(|n| !listed.contains(n)).collect();
        return Err(format!(
            "{}: the files differ from the manifest's (missing {missing:?}, not listed {extra:?})",
            dir.display()
        ));
    }
    Ok(())
}

struct ChainCheck {
    previous: Hash,
    next_seq: u64,
    first_hash: Option<Hash>,
}

fn verify_file(dir: &Path, entry: &FileEntry, chain_check: &mut ChainCheck) -> Result<(), String> {
    let path = dir.join(&entry.name);
    let name = &entry.name;
    let mut file = File::open(&path).map_err(|e| format!("cannot open {name}: {e}"))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| format!("cannot read {name}: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    if bytes != entry.bytes || hasher.finalize().to_hex().as_str() != entry.blake3 {
        return Err(format!(
            "{name} is {bytes} bytes with another checksum than the manifest's ({} bytes, blake3 {}): it was altered",
            entry.bytes, entry.blake3
        ));
    }
    if entry.first_seq != chain_check.next_seq {
        return Err(format!("{name} starts at seq {}, expected {}", entry.first_seq, chain_check.next_seq));
    }
    let file = File::open(&path).map_err(|e| format!("cannot open {name}: {e}"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|e| format!("{name} is not readable Parquet: {e}"))?;
    let mut rows = 0u64;
    let mut expected = BatchBuilder::default();
    for batch in reader {
        let batch = batch.map_err(|e| format!("{name} is not readable Parquet: {e}"))?;
        if batch.schema() != columns::schema() {
            return Err(format!("{name} has other columns than the archive schema"));
        }
        let envelopes = batch.column(columns::index(columns::ENVELOPE)).as_binary::<i32>();
        for stored in envelopes.iter() {
            let seq = chain_check.next_seq;
            let stored = stored.ok_or_else(|| format!("{name}: seq {seq} has no envelope"))?;
            let hash = chain::check_stored(&chain_check.previous, stored)
                .map_err(|reason| format!("{name}: the envelope of seq {seq}: {reason}"))?;
            let envelope = codec::decode(stored).map_err(|e| format!("{name}: the envelope of seq {seq}: {e}"))?;
            if envelope.seq != seq {
                return Err(format!("{name}: seq {} where seq {seq} was expected", envelope.seq));
            }
            expected.push(stored, &envelope);
            chain_check.first_hash.get_or_insert(hash);
            chain_check.previous = hash;
            chain_check.next_seq += 1;
        }
        if expected.finish() != batch {
            return Err(format!(
                "{name}: the flat columns of seqs {}..{} differ from what their envelopes say",
                chain_check.next_seq - batch.num_rows() as u64,
                chain_check.next_seq
            ));
        }
        rows += batch.num_rows() as u64;
    }
    if rows != entry.rows || chain_check.next_seq != entry.last_seq + 1 {
        return Err(format!(
            "{name} holds {rows} rows up to seq {}; the manifest says {} rows up to seq {}",
            chain_check.next_seq - 1,
            entry.rows,
            entry.last_seq
        ));
    }
    Ok(())
}

/// The WAL and the archive agree: each day's last event, where the WAL still
/// holds it, has the manifest's hash; the WAL's first event after the
/// archive chains from the archive's last; and what the WAL has pruned, the
/// archive holds. Returns the seq the WAL was compared through.
fn check_wal(root: &Path, store: &dyn EventSource, verified: &Verified) -> Result<u64> {
    let diverged = |problem: String| Error::Diverged { root: root.to_owned(), problem };
    let head = store.head()?;
    let pruned = store.pruned_through()?;
    if let Some(pruned) = pruned
        && (verified.manifests.is_empty() || pruned.seq > verified.last_seq || verified.first_seq > 1)
    {
        return Err(diverged(format!(
            "the WAL has dropped events through seq {} but the archive holds seqs {}..={}",
            pruned.seq, verified.first_seq, verified.last_seq
        )));
    }
    for manifest in &verified.manifests {
        let day = &manifest.date;
        if manifest.last_seq > head.last_seq {
            return Err(diverged(format!(
                "{day} reaches seq {} but the WAL ends at seq {}: is --data the log this archive was made from?",
                manifest.last_seq, head.last_seq
            )));
        }
        if pruned.is_some_and(|p| manifest.last_seq <= p.seq) {
            // Checked when it was pruned: the cut's hash is this archive's.
            continue;
        }
        let mut wal_hash = None;
        store.for_each_stored(manifest.last_seq, 1, &mut |seq, bytes| {
            if seq == manifest.last_seq {
                wal_hash = chain::stored_hash(bytes);
            }
            Ok(())
        })?;
        if let Some(hash) = wal_hash
            && chain::to_hex(&hash) != manifest.last_hash
        {
            return Err(diverged(format!(
                "{day} ends at seq {} with hash {}, the WAL's event there has hash {}",
                manifest.last_seq,
                manifest.last_hash,
                chain::to_hex(&hash)
            )));
        }
    }
    if let Some(last_hash) = verified.last_hash {
        let mut next = Ok(());
        store.for_each_stored(verified.last_seq + 1, 1, &mut |seq, bytes| {
            if let Err(reason) = chain::check_stored(&last_hash, bytes) {
                next = Err(diverged(format!(
                    "the WAL's event {seq} does not chain from the archive's last event: {reason}"
                )));
            }
            Ok(())
        })?;
        next?;
    }
    Ok(verified.last_seq.min(head.last_seq))
}
