//! Publishing a file's lines and settling their acks: pipelined, in `seq` order, with the
//! recoveries [`super`] describes (a line lost while later ones got through, a line
//! another forwarder is storing at that moment).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;

use super::{FileState, ForwardError, Forwarder, IN_PROCESS_WAIT};
use crate::cluster::msg_id;
use crate::event::Published;
use crate::tail::Checkpoint;

/// An event sent and awaiting its ack, or the end of a read: once everything before it is
/// acknowledged, its checkpoint is.
pub(super) enum InFlight {
    Event {
        seq: u64,
        ack: PublishAckFuture,
        /// What was sent, to send again if another forwarder was storing it at that moment.
        sent: Sent,
    },
    ReadEnd(Checkpoint),
}

/// A message as published: its payload (shared, not copied) and whether it had an id.
pub(super) struct Sent {
    payload: Bytes,
    plain: bool,
}

impl Forwarder {
    /// Sends line `seq` of the file: its event `p`, or a placeholder naming only the run and
    /// the seq for a line that is not an event (or an event larger than the server takes);
    /// with `Nats-Msg-Id` unless `plain`.
    pub(super) async fn publish(
        &self,
        state: &FileState,
        seq: u64,
        p: Option<&Published>,
        plain: bool,
    ) -> Result<InFlight, ForwardError> {
        let mut sent = Sent {
            payload: self.payload(state, seq, p),
            plain,
        };
        let mut ack = self.send(state, seq, &sent).await;
        if p.is_some()
            && ack
                .as_ref()
                .is_err_and(|e| e.kind() == PublishErrorKind::MaxPayloadExceeded)
        {
            tracing::warn!(
                subject = state.subject,
                seq,
                "event larger than the NATS server's max_payload: sent as a placeholder \
                 (dashboards show an empty line for it)"
            );
            sent.payload = self.payload(state, seq, None);
            ack = self.send(state, seq, &sent).await;
        }
        ack.map(|ack| InFlight::Event { seq, ack, sent })
            .map_err(|e| publish_error(state, seq, &e))
    }

    async fn send(
        &self,
        state: &FileState,
        seq: u64,
        sent: &Sent,
    ) -> Result<PublishAckFuture, PublishError> {
        let mut message = PublishMessage::build().payload(sent.payload.clone());
        if !sent.plain {
            message = message.message_id(msg_id(&state.run_id, seq));
        }
        self.engine
            .js
            .send_publish(state.subject.clone(), message)
            .await
    }

    /// Line `seq` was refused because another forwarder of the file (a run's, handed over at
    /// its end) is storing the same message at this moment. Sent again with the same id, it
    /// gets that store's outcome: a repeat once stored (before anything this forwarder sent
    /// after it), or stored now if that store failed. Asked again while still in process, for
    /// up to [`IN_PROCESS_WAIT`].
    async fn once_settled(
        &self,
        state: &FileState,
        seq: u64,
        sent: &Sent,
    ) -> Result<PublishAck, PublishError> {
        let deadline = Instant::now() + IN_PROCESS_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            tokio::time::sleep(pause).await;
            match self.send(state, seq, sent).await?.await {
                Err(e) if in_process(&e) && Instant::now() < deadline => {
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                outcome => return outcome,
            }
        }
    }

    /// The message for line `seq`: its event `p` (with this host's name if the line has
    /// none), or a placeholder naming only the run, the seq and the host.
    fn payload(&self, state: &FileState, seq: u64, p: Option<&Published>) -> Bytes {
        let payload: Vec<u8> = match p {
            Some(p) if p.event.host.is_some() => p.json.as_str().as_bytes().to_vec(),
            Some(p) => {
                let mut event = p.event.clone();
                event.host = Some(self.engine.host.clone());
                serde_json::to_vec(&event).unwrap_or_else(|_| p.json.as_str().as_bytes().to_vec())
            }
            None => serde_json::to_vec(&serde_json::json!({
                "run_id": state.run_id.as_str(),
                "seq": seq,
                "host": self.engine.host,
            }))
            .unwrap_or_default(),
        };
        payload.into()
    }

    pub(super) async fn settle_front(
        &mut self,
        state: &mut FileState,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<(), ForwardError> {
        match in_flight.pop_front() {
            Some(InFlight::Event { seq, ack, sent }) => {
                let (outcome, again) = match ack.await {
                    Err(e) if in_process(&e) && !sent.plain => {
                        (self.once_settled(state, seq, &sent).await, true)
                    }
                    outcome => (outcome, false),
                };
                match outcome {
                    Ok(a) if a.duplicate => self.totals.duplicates += 1,
                    Ok(_) if again => {
                        // The other store failed, and this one came late: lines sent after
                        // it may be stored before it. As for a lost line, the pass is made
                        // again, what got through past it plain.
                        self.totals.published += 1;
                        self.resend_later_lines(state, in_flight, seq).await;
                        return Err(publish_error(
                            state,
                            seq,
                            &"stored late, another forwarder's store of it having failed",
                        ));
                    }
                    Ok(_) => {
                        self.totals.published += 1;
                        if state.plain_through.is_some_and(|t| seq >= t) {
                            state.plain_through = None;
                        }
                    }
                    Err(e) => {
                        self.resend_later_lines(state, in_flight, seq).await;
                        return Err(publish_error(state, seq, &e));
                    }
                }
            }
            Some(InFlight::ReadEnd(cp)) => state.acked = Some(cp),
            None => {}
        }
        Ok(())
    }

    /// Line `seq` was lost (or stored late), and lines sent after it may have been stored all
    /// the same (the engine was back by then): they must go again after it, without their id,
    /// which the duplicate window would refuse. Waits for every ack in flight: the pass ends
    /// here, and is made again from what was acknowledged.
    async fn resend_later_lines(
        &self,
        state: &mut FileState,
        in_flight: &mut VecDeque<InFlight>,
        seq: u64,
    ) {
        let mut stored_after = None;
        while let Some(next) = in_flight.pop_front() {
            if let InFlight::Event { seq, ack, .. } = next
                && ack.await.is_ok()
            {
                stored_after = Some(seq);
            }
        }
        let Some(last) = stored_after else {
            return;
        };
        tracing::info!(
            subject = state.subject,
            "seq {seq} was lost while later lines (to seq {last}) got through: \
             sending them again after it"
        );
        state.plain_through = state.plain_through.max(Some(last));
    }

    pub(super) async fn settle_all(
        &mut self,
        state: &mut FileState,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<(), ForwardError> {
        while !in_flight.is_empty() {
            self.settle_front(state, in_flight).await?;
        }
        Ok(())
    }
}

/// [`ForwardError::Publish`] for line `seq` of `state`'s run.
fn publish_error(state: &FileState, seq: u64, reason: &dyn std::fmt::Display) -> ForwardError {
    ForwardError::Publish {
        subject: state.subject.clone(),
        msg_id: msg_id(&state.run_id, seq),
        reason: reason.to_string(),
    }
}

/// JetStream's "duplicate message id is in process": another publish of the same message is
/// being stored at this moment.
fn in_process(e: &PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|j| j.error_code() == ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT)
}
