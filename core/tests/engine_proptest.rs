//! Property test: random valid client behaviour (connects, takeovers, subscribes, publishes at
//! every QoS, partial acknowledgements, drops, DISCONNECTs, time passing) by several clients
//! with persistent sessions, checking after every step and at the end:
//! - the broker never has more unacknowledged QoS 1/2 messages to a client than its Receive
//!   Maximum `[MQTT-3.3.4-9]`, never resends a PUBLISH on the same connection `[MQTT-4.4.0-1]`
//!   and never resends a QoS 2 PUBLISH once PUBREC reached it `[MQTT-4.3.3-6]`;
//! - no QoS 2 message reaches a subscriber's application twice;
//! - no QoS 1/2 message is lost: every message published while a matching subscription of QoS
//!   1 or 2 existed reaches the subscriber once it stays connected and acknowledges;
//! - per publisher, topic and QoS, first deliveries keep the publishing order `[MQTT-4.6.0-6]`;
//! - when every session ends, the broker is back to its baseline.

mod sim;

use std::collections::{BTreeMap, BTreeSet};

use femtomq_core::topic::filter_matches;
use proptest::prelude::*;
use sim::*;

const CLIENTS: usize = 4;
const TOPICS: [&str; 3] = ["t/a", "t/b", "u/a"];
const FILTERS: [&str; 5] = ["t/a", "t/+", "t/#", "+/a", "#"];

#[derive(Debug, Clone)]
enum Action {
    Connect {
        client: usize,
        receive_maximum: u16,
    },
    Subscribe {
        client: usize,
        filter: usize,
        qos: u8,
    },
    Unsubscribe {
        client: usize,
        filter: usize,
    },
    Publish {
        client: usize,
        topic: usize,
        qos: u8,
        retain: bool,
    },
    /// Acknowledge the first `count` outstanding messages (0: all), and release PUBRELs.
    Ack {
        client: usize,
        count: usize,
    },
    /// Release (PUBREL) this client's own QoS 2 publications.
    Release {
        client: usize,
    },
    /// Resend the client's unreleased QoS 2 publications with DUP.
    ResendQos2 {
        client: usize,
    },
    Drop {
        client: usize,
    },
    Disconnect {
        client: usize,
    },
    Advance {
        millis: u64,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let client = 0..CLIENTS;
    prop_oneof![
        2 => (client.clone(), 1u16..6).prop_map(|(client, receive_maximum)| Action::Connect { client, receive_maximum }),
        3 => (client.clone(), 0..FILTERS.len(), 0u8..3).prop_map(|(client, filter, qos)| Action::Subscribe { client, filter, qos }),
        1 => (client.clone(), 0..FILTERS.len()).prop_map(|(client, filter)| Action::Unsubscribe { client, filter }),
        8 => (client.clone(), 0..TOPICS.len(), 0u8..3, prop::bool::weighted(0.1)).prop_map(|(client, topic, qos, retain)| Action::Publish { client, topic, qos, retain }),
        5 => (client.clone(), 0usize..4).prop_map(|(client, count)| Action::Ack { client, count }),
        1 => client.clone().prop_map(|client| Action::Release { client }),
        1 => client.clone().prop_map(|client| Action::ResendQos2 { client }),
        1 => client.clone().prop_map(|client| Action::Drop { client }),
        1 => client.clone().prop_map(|client| Action::Disconnect { client }),
        1 => (0u64..20_000).prop_map(|millis| Action::Advance { millis }),
    ]
}

fn qos_of(n: u8) -> QoS {
    QoS::from_u8(n).unwrap_or_default()
}

#[derive(Debug, Default)]
struct Model {
    client: Option<Client>,
    version: Option<ProtocolVersion>,
    receive_maximum: u16,
    /// Subscriptions as the broker has them (SUBACK seen).
    subscriptions: BTreeMap<&'static str, QoS>,
    /// QoS 1/2 PUBLISH received on the current connection and not yet PUBACK'd / PUBREC'd.
    unacked: BTreeMap<u16, QoS>,
    /// Session state: QoS 2 ids received and not completed (PUBCOMP sent); true once PUBREC
    /// was sent.
    qos2: BTreeMap<u16, bool>,
    /// PUBREL received, PUBCOMP to send.
    to_complete: Vec<u16>,
    /// As a publisher: QoS 2 publications acknowledged by PUBREC, PUBREL not yet sent.
    unreleased: Vec<(u16, PublishSpec)>,
    /// Application deliveries: (payload, QoS as delivered).
    delivered: Vec<(String, QoS)>,
    /// Payloads that must arrive (QoS 1/2 matching a subscription when published).
    required: BTreeSet<String>,
    next_id: u16,
    sequence: u32,
}

impl Model {
    fn connected(&self, sim: &Sim) -> bool {
        self.client.is_some_and(|c| !sim.is_closed(c))
    }

    fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.unreleased.iter().any(|(id, _)| *id == self.next_id) {
                return self.next_id;
            }
        }
    }
}

struct World {
    sim: Sim,
    models: Vec<Model>,
}

impl World {
    fn new(versions: &[bool]) -> Self {
        let mut config = events_config();
        config.limits.max_inflight = 16;
        let mut models: Vec<Model> = (0..CLIENTS).map(|_| Model::default()).collect();
        for (model, &v5) in models.iter_mut().zip(versions) {
            model.version = Some(if v5 { V5 } else { V311 });
        }
        World {
            sim: Sim::new(config),
            models,
        }
    }

    fn spec(&self, i: usize) -> ConnectSpec {
        let version = self.models[i].version.unwrap_or(V5);
        let mut spec = ConnectSpec::new(version, &format!("c{i}")).persistent(3600);
        if version.is_v5() {
            spec = spec.receive_maximum(self.models[i].receive_maximum);
        }
        spec
    }

    /// Processes everything client `i` received, checking the broker's obligations.
    fn receive(&mut self, i: usize) {
        let Some(c) = self.models[i].client else {
            return;
        };
        let inbox = self.sim.take(c);
        if std::env::var_os("SIM_TRACE").is_some() {
            for rx in &inbox {
                eprintln!("  c{i} <- {rx:?}");
            }
        }
        let window = if self.models[i].version == Some(V5) {
            self.models[i].receive_maximum.min(16)
        } else {
            16
        };
        let model = &mut self.models[i];
        for rx in inbox {
            match rx {
                Rx::Publish(p) => {
                    let mut payload = String::from_utf8(p.payload.clone()).unwrap_or_default();
                    if p.retain {
                        // A retained copy sent for a SUBSCRIBE (3.1.1 has no Retain Handling):
                        // a publication of its own, outside the once-only and order checks.
                        payload.push_str(":retained");
                    }
                    let Some(id) = p.packet_id else {
                        model.delivered.push((payload, QoS::AtMostOnce));
                        continue;
                    };
                    assert!(
                        !model.unacked.contains_key(&id),
                        "c{i}: PUBLISH {id} resent on the same connection [MQTT-4.4.0-1]"
                    );
                    model.unacked.insert(id, p.qos);
                    if p.qos == QoS::ExactlyOnce {
                        match model.qos2.get(&id) {
                            Some(true) => {
                                panic!(
                                    "c{i}: QoS 2 PUBLISH {id} resent after PUBREC [MQTT-4.3.3-6]"
                                )
                            }
                            // Received before, PUBREC not sent: a duplicate, not delivered.
                            Some(false) => assert!(p.dup, "c{i}: resent QoS 2 without DUP"),
                            None => {
                                model.qos2.insert(id, false);
                                model.delivered.push((payload, p.qos));
                            }
                        }
                    } else {
                        model.delivered.push((payload, p.qos));
                    }
                    let outstanding = model.unacked.len()
                        + model
                            .qos2
                            .iter()
                            .filter(|(id, rec)| **rec && !model.unacked.contains_key(id))
                            .count();
                    assert!(
                        outstanding <= usize::from(window),
                        "c{i}: {outstanding} unacknowledged > Receive Maximum {window} [MQTT-3.3.4-9]"
                    );
                }
                Rx::PubRel(id, reason) => {
                    assert_eq!(reason, ReasonCode::SUCCESS);
                    assert_eq!(
                        model.qos2.get(&id),
                        Some(&true),
                        "c{i}: PUBREL {id} before PUBREC"
                    );
                    if !model.to_complete.contains(&id) {
                        model.to_complete.push(id);
                    }
                }
                Rx::PubRec(id, reason) => {
                    assert!(!reason.is_error(), "c{i}: PUBREC {id} {reason:?}");
                    if let Some(position) = model.unreleased.iter().position(|(u, _)| *u == id) {
                        // A resent PUBLISH acknowledged again.
                        let _ = position;
                    } else {
                        panic!("c{i}: PUBREC for unknown {id}");
                    }
                }
                Rx::PubAck(_, reason) | Rx::PubComp(_, reason) => {
                    assert!(!reason.is_error(), "c{i}: {reason:?}");
                }
                Rx::Disconnect(reason) => {
                    assert_eq!(
                        reason,
                        ReasonCode::SESSION_TAKEN_OVER,
                        "c{i}: unexpected DISCONNECT"
                    );
                }
                other => panic!("c{i}: unexpected {other:?}"),
            }
        }
    }

