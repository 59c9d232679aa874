//! CONNECT, CONNACK, keep alive, takeover, DISCONNECT and shutdown, in MQTT 5 and 3.1.1,
//! through the simulation harness. Test names carry the normative statement they check.

mod sim;

use sim::*;

fn connack(rx: &[Rx]) -> &RxConnAck {
    match rx.first() {
        Some(Rx::ConnAck(ack)) => ack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn closed_causes(sim: &Sim) -> Vec<CloseCause> {
    sim.events
        .iter()
        .filter_map(|e| match e {
            Event::ClientDisconnected { cause, .. } => Some(*cause),
            _ => None,
        })
        .collect()
}

// ----- CONNECT / CONNACK ------------------------------------------------------------------------

#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level_gets_return_code_1_and_close() {
    let mut sim = Sim::default_v();
    let c = sim.open(V5);
    let mut bytes = ConnectSpec::v5("a").encode();
    // Fixed header (2 bytes), protocol name (2 + 4 bytes), then the level.
    assert_eq!(bytes[8], 5);
    bytes[8] = 6;
    sim.clients[c.0].version = V311;
    sim.feed(c, &bytes);
    // A 3.1.1-shaped CONNACK: return code 1, unacceptable protocol version (0x84 in MQTT 5).
    assert_eq!(
        sim.take(c),
        [Rx::ConnAck(RxConnAck {
            reason: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            ..RxConnAck::default()
        })]
    );
    assert!(sim.is_closed(c));
    assert_eq!(
        closed_causes(&sim),
        [CloseCause::Refused(
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
        )]
    );
}

#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level_wire_bytes() {
    let mut broker = Broker::new(Config::default(), 1);
    let conn = broker.open(0, T0);
    let mut bytes = ConnectSpec::v311("a").encode();
    bytes[8] = 9;
    assert_eq!(broker.handle_input(conn, &bytes, T0), bytes.len());
    assert_eq!(broker.output(conn), [0x20, 0x02, 0x00, 0x01]);
    assert!(broker.is_closing(conn));
}

#[test]
fn mqtt_3_1_3_8_v311_empty_client_id_without_clean_session_gets_return_code_2() {
    let mut broker = Broker::new(Config::default(), 1);
    let conn = broker.open(0, T0);
    let bytes = ConnectSpec::v311("").clean(false).encode();
    broker.handle_input(conn, &bytes, T0);
    assert_eq!(broker.output(conn), [0x20, 0x02, 0x00, 0x02]);
    assert!(broker.is_closing(conn));
    assert_eq!(broker.stats().sessions, 0);
}

#[test]
fn mqtt_3_1_3_8_v311_empty_client_id_with_clean_session_is_accepted() {
    let mut sim = Sim::default_v();
    let (_, ack) = sim.connect_ack(&ConnectSpec::v311(""));
    assert!(!ack.session_present);
    // MQTT 3.1.1 has no way to tell the client its identifier.
    assert_eq!(ack.assigned_client_identifier, None);
    assert_eq!(sim.broker.stats().sessions, 1);
}

#[test]
fn mqtt_3_1_3_7_v5_empty_client_id_gets_a_unique_assigned_client_identifier() {
    let mut sim = Sim::default_v();
    let (a, ack_a) = sim.connect_ack(&ConnectSpec::v5(""));
    let (_, ack_b) = sim.connect_ack(&ConnectSpec::v5(""));
    let id_a = ack_a.assigned_client_identifier.expect("assigned id");
    let id_b = ack_b.assigned_client_identifier.expect("assigned id");
    assert!(!id_a.is_empty());
    assert_ne!(id_a, id_b);
    // The session is known under that identifier.
    assert_eq!(sim.broker.queued_messages(&id_a), Some(0));
    let connected: Vec<_> = sim.events_matching(|e| matches!(e, Event::ClientConnected { .. }));
    assert!(matches!(
        &connected[0],
        Event::ClientConnected { client_id, conn, .. } if **client_id == *id_a && *conn == sim.conn(a)
    ));
    // A client that sent its own identifier is not told one.
    let (_, ack_c) = sim.connect_ack(&ConnectSpec::v5("given"));
    assert_eq!(ack_c.assigned_client_identifier, None);
}

