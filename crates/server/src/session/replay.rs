//! Reading events back from a session journal for replays and `history`, in
//! bounded chunks on the blocking pool.
//!
//! Owns: how much is read at once ([`CHUNK_RECORDS`], [`CHUNK_BYTES`]) and how
//! many reads run at the same time ([`CONCURRENT_READS`], process-wide). A
//! blocking thread only ever reads one chunk and returns; it never waits on a
//! client. So clients that stop reading during a replay hold no blocking thread
//! (their writer awaits its socket with the chunk in hand), and however many of
//! them there are, other replays, key reloads and everything else that needs the
//! blocking pool keep going. Must not: write to sockets or know about sessions.

use tokio::sync::Semaphore;

use crate::journal::{JournalError, JournalReader, ReadCursor};
use crate::ws::FrameText;

/// Records read per chunk at most.
pub const CHUNK_RECORDS: usize = 256;
/// A chunk stops after this many frame bytes (it holds at least one record).
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// Journal reads on the blocking pool at the same time, process-wide.
pub const CONCURRENT_READS: usize = 8;

static READS: Semaphore = Semaphore::const_new(CONCURRENT_READS);

/// Why a chunk could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("journal record {0} is not UTF-8")]
    NotUtf8(u64),
    #[error("journal read task failed: {0}")]
    Task(String),
}

/// The next chunk of `cursor`'s range as `(seq, frame)`; empty once it is done.
pub async fn next_chunk(
    reader: &JournalReader,
    cursor: &mut ReadCursor,
) -> Result<Vec<(u64, FrameText)>, ReplayError> {
    if cursor.done() {
        return Ok(Vec::new());
    }
    let _permit = READS
        .acquire()
        .await
        .map_err(|e| ReplayError::Task(e.to_string()))?;
    let reader = reader.clone();
    let mut moved = cursor.clone();
    let (records, moved) = tokio::task::spawn_blocking(move || {
        let records = reader.read_chunk(&mut moved, CHUNK_RECORDS, CHUNK_BYTES);
        (records, moved)
    })
    .await
    .map_err(|e| ReplayError::Task(e.to_string()))?;
    *cursor = moved;
    let mut out = Vec::new();
    for rec in records? {
        let seq = rec.seq;
        let text = String::from_utf8(rec.frame).map_err(|_| ReplayError::NotUtf8(seq))?;
        out.push((seq, FrameText::from(text)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use crate::journal::{FsyncPolicy, JournalConfig};

    #[tokio::test]
    async fn many_readers_that_hold_their_chunks_do_not_block_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let config = JournalConfig {
            fsync: FsyncPolicy::Never,
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
        };
        let mut j = Journal::open(dir.path(), config).unwrap().journal;
        for seq in 1..=600u64 {
            j.append(seq, 0, format!("{{\"n\":{seq}}}").as_bytes())
                .unwrap();
        }
        j.commit().unwrap();
        let reader = j.reader();
        // 64 "clients" each take a first chunk and then never ask for more
        // (as a writer stuck on a socket would): none of them holds a read slot.
        let mut held = Vec::new();
        for _ in 0..64 {
            let mut cursor = ReadCursor::new(1, 600);
            let chunk = next_chunk(&reader, &mut cursor).await.unwrap();
            assert_eq!(chunk.len(), CHUNK_RECORDS);
            held.push((cursor, chunk));
        }
        assert_eq!(READS.available_permits(), CONCURRENT_READS);
        // Another replay still reads everything.
        let mut cursor = ReadCursor::new(1, 600);
        let mut seqs = Vec::new();
        loop {
            let chunk = next_chunk(&reader, &mut cursor).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            seqs.extend(chunk.into_iter().map(|(s, _)| s));
        }
        assert_eq!(seqs, (1..=600).collect::<Vec<_>>());
        drop(held);
    }
}
