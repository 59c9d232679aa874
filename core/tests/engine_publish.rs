//! PUBLISH at QoS 0, 1 and 2 in both directions, retained messages, subscription options and
//! identifiers, properties passed through, message expiry, topic aliases, packet sizes and
//! shared subscriptions, through the simulation harness.

mod sim;

use sim::*;

fn pair(sim: &mut Sim, version: ProtocolVersion, filter: &str, qos: QoS) -> (Client, Client) {
    let sub = sim.connect(ConnectSpec::new(version, "sub"));
    sim.subscribe(sub, filter, qos);
    let publisher = sim.connect(ConnectSpec::new(version, "pub"));
    (sub, publisher)
}

// ----- QoS flows, client to broker ----------------------------------------------------------

#[test]
fn mqtt_3_3_4_1_qos0_publish_is_not_acknowledged() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let (sub, publisher) = pair(&mut sim, version, "t", QoS::AtMostOnce);
        sim.publish(publisher, "t", b"0", QoS::AtMostOnce);
        assert_eq!(sim.take(publisher), []);
        let got = sim.take_publishes(sub);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].qos, got[0].packet_id, got[0].dup),
            (QoS::AtMostOnce, None, false)
        );
    }
}

#[test]
fn mqtt_3_3_4_1_qos1_publish_gets_puback() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let (_, publisher) = pair(&mut sim, version, "t", QoS::AtLeastOnce);
        let id = sim.publish(publisher, "t", b"1", QoS::AtLeastOnce);
        assert_eq!(sim.take(publisher), [Rx::PubAck(id, ReasonCode::SUCCESS)]);
    }
}

#[test]
fn mqtt_3_4_2_puback_0x10_no_matching_subscribers_in_v5_success_in_v311() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let publisher = sim.connect(ConnectSpec::new(version, "pub"));
        let id = sim.publish(publisher, "nobody", b"1", QoS::AtLeastOnce);
        let expected = if version.is_v5() {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        };
        assert_eq!(sim.take(publisher), [Rx::PubAck(id, expected)]);
    }
}

#[test]
fn mqtt_4_3_3_8_qos2_publish_gets_pubrec_then_pubcomp() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let (sub, publisher) = pair(&mut sim, version, "t", QoS::ExactlyOnce);
        sim.set_acks(publisher, Acks::Manual);
        let id = sim.publish(publisher, "t", b"2", QoS::ExactlyOnce);
        assert_eq!(sim.take(publisher), [Rx::PubRec(id, ReasonCode::SUCCESS)]);
        // Delivered on PUBLISH (method A), once.
        assert_eq!(sim.take_payloads(sub), ["2"]);
        sim.pubrel(publisher, id);
        assert_eq!(sim.take(publisher), [Rx::PubComp(id, ReasonCode::SUCCESS)]);
    }
}

#[test]
fn mqtt_4_3_3_10_duplicate_qos2_publish_before_pubrel_is_not_delivered_twice() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let (sub, publisher) = pair(&mut sim, version, "t", QoS::ExactlyOnce);
        sim.set_acks(publisher, Acks::Manual);
        let spec = PublishSpec::new("t", b"once", QoS::ExactlyOnce).packet_id(5);
        sim.publish_spec(publisher, &spec);
        let again = PublishSpec {
            dup: true,
            ..spec.clone()
        };
        sim.publish_spec(publisher, &again);
        sim.publish_spec(publisher, &again);
        assert_eq!(
            sim.take(publisher),
            [
                Rx::PubRec(5, ReasonCode::SUCCESS),
                Rx::PubRec(5, ReasonCode::SUCCESS),
                Rx::PubRec(5, ReasonCode::SUCCESS)
            ]
        );
        assert_eq!(sim.take_payloads(sub), ["once"], "{version:?}");
        sim.pubrel(publisher, 5);
        assert_eq!(sim.take(publisher), [Rx::PubComp(5, ReasonCode::SUCCESS)]);
        // After PUBREL the id is free: the same id is a new message [MQTT-4.3.3-12].
        sim.publish_spec(
            publisher,
            &PublishSpec::new("t", b"new", QoS::ExactlyOnce).packet_id(5),
        );
        assert_eq!(sim.take_payloads(sub), ["new"]);
    }
}

#[test]
fn mqtt_4_3_3_10_duplicate_qos2_publish_after_reconnect_is_not_delivered_twice() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "t", QoS::ExactlyOnce);
    let spec = ConnectSpec::v5("pub").persistent(60);
    let publisher = sim.connect(spec.clone());
    sim.set_acks(publisher, Acks::Manual);
    let message = PublishSpec::new("t", b"once", QoS::ExactlyOnce).packet_id(9);
    sim.publish_spec(publisher, &message);
    sim.drop_connection(publisher);
    // The publisher did not see PUBREC: it resends with DUP after reconnecting.
    sim.reconnect(publisher, &spec);
    sim.publish_spec(
        publisher,
        &PublishSpec {
            dup: true,
            ..message
        },
    );
    assert_eq!(sim.take(publisher), [Rx::PubRec(9, ReasonCode::SUCCESS)]);
    sim.pubrel(publisher, 9);
    assert_eq!(sim.take(publisher), [Rx::PubComp(9, ReasonCode::SUCCESS)]);
    assert_eq!(sim.take_payloads(sub), ["once"]);
}

#[test]
fn mqtt_4_3_3_11_pubrel_for_an_unknown_id_gets_pubcomp_0x92() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.pubrel(c, 77);
    assert_eq!(
        sim.take(c),
        [Rx::PubComp(77, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)]
    );
    assert!(!sim.is_closed(c));
}