#[test]
fn mqtt_3_2_2_connack_announces_the_broker_limits_in_v5() {
    let mut config = events_config();
    config.limits.max_inflight = 7;
    config.limits.max_packet_size = 4096;
    config.topic_alias_maximum = 3;
    config.retain_available = false;
    let mut sim = Sim::new(config);
    let (_, ack) = sim.connect_ack(&ConnectSpec::v5("a"));
    assert_eq!(ack.receive_maximum, Some(7));
    assert_eq!(ack.maximum_packet_size, Some(4096));
    assert_eq!(ack.topic_alias_maximum, Some(3));
    assert_eq!(ack.retain_available, Some(false));
    assert_eq!(ack.server_keep_alive, None);
}

#[test]
fn connack_0x97_quota_exceeded_when_max_connections_is_reached_v5() {
    let mut config = events_config();
    config.limits.max_connections = 2;
    let mut sim = Sim::new(config);
    sim.connect(ConnectSpec::v5("a"));
    sim.connect(ConnectSpec::v5("b"));
    let c = sim.open(V5);
    let rx = sim.connect_raw(c, &ConnectSpec::v5("c"));
    assert_eq!(connack(&rx).reason, ReasonCode::QUOTA_EXCEEDED);
    assert!(!connack(&rx).session_present);
    assert!(sim.is_closed(c));
    assert_eq!(sim.broker.stats().connected, 2);
    assert_eq!(sim.broker.stats().sessions, 2);
}

#[test]
fn connack_return_code_3_server_unavailable_when_max_connections_is_reached_v311() {
    let mut config = events_config();
    config.limits.max_connections = 1;
    let mut sim = Sim::new(config);
    sim.connect(ConnectSpec::v311("a"));
    let mut broker_bytes = Vec::new();
    let conn = sim.broker.open(0, sim.now);
    sim.broker
        .handle_input(conn, &ConnectSpec::v311("b").encode(), sim.now);
    broker_bytes.extend_from_slice(sim.broker.output(conn));
    assert_eq!(broker_bytes, [0x20, 0x02, 0x00, 0x03]);
    assert!(sim.broker.is_closing(conn));
}

#[test]
fn mqtt_3_2_2_21_server_keep_alive_replaces_a_keep_alive_above_the_maximum() {
    let config = Config {
        max_keep_alive: Some(60),
        ..events_config()
    };
    let mut sim = Sim::new(config);
    let (a, ack) = sim.connect_ack(&ConnectSpec::v5("a").keep_alive(600));
    assert_eq!(ack.server_keep_alive, Some(60));
    // Zero (no keep alive) is above any maximum too.
    let (_, ack) = sim.connect_ack(&ConnectSpec::v5("b").keep_alive(0));
    assert_eq!(ack.server_keep_alive, Some(60));
    // Within the maximum: no Server Keep Alive, the client's value stands [MQTT-3.2.2-22].
    let (_, ack) = sim.connect_ack(&ConnectSpec::v5("c").keep_alive(30));
    assert_eq!(ack.server_keep_alive, None);
    // The server enforces the value it announced: 1.5 x 60 s.
    sim.advance(89_000);
    assert!(!sim.is_closed(a));
    sim.advance(1_000);
    assert!(sim.is_closed(a));
    assert_eq!(
        sim.take(a),
        [Rx::Disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT)]
    );
}