    fn receive_all(&mut self) {
        for i in 0..CLIENTS {
            self.receive(i);
        }
    }

    fn connect(&mut self, i: usize, receive_maximum: u16) {
        self.receive(i);
        self.models[i].receive_maximum = receive_maximum;
        let first = self.models[i].client.is_none();
        let spec = self.spec(i);
        let version = spec.version;
        let c = match self.models[i].client {
            Some(c) if self.sim.is_closed(c) => {
                self.sim.reopen(c);
                c
            }
            // A takeover (or the first connection): a new network connection.
            _ => self.sim.open(version),
        };
        self.sim.set_acks(c, Acks::Manual);
        let rx = self.sim.connect_raw(c, &spec);
        let Some(Rx::ConnAck(ack)) = rx.first() else {
            panic!("c{i}: no CONNACK: {rx:?}");
        };
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        assert_eq!(ack.session_present, !first, "c{i}: persistent session");
        if let Some(old) = self.models[i].client.filter(|&old| old != c) {
            // The taken-over connection: what it got before the takeover counts as received.
            self.receive(i);
            assert!(self.sim.is_closed(old));
        }
        self.models[i].client = Some(c);
        self.models[i].unacked.clear();
        self.sim.clients[c.0].inbox = rx[1..].to_vec();
        self.receive(i);
        // The client resends PUBREL for its PUBREC'd publications [MQTT-4.4.0-1].
        self.release(i);
    }

    fn release(&mut self, i: usize) {
        let Some(c) = self.models[i]
            .client
            .filter(|_| self.models[i].connected(&self.sim))
        else {
            return;
        };
        for (id, _) in std::mem::take(&mut self.models[i].unreleased) {
            self.sim.pubrel(c, id);
            self.receive_all();
        }
    }

    fn ack(&mut self, i: usize, count: usize) {
        let Some(c) = self.models[i]
            .client
            .filter(|_| self.models[i].connected(&self.sim))
        else {
            return;
        };
        let ids: Vec<(u16, QoS)> = self.models[i]
            .unacked
            .iter()
            .map(|(id, qos)| (*id, *qos))
            .take(if count == 0 { usize::MAX } else { count })
            .collect();
        for (id, qos) in ids {
            self.models[i].unacked.remove(&id);
            if qos == QoS::ExactlyOnce {
                self.models[i].qos2.insert(id, true);
                self.sim.pubrec(c, id);
            } else {
                self.sim.puback(c, id);
            }
            self.receive_all();
        }
        for id in std::mem::take(&mut self.models[i].to_complete) {
            self.models[i].qos2.remove(&id);
            self.sim.pubcomp(c, id);
            self.receive_all();
        }
    }

    fn publish(&mut self, i: usize, topic: usize, qos: QoS, retain: bool) {
        if !self.models[i].connected(&self.sim) {
            return;
        }
        if self.models[i].unreleased.len() >= 8 {
            self.release(i);
        }
        let Some(c) = self.models[i].client else {
            return;
        };
        let topic = TOPICS[topic];
        self.models[i].sequence += 1;
        let payload = format!("c{i}:{topic}:{}", self.models[i].sequence);
        // Who must get it: subscribers with a matching subscription of QoS 1 or 2, when the
        // delivered QoS is 1 or 2. Retained copies to later subscribers are not required.
        for model in &mut self.models {
            let granted = model
                .subscriptions
                .iter()
                .filter(|(filter, _)| filter_matches(filter, topic))
                .map(|(_, &qos)| qos)
                .max();
            if granted.is_some_and(|g| g.min(qos) != QoS::AtMostOnce) {
                model.required.insert(payload.clone());
            }
        }
        let mut spec = PublishSpec::new(topic, payload.as_bytes(), qos);
        spec.retain = retain;
        if qos != QoS::AtMostOnce {
            spec.packet_id = Some(self.models[i].next_packet_id());
        }
        self.sim.publish_spec(c, &spec);
        if qos == QoS::ExactlyOnce {
            let id = spec.packet_id.unwrap_or(1);
            self.models[i].unreleased.push((id, spec));
        }
        self.receive_all();
    }

