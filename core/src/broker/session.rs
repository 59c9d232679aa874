//! Per-client state that outlives connections: inflight windows both ways, the queue, the will.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::num::NonZeroU16;

use super::ConnId;
use super::message::SharedMessage;
use crate::{Instant, QoS};

/// A message on its way to one subscriber, with what is particular to that subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub message: SharedMessage,
    /// The QoS it is delivered with: min(published, granted).
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (MQTT 5).
    pub subscription_ids: Box<[u32]>,
    /// Its number in the persistence records (0: not persisted).
    pub seq: u64,
}

impl Outgoing {
    /// Bytes charged to the queue limits.
    pub fn size(&self) -> usize {
        self.message.size()
    }
}

/// Where an outbound QoS 1/2 message is in its acknowledgement flow: the packet it awaits.
// Variants are named after the packets awaited.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awaiting {
    /// QoS 1 sent, waiting for PUBACK.
    PubAck,
    /// QoS 2 sent, waiting for PUBREC.
    PubRec,
    /// PUBREL sent, waiting for PUBCOMP (the message itself is no longer needed).
    PubComp,
}

#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    pub packet_id: NonZeroU16,
    pub outgoing: Outgoing,
    pub awaiting: Awaiting,
    /// The PUBLISH still has to be resent on the current connection: after a reconnect, more
    /// messages were in flight than the new connection's Receive Maximum allows at once.
    pub resend: bool,
}

/// A will waiting for its connection to end (boxed in the session: most have none).
#[derive(Debug, Clone)]
pub(crate) struct PendingWill {
    pub message: SharedMessage,
    pub delay_secs: u32,
    /// Its connection ended: published at this time (after the will delay).
    pub due: Option<Instant>,
}

/// What a session has in progress: most sessions, most of the time, have none of it, so a
/// [`Session`] holds it boxed and only while some of it is there (136 B less per idle session).
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// Outbound QoS 1/2 messages sent and not yet completed, oldest first (a deque: they are
    /// mostly acknowledged in order, so the oldest leaves without moving the rest).
    pub inflight: VecDeque<Inflight>,
    /// Some inflight message may still be marked `resend`: set with the mark, cleared when a
    /// search finds none, so that an acknowledgement does not search a full window for one.
    pub resend_pending: bool,
    /// Some inflight message may have a packet identifier at or above the session's
    /// `next_packet_id` (the identifiers wrapped around while it was in flight, or the window
    /// was restored from persistence), so a new identifier is checked against the window.
    /// Otherwise every inflight identifier is below `next_packet_id` and it is free.
    pub ids_may_repeat: bool,
    /// Messages waiting for the connection or for room in the inflight window.
    pub queue: VecDeque<Outgoing>,
    pub queued_bytes: usize,
    /// Inbound QoS 2 packet identifiers received and not yet released by PUBREL.
    pub inbound_qos2: Vec<u16>,
    /// Publisher connections held back because this session is behind (flow control).
    pub waiters: Vec<ConnId>,
    /// Its subscriptions, kept for persistence snapshots (only while `persisted`).
    pub subscriptions: Vec<(Box<str>, crate::SubscriptionOptions, Option<u32>)>,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.inflight.is_empty()
            && self.queue.is_empty()
            && self.inbound_qos2.is_empty()
            && self.waiters.is_empty()
            && self.subscriptions.is_empty()
    }
}

/// The backlog of every session that has none.
static NO_BACKLOG: Backlog = Backlog {
    inflight: VecDeque::new(),
    resend_pending: false,
    ids_may_repeat: false,
    queue: VecDeque::new(),
    queued_bytes: 0,
    inbound_qos2: Vec::new(),
    waiters: Vec::new(),
    subscriptions: Vec::new(),
};

/// One client's session.
#[derive(Debug)]
pub(crate) struct Session {
    pub client_id: Box<str>,
    /// Changes at every connect and disconnect, so that stale timers are recognised.
    pub epoch: u32,
    pub conn: Option<ConnId>,
    pub username: Option<Box<str>>,
    pub listener: u16,
    pub expiry_secs: u32,
    /// Messages in flight and waiting, and the subscriptions of a persisted session; `None`
    /// while all of it is empty (see [`Backlog`]).
    pub backlog: Option<Box<Backlog>>,
    pub next_packet_id: u16,
    pub will: Option<Box<PendingWill>>,
    /// While connected: when the client last acknowledged something or the port took its
    /// output (the stall checks). While disconnected: when its last connection ended (expiry
    /// and wills across restarts). One field for both, never needed at once: 8 B less in every
    /// session took it from the allocators' 112 B class to 96 B.
    pub since: Instant,
    /// Whether a stall check timer is pending for this session.
    pub stall_check_armed: bool,
    /// Whether this session asked other workers to hold back their publishers.
    pub remote_pressure: bool,
    /// Its state is written as persistence records (persistence on, expiry above 0).
    pub persisted: bool,
}

impl Session {
    pub fn new(client_id: Box<str>) -> Self {
        Session {
            client_id,
            epoch: 0,
            conn: None,
            username: None,
            listener: 0,
            expiry_secs: 0,
            backlog: None,
            next_packet_id: 1,
            will: None,
            since: Instant(0),
            stall_check_armed: false,
            remote_pressure: false,
            persisted: false,
        }
    }

    /// What the session has in progress (empty when it has nothing).
    pub fn backlog(&self) -> &Backlog {
        self.backlog.as_deref().unwrap_or(&NO_BACKLOG)
    }

    /// The backlog, to change: allocated on first use.
    pub fn backlog_mut(&mut self) -> &mut Backlog {
        self.backlog.get_or_insert_with(Box::default)
    }