#[test]
fn v311_keep_alive_above_the_maximum_is_refused_with_return_code_2() {
    let config = Config {
        max_keep_alive: Some(60),
        ..events_config()
    };
    let mut sim = Sim::new(config);
    let c = sim.open(V311);
    let rx = sim.connect_raw(c, &ConnectSpec::v311("a").keep_alive(61));
    assert_eq!(connack(&rx).reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(sim.is_closed(c));
}

#[test]
fn client_id_longer_than_the_maximum_is_refused_with_0x85() {
    let config = Config {
        max_client_id_length: 8,
        ..events_config()
    };
    let mut sim = Sim::new(config);
    let c = sim.open(V5);
    let rx = sim.connect_raw(c, &ConnectSpec::v5("123456789"));
    assert_eq!(connack(&rx).reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(sim.is_closed(c));
    sim.connect(ConnectSpec::v5("12345678"));
}

#[test]
fn mqtt_3_1_0_1_a_first_packet_other_than_connect_closes_the_connection() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let c = sim.open(version);
        sim.send(c, Packet::PingReq);
        assert_eq!(sim.take(c), []);
        assert!(sim.is_closed(c));
        assert_eq!(
            closed_causes(&sim),
            [CloseCause::ProtocolError(ReasonCode::PROTOCOL_ERROR)]
        );
        assert_eq!(sim.broker.stats().sessions, 0);
    }
}

#[test]
fn mqtt_3_1_0_2_a_second_connect_is_a_protocol_error() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let c = sim.connect(ConnectSpec::new(version, "a"));
        sim.send_bytes(c, &ConnectSpec::new(version, "a").encode());
        let expected: &[Rx] = if version.is_v5() {
            &[Rx::Disconnect(ReasonCode::PROTOCOL_ERROR)]
        } else {
            &[]
        };
        assert_eq!(sim.take(c), expected, "{version:?}");
        assert!(sim.is_closed(c));
        // The session had expiry 0: it ended with the connection.
        assert_eq!(sim.broker.stats().sessions, 0);
    }
}

#[test]
fn connect_split_across_reads_is_processed_when_complete() {
    let mut sim = Sim::default_v();
    let c = sim.open(V5);
    let bytes = ConnectSpec::v5("split").encode();
    assert_eq!(sim.feed(c, &bytes[..5]), 0);
    assert_eq!(sim.take(c), []);
    assert_eq!(sim.feed(c, &bytes), bytes.len());
    assert!(matches!(&sim.take(c)[..], [Rx::ConnAck(a)] if a.reason == ReasonCode::SUCCESS));
}

// ----- keep alive and connect timeout --------------------------------------------------------

#[test]
fn mqtt_3_1_2_22_keep_alive_is_enforced_at_one_and_a_half_times() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let c = sim.connect(ConnectSpec::new(version, "a").keep_alive(10));
        // 1.4 x keep alive: still connected.
        sim.advance(14_000);
        assert!(!sim.is_closed(c));
        // Any packet restarts the clock.
        sim.send(c, Packet::PingReq);
        assert_eq!(sim.take(c), [Rx::PingResp]);
        sim.advance(14_999);
        assert!(!sim.is_closed(c), "{version:?}");
        sim.advance(1);
        assert!(sim.is_closed(c), "{version:?}: closed at 1.5 x keep alive");
        let expected: &[Rx] = if version.is_v5() {
            &[Rx::Disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT)]
        } else {
            &[]
        };
        assert_eq!(sim.take(c), expected);
        assert_eq!(closed_causes(&sim), [CloseCause::KeepAliveTimeout]);
    }
}

#[test]
fn an_idle_connection_waits_on_one_timer() {
    let mut sim = Sim::default_v();
    // Keep alive beyond the connect timeout (10 s): the connect timeout hands over to it.
    let long: Vec<_> = (0..20)
        .map(|i| sim.connect(ConnectSpec::v5(&format!("long{i}")).keep_alive(60)))
        .collect();
    assert_eq!(sim.broker.pending_timers(), 20);
    // Keep alive within the connect timeout: armed at CONNECT, beside the connect timeout
    // until that comes due.
    let short = sim.connect(ConnectSpec::v5("short").keep_alive(2));
    assert_eq!(sim.broker.pending_timers(), 22);
    sim.advance(3_000);
    assert!(sim.is_closed(short));
    sim.advance(8_000);
    assert_eq!(sim.broker.pending_timers(), 20);
    assert!(long.iter().all(|&c| !sim.is_closed(c)));
    // The handed-over check still fires at 1.5 x keep alive.
    sim.advance(90_000 - 11_000 - 1);
    assert!(long.iter().all(|&c| !sim.is_closed(c)));
    sim.advance(1);
    assert!(long.iter().all(|&c| sim.is_closed(c)));
}