    fn step(&mut self, action: &Action) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("{action:?}");
        }
        match *action {
            Action::Connect {
                client,
                receive_maximum,
            } => self.connect(client, receive_maximum),
            Action::Subscribe {
                client,
                filter,
                qos,
            } => {
                if let Some(c) = self.models[client]
                    .client
                    .filter(|_| self.models[client].connected(&self.sim))
                {
                    let filter = FILTERS[filter];
                    let qos = qos_of(qos);
                    // Retain Handling 2 keeps retained copies out of the accounting.
                    let options = SubscriptionOptions {
                        retain_handling: RetainHandling::DoNotSend,
                        ..opts(qos)
                    };
                    let code = self.sim.subscribe_opts(c, filter, options);
                    assert_eq!(code, ReasonCode(qos as u8));
                    self.models[client].subscriptions.insert(filter, qos);
                    self.receive_all();
                }
            }
            Action::Unsubscribe { client, filter } => {
                if let Some(c) = self.models[client]
                    .client
                    .filter(|_| self.models[client].connected(&self.sim))
                {
                    let filter = FILTERS[filter];
                    let had = self.models[client].subscriptions.remove(filter).is_some();
                    let codes = self.sim.unsubscribe(c, &[filter]);
                    let expected = if had {
                        ReasonCode::SUCCESS
                    } else {
                        ReasonCode::NO_SUBSCRIPTION_EXISTED
                    };
                    if self.models[client].version == Some(V5) {
                        assert_eq!(codes, [expected]);
                    }
                    self.receive_all();
                }
            }
            Action::Publish {
                client,
                topic,
                qos,
                retain,
            } => self.publish(client, topic, qos_of(qos), retain),
            Action::Ack { client, count } => self.ack(client, count),
            Action::Release { client } => self.release(client),
            Action::ResendQos2 { client } => {
                if let Some(c) = self.models[client]
                    .client
                    .filter(|_| self.models[client].connected(&self.sim))
                {
                    let specs: Vec<PublishSpec> = self.models[client]
                        .unreleased
                        .iter()
                        .map(|(_, s)| s.clone())
                        .collect();
                    for spec in specs {
                        self.sim.publish_spec(c, &PublishSpec { dup: true, ..spec });
                        self.receive_all();
                    }
                }
            }
            Action::Drop { client } => {
                if let Some(c) = self.models[client].client {
                    self.receive(client);
                    self.sim.drop_connection(c);
                }
            }
            Action::Disconnect { client } => {
                if let Some(c) = self.models[client]
                    .client
                    .filter(|_| self.models[client].connected(&self.sim))
                {
                    self.receive(client);
                    self.sim.disconnect(c, ReasonCode::SUCCESS);
                }
            }
            Action::Advance { millis } => {
                self.sim.advance(millis);
                self.receive_all();
            }
        }
    }

    /// Everyone connects and acknowledges everything until nothing moves.
    fn settle(&mut self) {
        for i in 0..CLIENTS {
            if !self.models[i].connected(&self.sim) && self.models[i].client.is_some() {
                self.connect(i, 16);
            }
        }
        for _ in 0..1000 {
            for i in 0..CLIENTS {
                self.release(i);
                self.ack(i, 0);
            }
            let idle = self.models.iter().all(|m| {
                m.unacked.is_empty() && m.to_complete.is_empty() && m.unreleased.is_empty()
            });
            if idle {
                return;
            }
        }
        panic!("the world does not settle");
    }

    fn check(&self) {
        for (i, model) in self.models.iter().enumerate() {
            let got: BTreeSet<&str> = model
                .delivered
                .iter()
                .map(|(p, _)| p.trim_end_matches(":retained"))
                .collect();
            for payload in &model.required {
                assert!(got.contains(payload.as_str()), "c{i} lost {payload}");
            }
            // No QoS 2 message twice.
            let mut qos2 = BTreeSet::new();
            for (payload, qos) in &model.delivered {
                if *qos == QoS::ExactlyOnce && !payload.ends_with(":retained") {
                    assert!(qos2.insert(payload), "c{i} got QoS 2 {payload} twice");
                }
            }
            // Order of first deliveries per publisher, topic and QoS.
            let mut last: BTreeMap<(String, String, QoS), u32> = BTreeMap::new();
            let mut seen = BTreeSet::new();
            for (payload, qos) in &model.delivered {
                if *qos == QoS::AtMostOnce
                    || payload.ends_with(":retained")
                    || !seen.insert(payload.clone())
                {
                    continue;
                }
                let mut parts = payload.rsplitn(2, ':');
                let sequence: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let source = parts.next().unwrap_or("").to_string();
                let (publisher, topic) = source.split_once(':').unwrap_or(("", ""));
                let key = (publisher.to_string(), topic.to_string(), *qos);
                if let Some(&previous) = last.get(&key) {
                    assert!(
                        previous < sequence,
                        "c{i}: {payload} after {previous} (out of order)"
                    );
                }
                last.insert(key, sequence);
            }
        }
        let lost = self.sim.events.iter().any(|e| {
            matches!(
                e,
                Event::MessageDropped {
                    reason: DropReason::QueueFull | DropReason::Expired | DropReason::TooLarge,
                    ..
                }
            )
        });
        assert!(!lost, "no drop but offline QoS 0 within the limits");
    }

    /// Ends every session and checks nothing is left.
    fn end_all(&mut self) {
        for i in 0..CLIENTS {
            let Some(_) = self.models[i].client else {
                continue;
            };
            let version = self.models[i].version.unwrap_or(V5);
            if !self.models[i].connected(&self.sim) {
                self.connect(i, 16);
            }
            let c = self.models[i].client.unwrap_or(Client(0));
            if version.is_v5() {
                self.sim.disconnect_with_expiry(c, ReasonCode::SUCCESS, 0);
            } else {
                // A clean session replaces the persistent one and ends with its connection.
                self.sim.disconnect(c, ReasonCode::SUCCESS);
                self.sim.reopen(c);
                let rx = self
                    .sim
                    .connect_raw(c, &ConnectSpec::v311(&format!("c{i}")));
                assert!(
                    matches!(rx.first(), Some(Rx::ConnAck(a)) if a.reason == ReasonCode::SUCCESS)
                );
                self.sim.disconnect(c, ReasonCode::SUCCESS);
            }
            assert_eq!(self.sim.broker.queued_messages(&format!("c{i}")), None);
        }
        self.sim.assert_baseline();
    }
}