#[test]
fn mqtt_3_3_1_3_dup_of_a_forwarded_message_is_set_independently() {
    let mut sim = Sim::default_v();
    let (sub, publisher) = pair(&mut sim, V5, "t", QoS::AtLeastOnce);
    let spec = PublishSpec {
        dup: true,
        ..PublishSpec::new("t", b"d", QoS::AtLeastOnce)
    };
    sim.publish_spec(publisher, &spec);
    let got = sim.take_publishes(sub);
    assert!(!got[0].dup);
}

// ----- QoS flows, broker to client ----------------------------------------------------------

#[test]
fn mqtt_3_8_4_8_delivered_qos_is_the_minimum_of_published_and_granted() {
    let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    for version in VERSIONS {
        for granted in qos {
            let mut sim = Sim::default_v();
            let (sub, publisher) = pair(&mut sim, version, "t", granted);
            for published in qos {
                sim.publish(publisher, "t", b"m", published);
                let got = sim.take_publishes(sub);
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].qos, published.min(granted), "{version:?}");
                assert_eq!(
                    got[0].packet_id.is_some(),
                    published.min(granted) != QoS::AtMostOnce
                );
            }
        }
    }
}

#[test]
fn mqtt_4_3_3_broker_to_client_qos2_flow_completes_with_pubrel_and_pubcomp() {
    let mut sim = Sim::default_v();
    let (sub, publisher) = pair(&mut sim, V5, "t", QoS::ExactlyOnce);
    sim.set_acks(sub, Acks::Manual);
    sim.publish(publisher, "t", b"x", QoS::ExactlyOnce);
    let got = sim.take_publishes(sub);
    let id = got[0].packet_id.expect("packet id");
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    sim.events.clear();
    sim.pubrec(sub, id);
    // PUBREL when PUBREC is below 0x80 [MQTT-4.3.3-4].
    assert_eq!(sim.take(sub), [Rx::PubRel(id, ReasonCode::SUCCESS)]);
    assert!(
        sim.events
            .iter()
            .all(|e| !matches!(e, Event::MessageAcked { .. }))
    );
    sim.pubcomp(sub, id);
    assert_eq!(sim.take(sub), []);
    assert_eq!(
        sim.events_matching(|e| matches!(e, Event::MessageAcked { .. }))
            .len(),
        1
    );
}

#[test]
fn mqtt_4_3_3_4_pubrec_with_an_error_ends_the_flow_without_pubrel() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub").receive_maximum(1));
    sim.subscribe(sub, "t", QoS::ExactlyOnce);
    sim.set_acks(sub, Acks::Manual);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t", b"1", QoS::ExactlyOnce);
    sim.publish(publisher, "t", b"2", QoS::ExactlyOnce);
    let first = sim.take_publishes(sub);
    assert_eq!(first.len(), 1);
    let id = first[0].packet_id.expect("id");
    sim.send(
        sub,
        Packet::PubRec(Ack {
            packet_id: pid(id),
            reason: ReasonCode::UNSPECIFIED_ERROR,
            properties: AckProperties::default(),
        }),
    );
    // No PUBREL; the window slot is free again, so the next message comes [MQTT-3.3.4-9].
    let rx = sim.take(sub);
    assert_eq!(rx.len(), 1, "{rx:?}");
    assert_eq!(rx[0].publish().expect("PUBLISH").payload, b"2");
}

#[test]
fn mqtt_4_4_0_1_unacknowledged_messages_are_resent_with_dup_on_reconnect() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let spec = ConnectSpec::new(version, "sub").persistent(600);
        let sub = sim.connect(spec.clone());
        sim.subscribe(sub, "t/+", QoS::ExactlyOnce);
        sim.set_acks(sub, Acks::Manual);
        let publisher = sim.connect(ConnectSpec::new(version, "pub"));
        sim.publish(publisher, "t/1", b"q1", QoS::AtLeastOnce);
        sim.publish(publisher, "t/2", b"q2", QoS::ExactlyOnce);
        sim.publish(publisher, "t/3", b"q2-received", QoS::ExactlyOnce);
        let first = sim.take_publishes(sub);
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|p| !p.dup));
        // The third one is PUBREC'd: the broker owes PUBREL, not the message.
        let rec_id = first[2].packet_id.expect("id");
        sim.pubrec(sub, rec_id);
        assert_eq!(sim.take(sub), [Rx::PubRel(rec_id, ReasonCode::SUCCESS)]);
        sim.drop_connection(sub);

        let ack = sim.reconnect(sub, &spec);
        assert!(ack.session_present);
        let again = sim.take(sub);
        assert_eq!(again.len(), 3, "{version:?}: {again:?}");
        for (old, new) in first[..2].iter().zip(&again) {
            let new = new.publish().expect("PUBLISH resent");
            assert!(new.dup, "DUP=1 on redelivery [MQTT-3.3.1-1]");
            assert_eq!(new.packet_id, old.packet_id, "same packet id");
            assert_eq!(new.payload, old.payload);
            assert_eq!(new.qos, old.qos);
        }
        assert_eq!(again[2], Rx::PubRel(rec_id, ReasonCode::SUCCESS));
        // Completing everything leaves nothing to resend.
        sim.puback(sub, first[0].packet_id.expect("id"));
        sim.ack(sub, &first[1]);
        sim.pubcomp(sub, rec_id);
        sim.drop_connection(sub);
        sim.reconnect(sub, &spec);
        assert_eq!(sim.take(sub), [], "{version:?}");
    }
}

