//! A large file's documents parsed on every core, added in order.
//!
//! Parsing is most of what loading a large configuration costs, and each
//! document parses on its own. Helpers (one per other core, three at most)
//! and the loading thread claim chunks of documents in turn; the loading
//! thread adds each chunk to the configuration as soon as every chunk
//! before it has been added, and parses a chunk itself whenever nothing is
//! ready to add, so adding overlaps parsing. What is parsed but not yet
//! added stays bounded: helpers wait on a bounded channel, and the loading
//! thread stops claiming while it holds [`MAX_WAITING`] chunks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::single_pass::{Parsed, parse};

/// Below this many documents, they are parsed on the calling thread alone.
const PARALLEL_FROM: usize = 512;

/// Documents claimed at a time.
const CHUNK: usize = 32;

/// Parsed chunks the loading thread holds before it stops claiming more.
const MAX_WAITING: usize = 64;

/// Calls `add` with [`parse`] of every document of `texts`, in order.
pub(super) fn parse_each(texts: &[&str], mut add: impl FnMut(usize, Option<Parsed>)) {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(4);
    if texts.len() < PARALLEL_FROM || threads < 2 {
        for (i, text) in texts.iter().enumerate() {
            add(i, parse(text));
        }
        return;
    }
    let chunks = texts.len().div_ceil(CHUNK);
    let chunk = |c: usize| &texts[c * CHUNK..((c + 1) * CHUNK).min(texts.len())];
    let parse_chunk = |c: usize| chunk(c).iter().map(|t| parse(t)).collect::<Vec<_>>();
    let claimed = AtomicUsize::new(0);
    let claim = || {
        let c = claimed.fetch_add(1, Ordering::Relaxed);
        (c < chunks).then_some(c)
    };
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<(usize, Vec<Option<Parsed>>)>(threads * 4);
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                let tx = tx.clone();
                let (claim, parse_chunk) = (&claim, &parse_chunk);
                // No thread to be had: the loading thread parses more itself.
                std::thread::Builder::new()
                    .name("meshgate-parse".into())
                    .spawn_scoped(scope, move || {
                        while let Some(c) = claim() {
                            if tx.send((c, parse_chunk(c))).is_err() {
                                break;
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        drop(tx);
        let mut waiting: BTreeMap<usize, Vec<Option<Parsed>>> = BTreeMap::new();
        let mut next = 0;
        let mut helpers_gone = false;
        while next < chunks {
            if let Some(parsed) = waiting.remove(&next) {
                for (j, p) in parsed.into_iter().enumerate() {
                    add(next * CHUNK + j, p);
                }
                next += 1;
                continue;
            }
            if !helpers_gone {
                match rx.try_recv() {
                    Ok((c, parsed)) => {
                        waiting.insert(c, parsed);
                        continue;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => helpers_gone = true,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
            }
            if waiting.len() < MAX_WAITING
                && let Some(c) = claim()
            {
                waiting.insert(c, parse_chunk(c));
                continue;
            }
            if !helpers_gone {
                match rx.recv() {
                    Ok((c, parsed)) => {
                        waiting.insert(c, parsed);
                        continue;
                    }
                    Err(mpsc::RecvError) => helpers_gone = true,
                }
            }
            // Every chunk is claimed, every helper has ended, and chunk
            // `next` never came: its helper panicked. Its documents take
            // the two passes, which report what is wrong with them.
            waiting.insert(next, chunk(next).iter().map(|_| None).collect());
        }
        // Joined here, so that a helper's panic is not the scope's.
        for helper in helpers {
            let _ = helper.join();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\n  namespace: ns\nspec:\n  hosts: [a.example.com]\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n";

    #[test]
    fn documents_parsed_on_several_threads_are_added_in_order() {
        for n in [
            PARALLEL_FROM - 1,
            PARALLEL_FROM * 2 + 7,
            CHUNK * MAX_WAITING * 3 + 1,
        ] {
            let texts: Vec<String> = (0..n)
                .map(|i| {
                    if i % 100 == 0 {
                        // Some go to the two passes.
                        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s{i}}}\n")
                    } else {
                        SE.replace("name: a", &format!("name: a{i}"))
                    }
                })
                .collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let mut seen = 0;
            parse_each(&refs, |i, p| {
                assert_eq!(i, seen, "out of order");
                seen += 1;
                match p {
                    Some(p) => assert_eq!(p.metadata.name.as_deref(), Some(&*format!("a{i}"))),
                    None => assert_eq!(i % 100, 0, "document {i}"),
                }
            });
            assert_eq!(seen, n);
        }
    }
}
