//! [`read_ahead`]: a source's events handed to a fold page by page, read
//! and decoded on two other threads a few pages ahead of it, or, on a
//! machine with one core, in turn on the fold's own ([`read_in_turn`]).
//!
//! A fold from the archive or the WAL has three jobs per event: read its
//! stored bytes (and, for a replay's history, check its chain link), decode
//! them, and fold the envelope. Each is a third or so of the work, so on
//! their own threads they keep two cores busy where one reading thread
//! beside the fold left the fold waiting on it. The stored bytes of a page
//! go from the reading thread to the decoding one in one buffer, and the
//! buffer goes back to be filled again. The folded envelopes go back to the
//! decoding thread too, and the next page is decoded into them: an
//! envelope's ids and strings are written where the last one's were, so
//! decoding an event allocates for little but its body.
use std::sync::mpsc;

use crate::codec;
use crate::error::Result;
use crate::schema::Envelope;
use crate::source::EventSource;

/// Events per page.
pub const PAGE: usize = 4096;

/// Pages each stage may run ahead of the next.
const PAGES_AHEAD: usize = 4;

/// One page of stored events: their bytes end to end, and where each ends.
#[derive(Default)]
struct StoredPage {
    bytes: Vec<u8>,
    events: Vec<(u64, usize)>,
}

impl StoredPage {
    /// Fills the page with up to `want` stored events from `next` on; the
    /// last seq read, `None` when the source had none.
    fn fill(&mut self, source: &dyn EventSource, next: u64, want: usize) -> Result<Option<u64>> {
        self.bytes.clear();
        self.events.clear();
        source.for_each_stored(next, want, &mut |seq, bytes| {
            self.bytes.extend_from_slice(bytes);
            self.events.push((seq, self.bytes.len()));
            Ok(())
        })?;
        Ok(self.events.last().map(|&(last, _)| last))
    }
}

/// Events in the next page of `next..=through`.
fn page_len(next: u64, through: u64) -> usize {
    usize::try_from(through - next + 1).unwrap_or(PAGE).min(PAGE)
}

/// Stored events end to end in `bytes` (each `(seq, where it ends)` in
/// `events`), decoded into `page`'s envelopes (a folded page's, or none),
/// which it then holds exactly: what the decoding thread does with a page.
pub fn decode_page(bytes: &[u8], events: &[(u64, usize)], page: &mut Vec<Envelope>) -> Result<()> {
    page.truncate(events.len());
    page.reserve_exact(events.len() - page.len());
    let mut start = 0;
    for (i, &(seq, end)) in events.iter().enumerate() {
        if i == page.len() {
            page.push(Envelope::default());
        }
        codec::decode_at_into(seq, &bytes[start..end], &mut page[i])?;
        start = end;
    }
    Ok(())
}

/// Calls `each` with the events `from..=through` of `source`, in order, a
/// page (never empty) at a time, until `each` returns false. A failure to
/// read or decode is handed to `each` in place of the page it spoiled, and
/// ends the reading; so does the source ending before `through` (then
/// `each` has had fewer events than asked for: the caller says what that
/// means).
///
/// Reads and decodes on two threads of its own when the process may run on
/// more than one core. On one core the three threads could only take
/// turns, so the pages are read, decoded and folded in turn on the
/// caller's thread ([`read_in_turn`]): no faster there (docs/BENCHMARKS.md),
/// but with one page in memory instead of the dozen or so in flight between
/// three threads.
pub fn read_ahead(
    source: &dyn EventSource,
    from: u64,
    through: u64,
    each: &mut dyn FnMut(Result<&[Envelope]>) -> bool,
) {
    if std::thread::available_parallelism().map_or(1, usize::from) == 1 {
        read_in_turn(source, from, through, each);
    } else {
        read_on_threads(source, from, through, each);
    }
}

/// [`read_ahead`] on the caller's thread alone: each page read, decoded
/// into the envelopes of the page before and handed to `each` in turn.
pub fn read_in_turn(
    source: &dyn EventSource,
    from: u64,
    through: u64,
    each: &mut dyn FnMut(Result<&[Envelope]>) -> bool,
) {
    let (mut stored, mut envelopes, mut next) = (StoredPage::default(), Vec::new(), from);
    while next <= through {
        let page = stored.fill(source, next, page_len(next, through)).and_then(|last| {
            let Some(last) = last else { return Ok(None) };
            next = last + 1;
            decode_page(&stored.bytes, &stored.events, &mut envelopes).map(|()| Some(()))
        });
        match page {
            Ok(None) => return,
            Ok(Some(())) => {
                if !each(Ok(&envelopes)) {
                    return;
                }
            }
            Err(e) => {
                each(Err(e));
                return;
            }
        }
    }
}