#[test]
fn mqtt_4_4_0_1_messages_are_not_resent_on_the_same_connection() {
    let mut sim = Sim::default_v();
    let (sub, publisher) = pair(&mut sim, V5, "t", QoS::AtLeastOnce);
    sim.set_acks(sub, Acks::Manual);
    sim.publish(publisher, "t", b"x", QoS::AtLeastOnce);
    assert_eq!(sim.take_publishes(sub).len(), 1);
    sim.advance_secs(3600);
    assert_eq!(sim.take(sub), []);
}

#[test]
fn mqtt_2_2_1_3_packet_ids_in_flight_are_never_reused() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub").receive_maximum(3));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.set_acks(sub, Acks::Manual);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    // One message stays unacknowledged the whole time while 70,000 others pass: the id
    // counter wraps around and must skip the one in flight.
    sim.publish(publisher, "t", b"stuck", QoS::AtLeastOnce);
    let stuck = sim.take_publishes(sub)[0].packet_id.expect("id");
    let mut seen_wrap = false;
    let mut last = 0;
    for i in 0..70_000u32 {
        sim.publish(publisher, "t", b"m", QoS::AtLeastOnce);
        let got = sim.take_publishes(sub);
        assert_eq!(got.len(), 1, "message {i}");
        let id = got[0].packet_id.expect("id");
        assert_ne!(id, stuck, "message {i} reused the id in flight");
        if id < last {
            seen_wrap = true;
        }
        last = id;
        sim.puback(sub, id);
        sim.take(publisher);
    }
    assert!(seen_wrap);
}

// ----- subscription options ------------------------------------------------------------------

#[test]
fn mqtt_3_8_3_3_no_local_does_not_send_a_clients_own_messages_back() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("self"));
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtLeastOnce)
    };
    assert_eq!(
        sim.subscribe_opts(c, "a", no_local),
        ReasonCode::GRANTED_QOS_1
    );
    sim.subscribe(c, "b", QoS::AtLeastOnce);
    sim.publish(c, "a", b"mine", QoS::AtLeastOnce);
    sim.publish(c, "b", b"echo", QoS::AtLeastOnce);
    let rx = sim.take(c);
    let payloads: Vec<_> = rx
        .iter()
        .filter_map(Rx::publish)
        .map(|p| p.payload.clone())
        .collect();
    assert_eq!(payloads, [b"echo".to_vec()]);
    // Others still get it.
    let other = sim.connect(ConnectSpec::v5("other"));
    sim.subscribe(other, "a", QoS::AtLeastOnce);
    sim.publish(c, "a", b"mine", QoS::AtLeastOnce);
    assert_eq!(sim.take_payloads(other), ["mine"]);
}

#[test]
fn mqtt_3_3_1_12_forwarded_messages_have_retain_0_without_retain_as_published() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let (sub, publisher) = pair(&mut sim, version, "t", QoS::AtLeastOnce);
        sim.publish_spec(
            publisher,
            &PublishSpec::new("t", b"r", QoS::AtLeastOnce).retain(),
        );
        let got = sim.take_publishes(sub);
        assert!(!got[0].retain, "{version:?}");
    }
}

#[test]
fn mqtt_3_3_1_13_retain_as_published_keeps_the_retain_flag() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub"));
    let rap = SubscriptionOptions {
        retain_as_published: true,
        ..opts(QoS::AtLeastOnce)
    };
    sim.subscribe_opts(sub, "t", rap);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish_spec(
        publisher,
        &PublishSpec::new("t", b"r", QoS::AtLeastOnce).retain(),
    );
    sim.publish(publisher, "t", b"n", QoS::AtLeastOnce);
    let got = sim.take_publishes(sub);
    assert_eq!((got[0].retain, got[1].retain), (true, false));
}

fn retained_setup(sim: &mut Sim) {
    let publisher = sim.connect(ConnectSpec::v5("retainer"));
    sim.publish_spec(
        publisher,
        &PublishSpec::new("r/1", b"one", QoS::AtLeastOnce).retain(),
    );
    sim.publish_spec(
        publisher,
        &PublishSpec::new("r/2", b"two", QoS::AtMostOnce).retain(),
    );
    sim.take(publisher);
}

#[test]
fn mqtt_3_3_1_9_retain_handling_0_sends_retained_messages_on_every_subscribe() {
    let mut sim = Sim::default_v();
    retained_setup(&mut sim);
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "r/+", QoS::AtLeastOnce);
    let mut got = sim.take_publishes(sub);
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|p| p.retain),
        "RETAIN 1 for retained messages"
    );
    assert_eq!(
        (got[0].payload.as_slice(), got[0].qos),
        (&b"one"[..], QoS::AtLeastOnce)
    );
    assert_eq!(
        (got[1].payload.as_slice(), got[1].qos),
        (&b"two"[..], QoS::AtMostOnce)
    );
    // Subscribing again sends them again [MQTT-3.8.4-4].
    sim.subscribe(sub, "r/+", QoS::AtLeastOnce);
    assert_eq!(sim.take_publishes(sub).len(), 2);
}

#[test]
fn mqtt_3_3_1_10_retain_handling_1_sends_retained_messages_only_for_a_new_subscription() {
    let mut sim = Sim::default_v();
    retained_setup(&mut sim);
    let sub = sim.connect(ConnectSpec::v5("sub"));
    let if_new = SubscriptionOptions {
        retain_handling: RetainHandling::SendIfNew,
        ..opts(QoS::AtLeastOnce)
    };
    sim.subscribe_opts(sub, "r/1", if_new);
    assert_eq!(sim.take_payloads(sub), ["one"]);
    sim.subscribe_opts(sub, "r/1", if_new);
    assert_eq!(sim.take(sub), []);
}