#[test]
fn mqtt_3_1_2_22_keep_alive_zero_never_times_out() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a").keep_alive(0));
    sim.advance_secs(100_000);
    assert!(!sim.is_closed(c));
}

#[test]
fn keep_alive_timeout_publishes_the_will() {
    let mut sim = Sim::default_v();
    let watcher = sim.connect(ConnectSpec::v5("w"));
    sim.subscribe(watcher, "will/#", QoS::AtMostOnce);
    let will = WillSpec {
        topic: "will/a".into(),
        payload: b"gone".to_vec(),
        ..WillSpec::default()
    };
    sim.connect(ConnectSpec::v5("a").keep_alive(2).will(will));
    sim.advance(3_000);
    assert_eq!(sim.take_payloads(watcher), ["gone"]);
}

#[test]
fn connect_timeout_closes_a_connection_that_never_sends_connect() {
    let mut sim = Sim::default_v();
    let c = sim.open(V5);
    sim.advance(9_999);
    assert!(!sim.is_closed(c));
    sim.advance(1);
    assert!(sim.is_closed(c));
    assert_eq!(sim.take(c), []);
    assert_eq!(closed_causes(&sim), [CloseCause::ConnectTimeout]);
}

#[test]
fn connect_timeout_does_not_close_a_connected_client() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.advance(60_000);
    assert!(!sim.is_closed(c));
}

// ----- takeover and sessions -------------------------------------------------------------------

#[test]
fn mqtt_3_1_4_3_takeover_disconnects_old_connection_with_0x8e() {
    let mut sim = Sim::default_v();
    let old = sim.connect(ConnectSpec::v5("same"));
    let new = sim.connect(ConnectSpec::v5("same"));
    assert_eq!(
        sim.take(old),
        [Rx::Disconnect(ReasonCode::SESSION_TAKEN_OVER)]
    );
    assert!(sim.is_closed(old));
    assert!(!sim.is_closed(new));
    assert_eq!(closed_causes(&sim), [CloseCause::TakenOver]);
    assert_eq!(sim.broker.stats().connected, 1);
    assert_eq!(sim.broker.stats().sessions, 1);
    // The new connection works.
    sim.send(new, Packet::PingReq);
    assert_eq!(sim.take(new), [Rx::PingResp]);
}

#[test]
fn mqtt_3_1_4_2_v311_takeover_closes_old_connection_without_a_packet() {
    let mut sim = Sim::default_v();
    let old = sim.connect(ConnectSpec::v311("same"));
    let new = sim.connect(ConnectSpec::v311("same"));
    assert_eq!(sim.take(old), []);
    assert!(sim.is_closed(old));
    assert!(!sim.is_closed(new));
    assert_eq!(closed_causes(&sim), [CloseCause::TakenOver]);
}

#[test]
fn mqtt_3_1_4_3_takeover_keeps_a_persistent_session_and_its_subscriptions() {
    let mut sim = Sim::default_v();
    let old = sim.connect(ConnectSpec::v5("same").persistent(60));
    sim.subscribe(old, "t", QoS::AtLeastOnce);
    let (new, ack) = sim.connect_ack(&ConnectSpec::v5("same").persistent(60));
    assert!(ack.session_present);
    let publisher = sim.connect(ConnectSpec::v5("p"));
    sim.publish(publisher, "t", b"x", QoS::AtLeastOnce);
    assert_eq!(sim.take_payloads(new), ["x"]);
    assert_eq!(
        sim.take(old),
        [Rx::Disconnect(ReasonCode::SESSION_TAKEN_OVER)]
    );
}

