//! The `history` request (§4): older events for a client that attached with
//! `tail` ("load earlier"), from the in-memory tail or, beyond it, the journal.
//!
//! The tail part is taken in the actor's step; a journal part is read by a
//! separate task in bounded chunks (`session::replay`), so the actor never waits
//! on the disk or on the client, and the reply is pushed when it is complete.

use super::*;
use crate::journal::ReadCursor;
use crate::session::replay;

impl Actor {
    pub(super) fn history(
        &mut self,
        client: ClientHandle,
        id: Option<RequestId>,
        before: u64,
        limit: u64,
    ) {
        let head = self.log.head;
        let from = before.saturating_sub(limit).max(1);
        // Inclusive end; seqs not yet assigned are simply not there.
        let to = (before - 1).min(head);
        if from > to {
            push_history(&client, id, &self.name_json, Vec::new(), false);
            return;
        }
        let first = self.log.first_retained();
        let truncated = from < first;
        let tail_first = self.log.tail_first();
        let skip = from.saturating_sub(tail_first) as usize;
        let tail_part: Vec<FrameText> = self
            .log
            .tail
            .iter()
            .skip(skip)
            .filter(|(seq, _)| *seq >= from && *seq <= to)
            .map(|(_, t)| t.clone())
            .collect();
        let journal_from = from.max(first);
        let journal_to = to.min(tail_first.saturating_sub(1));
        if journal_from > journal_to {
            push_history(&client, id, &self.name_json, tail_part, truncated);
            return;
        }
        let reader = self.log.reader.clone();
        let name_json = self.name_json.clone();
        tokio::spawn(async move {
            let mut cursor = ReadCursor::new(journal_from, journal_to);
            let mut events = Vec::new();
            let mut expected = journal_from;
            let mut truncated = truncated;
            loop {
                match replay::next_chunk(&reader, &mut cursor).await {
                    Ok(chunk) if chunk.is_empty() => break,
                    Ok(chunk) => {
                        for (seq, text) in chunk {
                            // A gap: records removed (journal size budget) meanwhile.
                            truncated |= seq != expected;
                            expected = seq + 1;
                            events.push(text);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "history: journal read failed");
                        truncated = true;
                        break;
                    }
                }
            }
            truncated |= expected != journal_to + 1;
            events.extend(tail_part);
            push_history(&client, id, &name_json, events, truncated);
        });
    }
}

/// Queue the `history` reply: the event frames are spliced in as they are.
fn push_history(
    client: &ClientHandle,
    id: Option<RequestId>,
    name_json: &str,
    events: Vec<FrameText>,
    truncated: bool,
) {
    let bytes: usize = events.iter().map(|e| e.len() + 1).sum();
    let mut text = String::with_capacity(bytes + name_json.len() + 96);
    text.push_str(r#"{"type":"history""#);
    if let Some(id) = &id
        && let Ok(id) = serde_json::to_string(id)
    {
        text.push_str(r#","id":"#);
        text.push_str(&id);
    }
    text.push_str(r#","session":"#);
    text.push_str(name_json);
    text.push_str(r#","events":["#);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(e.as_str());
    }
    text.push_str(r#"],"truncated":"#);
    text.push_str(if truncated { "true" } else { "false" });
    text.push('}');
    let _ = client.outbox.frame(FrameType::History, text);
}