#[test]
fn mqtt_3_3_1_11_retain_handling_2_never_sends_retained_messages() {
    let mut sim = Sim::default_v();
    retained_setup(&mut sim);
    let sub = sim.connect(ConnectSpec::v5("sub"));
    let never = SubscriptionOptions {
        retain_handling: RetainHandling::DoNotSend,
        ..opts(QoS::AtLeastOnce)
    };
    sim.subscribe_opts(sub, "r/#", never);
    assert_eq!(sim.take(sub), []);
}

#[test]
fn mqtt_3_3_4_3_subscription_identifiers_of_all_overlapping_subscriptions() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe_many(sub, &[("a/+", opts(QoS::AtLeastOnce))], Some(1));
    sim.subscribe_many(sub, &[("a/#", opts(QoS::AtMostOnce))], Some(2));
    sim.subscribe_many(sub, &[("+/b", opts(QoS::AtMostOnce))], None);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "a/b", b"x", QoS::ExactlyOnce);
    let got = sim.take_publishes(sub);
    // One copy [MQTT-3.3.4-2] at the highest granted QoS, with both identifiers.
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    let mut ids = got[0].subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, [1, 2]);
    // Only the identifiers of matching subscriptions.
    sim.publish(publisher, "a/c", b"y", QoS::AtMostOnce);
    let got = sim.take_publishes(sub);
    let mut ids = got[0].subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, [1, 2]);
    sim.publish(publisher, "z/b", b"z", QoS::AtMostOnce);
    assert_eq!(
        sim.take_publishes(sub)[0].subscription_identifiers,
        Vec::<u32>::new()
    );
}

#[test]
fn mqtt_3_8_4_3_resubscribing_replaces_the_subscription_identifier() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe_many(sub, &[("t", opts(QoS::AtLeastOnce))], Some(5));
    sim.subscribe_many(sub, &[("t", opts(QoS::AtLeastOnce))], Some(6));
    assert_eq!(sim.broker.subscription_count(), 1);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t", b"x", QoS::AtLeastOnce);
    assert_eq!(sim.take_publishes(sub)[0].subscription_identifiers, [6]);
}

#[test]
fn retained_message_carries_the_subscription_identifier_of_the_subscribe() {
    let mut sim = Sim::default_v();
    retained_setup(&mut sim);
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe_many(sub, &[("r/1", opts(QoS::AtLeastOnce))], Some(42));
    assert_eq!(sim.take_publishes(sub)[0].subscription_identifiers, [42]);
}

#[test]
fn mqtt_3_9_3_v311_suback_and_delivery_carry_no_v5_options() {
    let mut sim = Sim::default_v();
    let (sub, publisher) = pair(&mut sim, V311, "t/#", QoS::ExactlyOnce);
    sim.publish(publisher, "t/x", b"x", QoS::ExactlyOnce);
    let got = sim.take_publishes(sub);
    assert_eq!(got[0].subscription_identifiers, Vec::<u32>::new());
    assert_eq!(got[0].topic_alias, None);
}

// ----- properties passed through -------------------------------------------------------------

#[test]
fn mqtt_3_3_2_18_user_properties_are_forwarded_unchanged_and_in_order() {
    let mut sim = Sim::default_v();
    let (sub, publisher) = pair(&mut sim, V5, "t", QoS::AtLeastOnce);
    let users: Vec<(String, String)> = [("z", "1"), ("a", "2"), ("z", "3"), ("", ""), ("k", "ü")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let spec = PublishSpec {
        user_properties: users.clone(),
        ..PublishSpec::new("t", b"x", QoS::AtLeastOnce)
    };
    sim.publish_spec(publisher, &spec);
    assert_eq!(sim.take_publishes(sub)[0].user_properties, users);
}

#[test]
fn mqtt_3_3_2_15_request_response_properties_are_forwarded_unchanged() {
    let mut sim = Sim::default_v();
    let (sub, publisher) = pair(&mut sim, V5, "req/#", QoS::AtLeastOnce);
    let spec = PublishSpec {
        response_topic: Some("resp/client-7".into()),
        correlation_data: Some(vec![0, 1, 2, 255]),
        content_type: Some("application/json".into()),
        payload_format_indicator: Some(true),
        ..PublishSpec::new("req/x", b"{}", QoS::AtLeastOnce)
    };
    sim.publish_spec(publisher, &spec);
    let got = &sim.take_publishes(sub)[0];
    assert_eq!(got.response_topic.as_deref(), Some("resp/client-7"));
    assert_eq!(got.correlation_data.as_deref(), Some(&[0u8, 1, 2, 255][..]));
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(got.payload_format_indicator, Some(true));
    assert_eq!(got.payload, b"{}");
}

#[test]
fn v5_properties_are_not_sent_to_a_v311_subscriber() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v311("sub"));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    let spec = PublishSpec {
        response_topic: Some("r".into()),
        user_properties: vec![("a".into(), "b".into())],
        ..PublishSpec::new("t", b"x", QoS::AtLeastOnce)
    };
    sim.publish_spec(publisher, &spec);
    let got = &sim.take_publishes(sub)[0];
    assert_eq!(got.payload, b"x");
    assert_eq!(got.response_topic, None);
    assert!(got.user_properties.is_empty());
}