#[test]
fn mqtt_3_2_2_2_session_present_follows_clean_start_and_stored_state() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let spec = ConnectSpec::new(version, "a").persistent(3600);
        let (c, ack) = sim.connect_ack(&spec);
        assert!(!ack.session_present, "no session yet");
        sim.disconnect(c, ReasonCode::SUCCESS);
        // Resumed [MQTT-3.2.2-3].
        let ack = sim.reconnect(c, &spec);
        assert!(ack.session_present, "{version:?}");
        sim.disconnect(c, ReasonCode::SUCCESS);
        // Clean start discards it [MQTT-3.1.2-4], session present 0 [MQTT-3.2.2-2].
        let ack = sim.reconnect(c, &spec.clone().clean(true));
        assert!(!ack.session_present, "{version:?}");
        let ends: Vec<_> = sim.events_matching(|e| matches!(e, Event::SessionTerminated { .. }));
        assert!(
            matches!(
                &ends[..],
                [Event::SessionTerminated {
                    reason: SessionEnd::CleanStart,
                    ..
                }]
            ),
            "{ends:?}"
        );
    }
}

#[test]
fn mqtt_3_1_2_4_clean_start_discards_subscriptions_of_the_old_session() {
    let mut sim = Sim::default_v();
    let spec = ConnectSpec::v5("a").persistent(3600);
    let c = sim.connect(spec.clone());
    sim.subscribe(c, "a/#", QoS::AtLeastOnce);
    sim.disconnect(c, ReasonCode::SUCCESS);
    assert_eq!(sim.broker.subscription_count(), 1);
    sim.reconnect(c, &spec.clean(true));
    assert_eq!(sim.broker.subscription_count(), 0);
    assert_eq!(sim.broker.subscription_nodes(), 0);
}

// ----- DISCONNECT and session expiry ---------------------------------------------------------

#[test]
fn mqtt_3_14_4_client_disconnect_closes_and_reports_its_reason_code() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.disconnect(c, ReasonCode(0x80));
    assert!(sim.is_closed(c));
    assert_eq!(
        closed_causes(&sim),
        [CloseCause::ClientDisconnect(ReasonCode::UNSPECIFIED_ERROR)]
    );
    assert_eq!(sim.take(c), []);
}

#[test]
fn v311_disconnect_ends_a_clean_session() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v311("a"));
    sim.subscribe(c, "x", QoS::AtMostOnce);
    sim.send(c, Packet::Disconnect(Disconnect::default()));
    assert!(sim.is_closed(c));
    sim.assert_baseline();
    let events = sim.take_events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::SessionTerminated {
            reason: SessionEnd::Expired,
            ..
        }
    )));
}

#[test]
fn mqtt_3_1_2_23_session_is_kept_for_its_expiry_interval_then_discarded() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a").persistent(10));
    sim.subscribe(c, "t", QoS::AtLeastOnce);
    sim.drop_connection(c);
    sim.advance(9_999);
    assert_eq!(sim.broker.queued_messages("a"), Some(0));
    assert_eq!(sim.broker.subscription_count(), 1);
    sim.advance(1);
    assert_eq!(sim.broker.queued_messages("a"), None);
    sim.assert_baseline();
    assert!(sim.events.iter().any(|e| matches!(
        e,
        Event::SessionTerminated {
            reason: SessionEnd::Expired,
            ..
        }
    )));
}

#[test]
fn mqtt_3_1_2_23_reconnecting_before_expiry_keeps_the_session() {
    let mut sim = Sim::default_v();
    let spec = ConnectSpec::v5("a").persistent(10);
    let c = sim.connect(spec.clone());
    sim.drop_connection(c);
    sim.advance(5_000);
    assert!(sim.reconnect(c, &spec).session_present);
    // The old expiry timer must not end the resumed session.
    sim.advance(20_000);
    assert_eq!(sim.broker.stats().sessions, 1);
    // Nor a later disconnect's timer an earlier one's.
    sim.drop_connection(c);
    sim.advance(9_000);
    assert_eq!(sim.broker.stats().sessions, 1);
    sim.advance(1_000);
    assert_eq!(sim.broker.stats().sessions, 0);
}