/// [`read_ahead`] with the reading and the decoding each on a thread of
/// its own, a few pages ahead of the fold.
fn read_on_threads(
    source: &dyn EventSource,
    from: u64,
    through: u64,
    each: &mut dyn FnMut(Result<&[Envelope]>) -> bool,
) {
    let (stored_tx, stored_rx) = mpsc::sync_channel::<Result<StoredPage>>(PAGES_AHEAD);
    let (spent_tx, spent_rx) = mpsc::sync_channel::<StoredPage>(PAGES_AHEAD + 2);
    let (decoded_tx, decoded_rx) = mpsc::sync_channel::<Result<Vec<Envelope>>>(PAGES_AHEAD);
    let (folded_tx, folded_rx) = mpsc::sync_channel::<Vec<Envelope>>(PAGES_AHEAD + 2);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let (mut next, mut last_bytes) = (from, 0);
            while next <= through {
                let want = page_len(next, through);
                // A new page is as large as the last one from the start (a
                // buffer grown by doubling is copied, and fresh memory
                // zeroed, at each step).
                let mut page = spent_rx.try_recv().unwrap_or_else(|_| StoredPage {
                    bytes: Vec::with_capacity(last_bytes),
                    events: Vec::with_capacity(want),
                });
                let read = page.fill(source, next, want);
                last_bytes = page.bytes.len();
                let stop = match &read {
                    Ok(Some(last)) => {
                        next = last + 1;
                        false
                    }
                    Ok(None) => return,
                    Err(_) => true,
                };
                // The next stage hung up (the fold stopped): stop reading.
                if stored_tx.send(read.map(|_| page)).is_err() || stop {
                    return;
                }
            }
        });
        scope.spawn(move || {
            // Folded pages, to decode the next pages into. They come back
            // as fast as pages go out, so this holds a few at most.
            let mut folded = Vec::new();
            for stored in stored_rx {
                folded.extend(folded_rx.try_iter());
                let mut envelopes = folded.pop().unwrap_or_default();
                let decoded = stored.and_then(|page| {
                    let decoded = decode_page(&page.bytes, &page.events, &mut envelopes);
                    // The reader may have stopped: then the buffer is dropped.
                    let _ = spent_tx.try_send(page);
                    decoded.map(|()| envelopes)
                });
                let failed = decoded.is_err();
                if decoded_tx.send(decoded).is_err() || failed {
                    return;
                }
            }
        });
        for page in decoded_rx {
            let go_on = match page {
                Ok(page) => {
                    let go_on = each(Ok(&page));
                    // Full (the decoder has enough to decode into): dropped here.
                    let _ = folded_tx.try_send(page);
                    go_on
                }
                Err(e) => each(Err(e)),
            };
            if !go_on {
                // Dropping the receiver stops the decoding thread, whose
                // receiver's drop stops the reading one.
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Head;
    use crate::error::Error;
    use crate::source::Pruned;
    use std::path::Path;

    /// Events 1..=n, one stored event being garbage when asked.
    struct Numbers {
        n: u64,
        garbage_at: Option<u64>,
    }

    impl EventSource for Numbers {
        fn location(&self) -> &Path {
            Path::new("numbers")
        }
        fn head(&self) -> Result<Head> {
            Ok(Head { last_seq: self.n, hash: [0; 32] })
        }
        fn pruned_through(&self) -> Result<Option<Pruned>> {
            Ok(None)
        }
        fn for_each_stored(
            &self,
            from_seq: u64,
            max: usize,
            f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
        ) -> Result<usize> {
            let to = self.n.min(from_seq + max as u64 - 1);
            for seq in from_seq..=to {
                if self.garbage_at == Some(seq) {
                    f(seq, b"\xff\xff")?;
                } else {
                    f(seq, &codec::encode(&crate::testing::sample_envelope(seq)))?;
                }
            }
            Ok((from_seq..=to).count())
        }
    }

    type Reader = fn(&dyn EventSource, u64, u64, &mut dyn FnMut(Result<&[Envelope]>) -> bool);

    /// Both ways of reading: every test holds for each.
    const READERS: [(&str, Reader); 2] = [("on threads", read_on_threads), ("in turn", read_in_turn)];

    /// The seqs of each page `read` hands over, for each of [`READERS`].
    fn pages(
        source: &Numbers,
        from: u64,
        through: u64,
        stop_after: usize,
    ) -> Vec<(&'static str, Vec<Result<Vec<u64>>>)> {
        READERS
            .iter()
            .map(|&(name, read)| {
                let mut out = Vec::new();
                read(source, from, through, &mut |page| {
                    out.push(page.map(|p| p.iter().map(|e| e.seq).collect()));
                    out.len() < stop_after
                });
                (name, out)
            })
            .collect()
    }

    #[test]
    fn every_event_once_in_order_a_page_at_a_time() {
        let source = Numbers { n: 10_000, garbage_at: None };
        for (reader, got) in pages(&source, 3, 9_000, usize::MAX) {
            let seqs: Vec<u64> = got.iter().flat_map(|p| p.as_ref().unwrap().clone()).collect();
            assert_eq!(seqs, (3..=9_000).collect::<Vec<_>>(), "{reader}");
            let sizes: Vec<usize> = got.iter().map(|p| p.as_ref().unwrap().len()).collect();
            assert_eq!(sizes, [PAGE, PAGE, 8_998 - 2 * PAGE], "{reader}");
        }
    }

    #[test]
    fn a_source_that_ends_early_ends_the_pages() {
        let source = Numbers { n: 5_000, garbage_at: None };
        for (reader, got) in pages(&source, 1, 20_000, usize::MAX) {
            assert_eq!(got.iter().map(|p| p.as_ref().unwrap().len()).sum::<usize>(), 5_000, "{reader}");
        }
    }

    #[test]
    fn damage_takes_the_place_of_its_page_and_ends_the_reading() {
        let source = Numbers { n: 20_000, garbage_at: Some(PAGE as u64 + 7) };
        for (reader, got) in pages(&source, 1, 20_000, usize::MAX) {
            assert_eq!(got.len(), 2, "{reader}");
            assert!(got[0].is_ok(), "{reader}");
            assert!(
                matches!(&got[1], Err(Error::Corrupt { seq, .. }) if *seq == PAGE as u64 + 7),
                "{reader}: the damaged seq is named: {:?}",
                got[1].as_ref().err()
            );
        }
    }

    #[test]
    fn the_fold_may_stop_early() {
        let source = Numbers { n: 100_000, garbage_at: None };
        for (reader, got) in pages(&source, 1, 100_000, 2) {
            assert_eq!(got.len(), 2, "{reader}");
        }
    }
}