#[test]
fn mqtt_3_3_2_4_payload_format_invalid_is_refused_with_0x99() {
    let mut sim = Sim::default_v();
    let (sub, publisher) = pair(&mut sim, V5, "t", QoS::AtLeastOnce);
    let spec = PublishSpec {
        payload_format_indicator: Some(true),
        ..PublishSpec::new("t", &[0xff, 0xfe], QoS::AtLeastOnce)
    };
    let id = sim.publish_spec(publisher, &spec);
    assert_eq!(
        sim.take(publisher),
        [Rx::PubAck(id, ReasonCode::PAYLOAD_FORMAT_INVALID)]
    );
    assert_eq!(sim.take(sub), []);
}

// ----- message expiry ------------------------------------------------------------------------

#[test]
fn mqtt_3_3_2_6_forwarded_message_expiry_is_the_remaining_time() {
    let mut sim = Sim::default_v();
    let spec = ConnectSpec::v5("sub").persistent(600);
    let sub = sim.connect(spec.clone());
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.drop_connection(sub);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish_spec(
        publisher,
        &PublishSpec::new("t", b"x", QoS::AtLeastOnce).expiry(100),
    );
    sim.advance_secs(30);
    sim.reconnect(sub, &spec);
    let got = sim.take_publishes(sub);
    assert_eq!(got[0].message_expiry_interval, Some(70));
    // Online delivery right away keeps the whole interval.
    sim.publish_spec(
        publisher,
        &PublishSpec::new("t", b"y", QoS::AtLeastOnce).expiry(100),
    );
    assert_eq!(
        sim.take_publishes(sub)[0].message_expiry_interval,
        Some(100)
    );
}

#[test]
fn mqtt_3_3_2_5_expired_queued_messages_are_not_sent() {
    let mut sim = Sim::default_v();
    let spec = ConnectSpec::v5("sub").persistent(600);
    let sub = sim.connect(spec.clone());
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.drop_connection(sub);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish_spec(
        publisher,
        &PublishSpec::new("t", b"short", QoS::AtLeastOnce).expiry(10),
    );
    sim.publish_spec(
        publisher,
        &PublishSpec::new("t", b"long", QoS::AtLeastOnce).expiry(100),
    );
    sim.publish(publisher, "t", b"forever", QoS::AtLeastOnce);
    sim.advance_secs(10);
    sim.events.clear();
    sim.reconnect(sub, &spec);
    assert_eq!(sim.take_payloads(sub), ["long", "forever"]);
    let expired = sim.events_matching(|e| {
        matches!(
            e,
            Event::MessageDropped {
                reason: DropReason::Expired,
                ..
            }
        )
    });
    assert_eq!(expired.len(), 1);
}

#[test]
fn mqtt_3_3_2_5_expired_retained_message_is_not_sent_to_new_subscribers() {
    let mut sim = Sim::default_v();
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish_spec(
        publisher,
        &PublishSpec::new("r", b"x", QoS::AtLeastOnce)
            .retain()
            .expiry(5),
    );
    sim.advance_secs(4);
    let early = sim.connect(ConnectSpec::v5("early"));
    sim.subscribe(early, "r", QoS::AtLeastOnce);
    let got = sim.take_publishes(early);
    assert_eq!(got[0].message_expiry_interval, Some(1));
    sim.advance_secs(1);
    let late = sim.connect(ConnectSpec::v5("late"));
    sim.subscribe(late, "r", QoS::AtLeastOnce);
    assert_eq!(sim.take(late), []);
}

// ----- retained messages ---------------------------------------------------------------------

#[test]
fn mqtt_3_3_1_5_retained_message_is_stored_replaced_and_delivered_with_retain_1() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let publisher = sim.connect(ConnectSpec::new(version, "pub"));
        sim.publish_spec(
            publisher,
            &PublishSpec::new("home/t", b"20", QoS::AtLeastOnce).retain(),
        );
        sim.publish_spec(
            publisher,
            &PublishSpec::new("home/t", b"21", QoS::AtLeastOnce).retain(),
        );
        assert_eq!(sim.broker.retained_count(), 1);
        let sub = sim.connect(ConnectSpec::new(version, "sub"));
        sim.subscribe(sub, "home/#", QoS::AtLeastOnce);
        let got = sim.take_publishes(sub);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, b"21");
        assert!(got[0].retain, "{version:?}");
    }
}

#[test]
fn mqtt_3_3_1_8_publish_without_retain_does_not_replace_the_retained_message() {
    let mut sim = Sim::default_v();
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish_spec(
        publisher,
        &PublishSpec::new("t", b"kept", QoS::AtMostOnce).retain(),
    );
    sim.publish(publisher, "t", b"live", QoS::AtMostOnce);
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "t", QoS::AtMostOnce);
    assert_eq!(sim.take_payloads(sub), ["kept"]);
}

#[test]
fn mqtt_3_3_1_6_empty_retained_payload_deletes_and_is_still_forwarded() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let (sub, publisher) = pair(&mut sim, version, "t", QoS::AtLeastOnce);
        sim.publish_spec(
            publisher,
            &PublishSpec::new("t", b"x", QoS::AtLeastOnce).retain(),
        );
        sim.publish_spec(
            publisher,
            &PublishSpec::new("t", b"", QoS::AtLeastOnce).retain(),
        );
        assert_eq!(sim.broker.retained_count(), 0, "[MQTT-3.3.1-7] not stored");
        let got = sim.take_publishes(sub);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].payload, b"");
        let late = sim.connect(ConnectSpec::new(version, "late"));
        sim.subscribe(late, "t", QoS::AtLeastOnce);
        assert_eq!(sim.take(late), []);
    }
}