#[test]
fn session_expiry_interval_absent_in_v5_ends_the_session_with_the_connection() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a").clean(false));
    sim.subscribe(c, "t", QoS::AtLeastOnce);
    sim.drop_connection(c);
    sim.assert_baseline();
}

#[test]
fn v311_persistent_session_never_expires() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v311("a").persistent(0));
    sim.subscribe(c, "t", QoS::AtLeastOnce);
    sim.drop_connection(c);
    sim.advance_secs(10_000_000);
    assert_eq!(sim.broker.stats().sessions, 1);
    assert_eq!(
        sim.broker.poll_timeout(),
        None,
        "no timer for a session that never ends"
    );
}

#[test]
fn mqtt_3_14_2_disconnect_can_change_the_session_expiry_interval() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a").persistent(10));
    sim.disconnect_with_expiry(c, ReasonCode::SUCCESS, 100);
    assert!(sim.is_closed(c));
    sim.advance_secs(99);
    assert_eq!(sim.broker.stats().sessions, 1);
    sim.advance_secs(1);
    assert_eq!(sim.broker.stats().sessions, 0);

    // ...and down to zero: the session ends at once.
    let c = sim.connect(ConnectSpec::v5("b").persistent(10));
    sim.disconnect_with_expiry(c, ReasonCode::SUCCESS, 0);
    assert_eq!(sim.broker.stats().sessions, 0);
}

#[test]
fn mqtt_3_14_2_disconnect_setting_expiry_after_zero_is_a_protocol_error() {
    let mut sim = Sim::default_v();
    let watcher = sim.connect(ConnectSpec::v5("w"));
    sim.subscribe(watcher, "will", QoS::AtMostOnce);
    let will = WillSpec {
        topic: "will".into(),
        payload: b"w".to_vec(),
        ..WillSpec::default()
    };
    let c = sim.connect(ConnectSpec::v5("a").will(will));
    sim.disconnect_with_expiry(c, ReasonCode::SUCCESS, 30);
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::PROTOCOL_ERROR)]);
    assert!(sim.is_closed(c));
    // An abnormal end: the session (expiry 0) is gone and the will is published.
    assert_eq!(sim.broker.queued_messages("a"), None);
    assert_eq!(sim.take_payloads(watcher), ["w"]);
}

#[test]
fn mqtt_3_2_2_connack_tells_the_session_expiry_the_server_uses_when_capped() {
    let config = Config {
        max_session_expiry: 100,
        ..events_config()
    };
    let mut sim = Sim::new(config);
    let (_, ack) = sim.connect_ack(&ConnectSpec::v5("a").persistent(1000));
    assert_eq!(ack.session_expiry_interval, Some(100));
    let (_, ack) = sim.connect_ack(&ConnectSpec::v5("b").persistent(50));
    assert_eq!(ack.session_expiry_interval, None);
}

// ----- wills -------------------------------------------------------------------------------------

fn will(topic: &str, payload: &str) -> WillSpec {
    WillSpec {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        qos: QoS::AtLeastOnce,
        ..WillSpec::default()
    }
}

fn watcher(sim: &mut Sim) -> Client {
    let w = sim.connect(ConnectSpec::v5("watcher"));
    sim.subscribe(w, "will/#", QoS::AtLeastOnce);
    w
}

#[test]
fn mqtt_3_1_2_8_will_is_published_when_the_network_connection_breaks() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let w = watcher(&mut sim);
        let c = sim.connect(ConnectSpec::new(version, "a").will(will("will/a", "bye")));
        sim.drop_connection(c);
        let got = sim.take_publishes(w);
        assert_eq!(got.len(), 1, "{version:?}");
        assert_eq!(got[0].topic, "will/a");
        assert_eq!(got[0].payload, b"bye");
        assert_eq!(got[0].qos, QoS::AtLeastOnce);
    }
}