    /// Releases the backlog if it has become empty, or the spare room of its parts otherwise.
    pub fn tidy(&mut self) {
        let Some(backlog) = self.backlog.as_deref_mut() else {
            return;
        };
        if backlog.is_empty() {
            self.backlog = None;
            return;
        }
        backlog.inflight.shrink_to_fit();
        backlog.queue.shrink_to_fit();
        backlog.inbound_qos2.shrink_to_fit();
        backlog.waiters.shrink_to_fit();
    }

    /// A packet identifier not used by any inflight message `[MQTT-2.2.1-3]`: the next in
    /// sequence, checked against the window only while identifiers may repeat (see
    /// [`Backlog::ids_may_repeat`]), so a full window of 128 is not searched for every
    /// PUBLISH. The window is smaller than 65,535 (a PUBLISH waits while it is full), so one
    /// is always free.
    pub fn allocate_packet_id(&mut self) -> NonZeroU16 {
        loop {
            let candidate = self.next_packet_id;
            self.next_packet_id = candidate.checked_add(1).unwrap_or(1);
            let free = match (NonZeroU16::new(candidate), self.backlog.as_deref_mut()) {
                (None, _) => None,
                (Some(id), Some(backlog)) if backlog.ids_may_repeat => {
                    let (mut taken, mut above) = (false, false);
                    for entry in &backlog.inflight {
                        taken |= entry.packet_id == id;
                        above |= entry.packet_id > id;
                    }
                    if !above {
                        // Every identifier in flight is below this one again.
                        backlog.ids_may_repeat = false;
                    }
                    (!taken).then_some(id)
                }
                (Some(id), _) => Some(id),
            };
            if self.next_packet_id == 1 {
                // Wrapped: the identifiers in flight (and this one) are now above the next.
                self.backlog_mut().ids_may_repeat = true;
            }
            if let Some(id) = free {
                return id;
            }
        }
    }

    pub fn inflight_position(&self, packet_id: NonZeroU16, awaiting: Awaiting) -> Option<usize> {
        self.backlog()
            .inflight
            .iter()
            .position(|entry| entry.packet_id == packet_id && entry.awaiting == awaiting)
    }

    pub fn pop_queued(&mut self) -> Option<Outgoing> {
        let backlog = self.backlog.as_deref_mut()?;
        let outgoing = backlog.queue.pop_front()?;
        backlog.queued_bytes -= outgoing.size();
        Some(outgoing)
    }
}

#[cfg(test)]
mod tests {
    use super::super::message::Message;
    use super::*;
    use alloc::sync::Arc;

    #[test]
    fn a_session_holds_a_backlog_only_while_it_has_one() {
        let mut session = Session::new(Box::from("client"));
        assert!(session.backlog.is_none());
        assert!(session.backlog().waiters.is_empty());
        session.backlog_mut().inbound_qos2.push(7);
        session.tidy();
        assert_eq!(session.backlog().inbound_qos2, [7]);
        session.backlog_mut().inbound_qos2.clear();
        session.tidy();
        assert!(session.backlog.is_none());
        // Popping from an empty queue does not allocate one.
        assert!(session.pop_queued().is_none());
        assert!(session.backlog.is_none());
    }

    fn in_flight(session: &mut Session, packet_id: NonZeroU16) {
        let message = Arc::new(Message::new("t", b"", QoS::AtLeastOnce, false, Instant(0)));
        session.backlog_mut().inflight.push_back(Inflight {
            packet_id,
            outgoing: Outgoing {
                message,
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Box::default(),
                seq: 0,
            },
            awaiting: Awaiting::PubAck,
            resend: false,
        });
    }

    #[test]
    fn packet_ids_in_flight_are_skipped_after_the_identifiers_wrap_around() {
        let mut session = Session::new(Box::from("client"));
        session.next_packet_id = 65_533;
        // Two messages stay in flight across the wrap (65,533 and 65,534); the rest are
        // acknowledged as soon as they are sent, in order.
        for _ in 0..2 {
            let id = session.allocate_packet_id();
            in_flight(&mut session, id);
        }
        let mut seen = Vec::new();
        for _ in 0..(2 * 65_535) {
            let id = session.allocate_packet_id();
            assert!(
                session.backlog().inflight.iter().all(|e| e.packet_id != id),
                "{id} is in flight"
            );
            seen.push(id.get());
            in_flight(&mut session, id);
            session.backlog_mut().inflight.pop_back();
        }
        assert!(!seen.contains(&65_533) && !seen.contains(&65_534));
        assert!(seen.contains(&65_535) && seen.contains(&1));
        // Once the long-held ones are acknowledged, their identifiers are used again.
        session.backlog_mut().inflight.clear();
        let reused: Vec<u16> = (0..65_535)
            .map(|_| session.allocate_packet_id().get())
            .collect();
        assert!(reused.contains(&65_533) && reused.contains(&65_534));
    }

    #[test]
    fn a_restored_window_is_checked_before_its_identifiers_are_reused() {
        let mut session = Session::new(Box::from("client"));
        // As restored: identifiers out of order, the next one among them.
        for id in [9, 3, 5] {
            in_flight(&mut session, NonZeroU16::new(id).unwrap());
        }
        session.backlog_mut().ids_may_repeat = true;
        session.next_packet_id = 3;
        let ids: Vec<u16> = (0..4).map(|_| session.allocate_packet_id().get()).collect();
        assert_eq!(ids, [4, 6, 7, 8]);
        // Past the highest in flight, no more searching.
        assert_eq!(session.allocate_packet_id().get(), 10);
        assert!(!session.backlog().ids_may_repeat);
    }

    /// Every session, connected or not, holds this much: a growth here is a growth of the
    /// memory per client, so it is a deliberate change of this bound.
    #[test]
    fn a_session_stays_small() {
        assert!(core::mem::size_of::<Session>() <= 88);
    }
}