#[test]
fn retained_messages_are_found_by_wildcard_filters() {
    let mut sim = Sim::default_v();
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    for topic in ["a/b/c", "a/x/c", "a/b", "b/b/c", "$SYS/x"] {
        sim.publish_spec(
            publisher,
            &PublishSpec::new(topic, topic.as_bytes(), QoS::AtMostOnce).retain(),
        );
    }
    let cases: [(&str, &[&str]); 6] = [
        ("a/+/c", &["a/b/c", "a/x/c"]),
        ("a/#", &["a/b", "a/b/c", "a/x/c"]),
        ("+/b/+", &["a/b/c", "b/b/c"]),
        ("#", &["a/b", "a/b/c", "a/x/c", "b/b/c"]),
        ("$SYS/#", &["$SYS/x"]),
        ("a/b/c/d", &[]),
    ];
    for (i, (filter, expected)) in cases.iter().enumerate() {
        let sub = sim.connect(ConnectSpec::v5(&format!("s{i}")));
        sim.subscribe(sub, filter, QoS::AtMostOnce);
        let mut got: Vec<String> = sim
            .take_publishes(sub)
            .into_iter()
            .map(|p| p.topic)
            .collect();
        got.sort();
        assert_eq!(got, *expected, "{filter}");
    }
}

#[test]
fn mqtt_3_3_1_retain_unsupported_publish_is_disconnected_with_0x9a() {
    let config = Config {
        retain_available: false,
        ..events_config()
    };
    let mut sim = Sim::new(config);
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.publish_spec(c, &PublishSpec::new("t", b"x", QoS::AtMostOnce).retain());
    assert_eq!(
        sim.take(c),
        [Rx::Disconnect(ReasonCode::RETAIN_NOT_SUPPORTED)]
    );
    assert!(sim.is_closed(c));
    assert_eq!(sim.broker.retained_count(), 0);
}

// ----- topic aliases -------------------------------------------------------------------------

#[test]
fn mqtt_3_3_2_12_inbound_topic_alias_is_set_then_reused() {
    let mut sim = Sim::default_v();
    let (sub, publisher) = pair(&mut sim, V5, "#", QoS::AtMostOnce);
    sim.publish_spec(
        publisher,
        &PublishSpec::new("long/topic/name", b"1", QoS::AtMostOnce).alias(3),
    );
    sim.publish_spec(
        publisher,
        &PublishSpec::new("", b"2", QoS::AtMostOnce).alias(3),
    );
    // Re-pointing an alias.
    sim.publish_spec(
        publisher,
        &PublishSpec::new("other", b"3", QoS::AtMostOnce).alias(3),
    );
    sim.publish_spec(
        publisher,
        &PublishSpec::new("", b"4", QoS::AtMostOnce).alias(3),
    );
    let got: Vec<(String, Vec<u8>)> = sim
        .take_publishes(sub)
        .into_iter()
        .map(|p| (p.topic, p.payload))
        .collect();
    assert_eq!(
        got,
        [
            ("long/topic/name".to_string(), b"1".to_vec()),
            ("long/topic/name".to_string(), b"2".to_vec()),
            ("other".to_string(), b"3".to_vec()),
            ("other".to_string(), b"4".to_vec()),
        ]
    );
    assert!(!sim.is_closed(publisher));
}

#[test]
fn mqtt_3_3_2_9_inbound_topic_alias_above_the_maximum_is_disconnected_with_0x94() {
    let config = Config {
        topic_alias_maximum: 4,
        ..events_config()
    };
    let mut sim = Sim::new(config);
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.publish_spec(c, &PublishSpec::new("t", b"x", QoS::AtMostOnce).alias(4));
    assert!(!sim.is_closed(c));
    sim.publish_spec(c, &PublishSpec::new("t", b"x", QoS::AtMostOnce).alias(5));
    assert_eq!(
        sim.take(c),
        [Rx::Disconnect(ReasonCode::TOPIC_ALIAS_INVALID)]
    );
    assert!(sim.is_closed(c));
}

#[test]
fn mqtt_3_3_4_unknown_topic_alias_with_an_empty_topic_is_a_protocol_error() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.publish_spec(c, &PublishSpec::new("", b"x", QoS::AtLeastOnce).alias(1));
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::PROTOCOL_ERROR)]);
    assert!(sim.is_closed(c));
}

#[test]
fn mqtt_3_3_2_7_topic_aliases_do_not_survive_the_connection() {
    let mut sim = Sim::default_v();
    let spec = ConnectSpec::v5("a").persistent(60);
    let c = sim.connect(spec.clone());
    sim.publish_spec(c, &PublishSpec::new("t", b"x", QoS::AtMostOnce).alias(1));
    sim.drop_connection(c);
    sim.reconnect(c, &spec);
    sim.publish_spec(c, &PublishSpec::new("", b"x", QoS::AtMostOnce).alias(1));
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::PROTOCOL_ERROR)]);
}

#[test]
fn mqtt_3_3_2_11_outbound_topic_aliases_are_assigned_within_the_clients_maximum_and_reused() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub").topic_alias_maximum(2));
    sim.subscribe(sub, "#", QoS::AtMostOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    for topic in [
        "a/long/topic",
        "a/long/topic",
        "b",
        "c",
        "b",
        "a/long/topic",
        "c",
    ] {
        sim.publish(publisher, topic, b"x", QoS::AtMostOnce);
    }
    let got: Vec<(String, Option<u16>, String)> = sim
        .take_publishes(sub)
        .into_iter()
        .map(|p| (p.wire_topic, p.topic_alias, p.topic))
        .collect();
    let expect =
        |wire: &str, alias: Option<u16>, topic: &str| (wire.to_string(), alias, topic.to_string());
    assert_eq!(
        got,
        [
            expect("a/long/topic", Some(1), "a/long/topic"),
            expect("", Some(1), "a/long/topic"),
            expect("b", Some(2), "b"),
            // No alias left: the full topic, no alias [MQTT-3.3.2-11].
            expect("c", None, "c"),
            expect("", Some(2), "b"),
            expect("", Some(1), "a/long/topic"),
            expect("c", None, "c"),
        ]
    );
}