#[test]
fn mqtt_3_14_4_3_will_is_not_published_after_a_normal_disconnect() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let w = watcher(&mut sim);
        let c = sim.connect(ConnectSpec::new(version, "a").will(will("will/a", "bye")));
        sim.disconnect(c, ReasonCode::SUCCESS);
        assert!(sim.is_closed(c));
        assert_eq!(sim.take(w), [], "{version:?}");
    }
}

#[test]
fn mqtt_3_14_2_disconnect_with_will_message_0x04_publishes_the_will() {
    let mut sim = Sim::default_v();
    let w = watcher(&mut sim);
    let c = sim.connect(ConnectSpec::v5("a").will(will("will/a", "bye")));
    sim.disconnect(c, ReasonCode::DISCONNECT_WITH_WILL_MESSAGE);
    assert_eq!(sim.take_payloads(w), ["bye"]);
}

#[test]
fn mqtt_3_1_3_9_will_delay_is_cancelled_by_a_reconnect_in_time() {
    let mut sim = Sim::default_v();
    let w = watcher(&mut sim);
    let mut delayed = will("will/a", "bye");
    delayed.delay = Some(30);
    let spec = ConnectSpec::v5("a").persistent(3600).will(delayed);
    let c = sim.connect(spec.clone());
    sim.drop_connection(c);
    sim.advance_secs(29);
    assert_eq!(sim.take(w), []);
    // The new connection has no will.
    let mut plain = spec.clone();
    plain.will = None;
    sim.reconnect(c, &plain);
    sim.advance_secs(100);
    assert_eq!(sim.take(w), []);
    // And a later abrupt close has nothing to publish.
    sim.drop_connection(c);
    sim.advance_secs(100);
    assert_eq!(sim.take(w), []);
}

#[test]
fn mqtt_3_1_2_8_will_is_published_after_its_delay() {
    let mut sim = Sim::default_v();
    let w = watcher(&mut sim);
    let mut delayed = will("will/a", "bye");
    delayed.delay = Some(30);
    let c = sim.connect(ConnectSpec::v5("a").persistent(3600).will(delayed));
    sim.drop_connection(c);
    sim.advance(29_999);
    assert_eq!(sim.take(w), []);
    sim.advance(1);
    assert_eq!(sim.take_payloads(w), ["bye"]);
    // The session is still there, without a will.
    assert_eq!(sim.broker.stats().sessions, 2);
}

#[test]
fn mqtt_3_1_3_9_will_is_published_when_the_session_expires_before_the_delay() {
    let mut sim = Sim::default_v();
    let w = watcher(&mut sim);
    let mut delayed = will("will/a", "bye");
    delayed.delay = Some(60);
    let c = sim.connect(ConnectSpec::v5("a").persistent(10).will(delayed));
    sim.drop_connection(c);
    sim.advance(9_999);
    assert_eq!(sim.take(w), []);
    sim.advance(1);
    assert_eq!(sim.take_payloads(w), ["bye"]);
    assert_eq!(sim.broker.queued_messages("a"), None);
}

#[test]
fn will_with_delay_on_a_session_without_expiry_is_published_at_once() {
    let mut sim = Sim::default_v();
    let w = watcher(&mut sim);
    let mut delayed = will("will/a", "bye");
    delayed.delay = Some(60);
    let c = sim.connect(ConnectSpec::v5("a").will(delayed));
    sim.drop_connection(c);
    assert_eq!(sim.take_payloads(w), ["bye"]);
}