fn run(versions: &[bool], actions: &[Action]) {
    let mut world = World::new(versions);
    for action in actions {
        world.step(action);
    }
    world.settle();
    world.check();
    world.end_all();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_clients_keep_the_delivery_guarantees(
        versions in prop::collection::vec(prop::bool::weighted(0.7), CLIENTS),
        actions in prop::collection::vec(action(), 1..80),
    ) {
        run(&versions, &actions);
    }
}

#[test]
fn a_fixed_scenario_with_every_action_passes() {
    use Action::*;
    let actions = [
        Connect {
            client: 0,
            receive_maximum: 2,
        },
        Connect {
            client: 1,
            receive_maximum: 1,
        },
        Subscribe {
            client: 0,
            filter: 4,
            qos: 2,
        },
        Subscribe {
            client: 1,
            filter: 1,
            qos: 1,
        },
        Publish {
            client: 1,
            topic: 0,
            qos: 2,
            retain: false,
        },
        Publish {
            client: 1,
            topic: 0,
            qos: 1,
            retain: true,
        },
        Publish {
            client: 1,
            topic: 1,
            qos: 2,
            retain: false,
        },
        ResendQos2 { client: 1 },
        Ack {
            client: 0,
            count: 1,
        },
        Drop { client: 0 },
        Publish {
            client: 1,
            topic: 2,
            qos: 1,
            retain: false,
        },
        Connect {
            client: 0,
            receive_maximum: 1,
        },
        Connect {
            client: 0,
            receive_maximum: 3,
        },
        Advance { millis: 5_000 },
        Ack {
            client: 0,
            count: 0,
        },
        Release { client: 1 },
        Unsubscribe {
            client: 1,
            filter: 1,
        },
        Disconnect { client: 1 },
        Publish {
            client: 0,
            topic: 1,
            qos: 2,
            retain: false,
        },
    ];
    run(&[true, false, true, true], &actions);
}