#[test]
fn mqtt_3_1_2_27_no_outbound_aliases_when_the_client_allows_none() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub"));
    sim.subscribe(sub, "#", QoS::AtMostOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t", b"1", QoS::AtMostOnce);
    sim.publish(publisher, "t", b"2", QoS::AtMostOnce);
    assert!(
        sim.take_publishes(sub)
            .iter()
            .all(|p| p.topic_alias.is_none() && p.wire_topic == "t")
    );
}

#[test]
fn outbound_aliases_start_afresh_on_a_new_connection_for_resent_messages() {
    let mut sim = Sim::default_v();
    let spec = ConnectSpec::v5("sub").persistent(60).topic_alias_maximum(5);
    let sub = sim.connect(spec.clone());
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.set_acks(sub, Acks::Manual);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t", b"1", QoS::AtLeastOnce);
    sim.publish(publisher, "t", b"2", QoS::AtLeastOnce);
    sim.take(sub);
    sim.drop_connection(sub);
    sim.reconnect(sub, &spec);
    // The harness panics on an alias used before being set on this connection.
    let again = sim.take_publishes(sub);
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].wire_topic, "t");
    assert!(again.iter().all(|p| p.topic == "t" && p.dup));
}

// ----- packet sizes --------------------------------------------------------------------------

#[test]
fn mqtt_3_1_2_25_message_over_a_subscribers_maximum_packet_size_is_dropped_for_it_only() {
    let mut sim = Sim::default_v();
    let small_spec = ConnectSpec::v5("small")
        .persistent(60)
        .maximum_packet_size(64);
    let small = sim.connect(small_spec.clone());
    sim.subscribe(small, "t", QoS::AtLeastOnce);
    let big = sim.connect(ConnectSpec::v5("big"));
    sim.subscribe(big, "t", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.events.clear();
    sim.publish(publisher, "t", &[b'x'; 100], QoS::AtLeastOnce);
    assert_eq!(sim.take(small), []);
    assert_eq!(sim.take_publishes(big).len(), 1);
    let dropped = sim.events_matching(|e| {
        matches!(
            e,
            Event::MessageDropped {
                reason: DropReason::TooLarge,
                ..
            }
        )
    });
    assert_eq!(dropped.len(), 1);
    // It behaves as if sent: nothing waits in the window, and smaller messages still flow.
    sim.publish(publisher, "t", b"ok", QoS::AtLeastOnce);
    let got = sim.take_publishes(small);
    assert_eq!(got.len(), 1);
    assert!(got[0].wire_len <= 64);
    // Nothing is resent later either.
    sim.drop_connection(small);
    sim.reconnect(small, &small_spec);
    assert_eq!(sim.take(small), []);
}

#[test]
fn mqtt_3_1_2_24_packets_are_never_larger_than_the_clients_maximum() {
    let mut sim = Sim::default_v();
    let sub = sim.connect(ConnectSpec::v5("sub").maximum_packet_size(40));
    sim.subscribe(sub, "t", QoS::AtMostOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    for n in 0..60 {
        sim.publish(publisher, "t", &vec![b'x'; n], QoS::AtMostOnce);
    }
    let got = sim.take_publishes(sub);
    assert!(got.iter().all(|p| p.wire_len <= 40));
    assert_eq!(got.last().map(|p| p.wire_len), Some(40));
}

#[test]
fn mqtt_3_2_2_inbound_packet_over_the_broker_maximum_is_disconnected_with_0x95() {
    let mut config = events_config();
    config.limits.max_packet_size = 128;
    let mut sim = Sim::new(config);
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.publish(c, "t", &[0; 100], QoS::AtMostOnce);
    assert!(!sim.is_closed(c));
    sim.publish(c, "t", &[0; 200], QoS::AtMostOnce);
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::PACKET_TOO_LARGE)]);
    assert!(sim.is_closed(c));
}

#[test]
fn inbound_packet_over_the_maximum_is_refused_from_its_header_alone() {
    let mut config = events_config();
    config.limits.max_packet_size = 128;
    let mut sim = Sim::new(config);
    let c = sim.connect(ConnectSpec::v5("a"));
    // Only the fixed header of a 1 MiB PUBLISH: the broker does not wait for the body.
    let header = [0x30, 0x80, 0x80, 0x40];
    sim.feed(c, &header);
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::PACKET_TOO_LARGE)]);
    assert!(sim.is_closed(c));
}

#[test]
fn publish_to_an_overlong_topic_is_refused_with_0x90() {
    let mut config = events_config();
    config.limits.max_topic_length = 8;
    let mut sim = Sim::new(config);
    let c = sim.connect(ConnectSpec::v5("a"));
    let id = sim.publish(c, "123456789", b"x", QoS::AtLeastOnce);
    assert_eq!(
        sim.take(c),
        [Rx::PubAck(id, ReasonCode::TOPIC_NAME_INVALID)]
    );
    let v3 = sim.connect(ConnectSpec::v311("b"));
    let id = sim.publish(v3, "123456789", b"x", QoS::AtLeastOnce);
    assert_eq!(sim.take(v3), [Rx::PubAck(id, ReasonCode::SUCCESS)]);
}