#[test]
fn takeover_publishes_the_old_connections_will_without_delay() {
    let mut sim = Sim::default_v();
    let w = watcher(&mut sim);
    let spec = ConnectSpec::v5("a")
        .persistent(60)
        .will(will("will/a", "old"));
    sim.connect(spec.clone());
    let mut plain = spec;
    plain.will = None;
    sim.connect(plain);
    assert_eq!(sim.take_payloads(w), ["old"]);
}

#[test]
fn mqtt_3_1_2_retained_will_is_stored_as_retained_message() {
    let mut sim = Sim::default_v();
    let mut retained = will("will/a", "gone");
    retained.retain = true;
    let c = sim.connect(ConnectSpec::v5("a").will(retained));
    sim.drop_connection(c);
    assert_eq!(sim.broker.retained_count(), 1);
    let late = sim.connect(ConnectSpec::v5("late"));
    sim.subscribe(late, "will/#", QoS::AtLeastOnce);
    let got = sim.take_publishes(late);
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
    assert_eq!(got[0].payload, b"gone");
}

#[test]
fn mqtt_3_2_2_13_will_retain_is_refused_with_0x9a_when_retain_is_unavailable() {
    let config = Config {
        retain_available: false,
        ..events_config()
    };
    let mut sim = Sim::new(config);
    let mut retained = will("will/a", "gone");
    retained.retain = true;
    let c = sim.open(V5);
    let rx = sim.connect_raw(c, &ConnectSpec::v5("a").will(retained));
    assert_eq!(connack(&rx).reason, ReasonCode::RETAIN_NOT_SUPPORTED);
    assert!(sim.is_closed(c));
    assert_eq!(sim.broker.stats().sessions, 0);
}

// ----- shutdown ------------------------------------------------------------------------------------

#[test]
fn shutdown_sends_0x8b_to_every_v5_client_and_closes_all() {
    let mut sim = Sim::default_v();
    let a = sim.connect(ConnectSpec::v5("a").will(will("will/a", "x")));
    let gap = sim.connect(ConnectSpec::v5("gap"));
    let b = sim.connect(ConnectSpec::v311("b"));
    let c = sim.connect(ConnectSpec::v5("c").persistent(60));
    let pending = sim.open(V5);
    // A free connection slot before the others must not confuse shutdown.
    sim.drop_connection(gap);
    sim.broker.shutdown(sim.now);
    sim.pump();
    assert_eq!(
        sim.take(a),
        [Rx::Disconnect(ReasonCode::SERVER_SHUTTING_DOWN)]
    );
    assert_eq!(sim.take(b), []);
    assert_eq!(
        sim.take(c),
        [Rx::Disconnect(ReasonCode::SERVER_SHUTTING_DOWN)]
    );
    for client in [a, b, c, pending] {
        assert!(sim.is_closed(client), "{client:?}");
    }
    assert_eq!(sim.broker.stats().connected, 0);
    // No will on shutdown; persistent sessions are kept.
    assert_eq!(sim.broker.retained_count(), 0);
    assert_eq!(sim.broker.queued_messages("c"), Some(0));
}

#[test]
fn a_connection_whose_output_is_written_holds_no_output_buffer() {
    let mut sim = Sim::default_v();
    let now = sim.now;
    let conn = sim.broker.open(0, now);
    let connect = ConnectSpec::v311("idle").keep_alive(60).encode();
    sim.broker.handle_input(conn, &connect, now);
    for round in 0..2 {
        let queued = sim.broker.output(conn).len();
        assert!(queued > 0, "round {round}: CONNACK or PINGRESP queued");
        assert!(sim.broker.output_capacity(conn) >= queued);
        // Written in two parts: the buffer stays while bytes are left, goes once all are out.
        sim.broker.consume_output(conn, 1, now);
        assert_eq!(sim.broker.output(conn).len(), queued - 1);
        sim.broker.consume_output(conn, queued - 1, now);
        assert!(sim.broker.output(conn).is_empty());
        assert_eq!(sim.broker.output_capacity(conn), 0, "round {round}");
        sim.broker.handle_input(conn, &[0xC0, 0x00], now);
    }
}