// ----- shared subscriptions ------------------------------------------------------------------

#[test]
fn mqtt_4_8_2_shared_subscription_spreads_messages_across_members() {
    let mut sim = Sim::default_v();
    let members: Vec<Client> = (0..3)
        .map(|i| {
            let c = sim.connect(ConnectSpec::v5(&format!("m{i}")));
            sim.subscribe(c, "$share/g/jobs/+", QoS::AtLeastOnce);
            c
        })
        .collect();
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    for i in 0..30 {
        sim.publish(
            publisher,
            "jobs/x",
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
        );
    }
    let mut all = Vec::new();
    for &m in &members {
        let got = sim.take_payloads(m);
        // Round robin: an even spread.
        assert_eq!(got.len(), 10, "{got:?}");
        all.extend(got);
    }
    all.sort_by_key(|s| s.parse::<u32>().unwrap_or(0));
    let expected: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    assert_eq!(all, expected, "each message exactly once");

    // A member that unsubscribes stops receiving.
    assert_eq!(
        sim.unsubscribe(members[0], &["$share/g/jobs/+"]),
        [ReasonCode::SUCCESS]
    );
    for i in 0..10 {
        sim.publish(
            publisher,
            "jobs/y",
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
        );
    }
    assert_eq!(sim.take(members[0]), []);
    assert_eq!(
        sim.take_payloads(members[1]).len() + sim.take_payloads(members[2]).len(),
        10
    );

    // A member whose session ends stops receiving.
    sim.drop_connection(members[1]);
    for i in 0..10 {
        sim.publish(
            publisher,
            "jobs/z",
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
        );
    }
    assert_eq!(sim.take_payloads(members[2]).len(), 10);
}

#[test]
fn mqtt_4_8_2_shared_subscription_gets_no_retained_messages() {
    let mut sim = Sim::default_v();
    retained_setup(&mut sim);
    let m = sim.connect(ConnectSpec::v5("m"));
    sim.subscribe(m, "$share/g/r/+", QoS::AtLeastOnce);
    assert_eq!(sim.take(m), []);
}

#[test]
fn mqtt_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a"));
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    let id = sim.next_packet_id(c);
    sim.send(
        c,
        Packet::Subscribe(femtomq_core::codec::Subscribe {
            packet_id: pid(id),
            properties: SubscribeProperties::default(),
            subscriptions: Repeated::from_slice(&[Subscription {
                filter: "$share/g/t",
                options: no_local,
            }]),
        }),
    );
    assert_eq!(sim.take(c), [Rx::Disconnect(ReasonCode::PROTOCOL_ERROR)]);
    assert!(sim.is_closed(c));
}

#[test]
fn shared_and_non_shared_subscriptions_of_one_session_each_get_a_copy() {
    let mut sim = Sim::default_v();
    let c = sim.connect(ConnectSpec::v5("a"));
    sim.subscribe(c, "$share/g/t", QoS::AtLeastOnce);
    sim.subscribe(c, "t", QoS::AtLeastOnce);
    let publisher = sim.connect(ConnectSpec::v5("pub"));
    sim.publish(publisher, "t", b"x", QoS::AtLeastOnce);
    assert_eq!(sim.take_payloads(c), ["x", "x"]);
}

// ----- SUBSCRIBE / UNSUBSCRIBE answers --------------------------------------------------------

#[test]
fn mqtt_3_8_4_6_suback_has_a_code_per_filter_and_unsuback_reports_missing_ones() {
    let mut config = events_config();
    config.limits.max_subscriptions_per_client = 2;
    let mut sim = Sim::new(config);
    let c = sim.connect(ConnectSpec::v5("a"));
    let codes = sim.subscribe_many(
        c,
        &[
            ("a", opts(QoS::ExactlyOnce)),
            ("b/+", opts(QoS::AtMostOnce)),
            ("c", opts(QoS::AtLeastOnce)),
        ],
        None,
    );
    assert_eq!(
        codes,
        [
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::QUOTA_EXCEEDED
        ]
    );
    assert_eq!(
        sim.unsubscribe(c, &["a", "zzz", "b/+"]),
        [
            ReasonCode::SUCCESS,
            ReasonCode::NO_SUBSCRIPTION_EXISTED,
            ReasonCode::SUCCESS
        ]
    );
    assert_eq!(sim.broker.subscription_count(), 0);
    assert_eq!(sim.broker.subscription_nodes(), 0);
}

#[test]
fn mqtt_3_9_3_v311_suback_failure_is_0x80() {
    let mut config = events_config();
    config.limits.max_subscriptions_per_client = 1;
    let mut sim = Sim::new(config);
    let c = sim.connect(ConnectSpec::v311("a"));
    let codes = sim.subscribe_many(
        c,
        &[("a", opts(QoS::AtLeastOnce)), ("b", opts(QoS::AtLeastOnce))],
        None,
    );
    assert_eq!(codes, [ReasonCode::GRANTED_QOS_1, ReasonCode(0x80)]);
}

#[test]
fn mqtt_3_10_4_unsubscribed_filter_no_longer_delivers() {
    for version in VERSIONS {
        let mut sim = Sim::default_v();
        let (sub, publisher) = pair(&mut sim, version, "t/#", QoS::AtLeastOnce);
        sim.unsubscribe(sub, &["t/#"]);
        sim.publish(publisher, "t/x", b"x", QoS::AtLeastOnce);
        assert_eq!(sim.take(sub), []);
    }
}
