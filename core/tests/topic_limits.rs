//! Every bound of [`Limits`] that the topic module enforces, exceeded once.

use femtomq_core::limits::Limits;
use femtomq_core::topic::{
    RetainError, RetainedIndex, SharedStrategy, SubscribeError, SubscribeOutcome, SubscriberId,
    SubscriptionIndex, TopicError, check_filter, check_name,
};
use femtomq_core::{QoS, SubscriptionOptions};

const A: SubscriberId = SubscriberId(0);
const B: SubscriberId = SubscriberId(1);
const OPTIONS: SubscriptionOptions = SubscriptionOptions::with_qos(QoS::AtLeastOnce);

fn limits() -> Limits {
    Limits {
        max_topic_length: 16,
        max_topic_levels: 3,
        max_subscriptions_per_client: 3,
        max_subscriptions_total: 5,
        max_retained_messages: 3,
        max_retained_bytes: 40,
        ..Limits::default()
    }
}

#[test]
fn defaults_are_the_documented_edge_defaults() {
    let limits = Limits::default();
    assert_eq!(limits, Limits::DEFAULT);
    assert_eq!(limits.max_topic_length, 1_024);
    assert_eq!(limits.max_topic_levels, 32);
    assert_eq!(limits.max_subscriptions_per_client, 256);
    assert!(limits.max_subscriptions_total >= limits.max_subscriptions_per_client);
    assert!(limits.max_inflight > 0);
    assert!(limits.max_packet_size >= 1 << 16);
}

#[test]
fn max_topic_length_bounds_names_and_filters() {
    let limits = limits();
    assert_eq!(check_name("0123456789abcdef", &limits), Ok(()));
    assert_eq!(
        check_name("0123456789abcdefg", &limits),
        Err(TopicError::TooLong)
    );
    assert!(check_filter("0123456789abcde#", &limits).is_err());
    // The whole filter counts, `$share/{group}/` included.
    assert_eq!(
        check_filter("$share/g/abcdefgh", &limits).map(|_| ()),
        Err(TopicError::TooLong)
    );

    let mut index = SubscriptionIndex::new(&limits, SharedStrategy::default(), 1);
    assert_eq!(
        index.subscribe(A, "0123456789abcdefg", OPTIONS, None),
        Err(SubscribeError::InvalidFilter(TopicError::TooLong))
    );
    assert_eq!(
        SubscribeError::InvalidFilter(TopicError::TooLong).reason_code(),
        0x8F
    );
    let mut retained = RetainedIndex::new(&limits, 1);
    assert_eq!(
        retained.retain("0123456789abcdefg", b"x".to_vec()),
        Err(RetainError::InvalidTopic(TopicError::TooLong))
    );
    assert_eq!(
        RetainError::InvalidTopic(TopicError::TooLong).reason_code(),
        0x90
    );
    assert_eq!(index.node_count() + retained.node_count(), 0);
}

#[test]
fn max_topic_levels_bounds_names_and_filters() {
    let limits = limits();
    assert_eq!(check_name("a/b/c", &limits), Ok(()));
    assert_eq!(
        check_name("a/b/c/d", &limits),
        Err(TopicError::TooManyLevels)
    );
    assert_eq!(check_name("///", &limits), Err(TopicError::TooManyLevels));
    // Levels count in the filter proper.
    assert!(check_filter("$share/g/a/b/+", &limits).is_ok());
    assert_eq!(
        check_filter("$share/g/a/b/c/#", &limits).map(|_| ()),
        Err(TopicError::TooManyLevels)
    );
    let mut index = SubscriptionIndex::new(&limits, SharedStrategy::default(), 1);
    assert_eq!(
        index.subscribe(A, "a/+/c/#", OPTIONS, None),
        Err(SubscribeError::InvalidFilter(TopicError::TooManyLevels))
    );
    let mut retained = RetainedIndex::new(&limits, 1);
    assert_eq!(
        retained.retain("a/b/c/d", b"x".to_vec()),
        Err(RetainError::InvalidTopic(TopicError::TooManyLevels))
    );
}

#[test]
fn max_subscriptions_per_client_gets_quota_exceeded() {
    let mut index = SubscriptionIndex::new(&limits(), SharedStrategy::default(), 1);
    index.subscribe(A, "a", OPTIONS, None).unwrap();
    index.subscribe(A, "b", OPTIONS, None).unwrap();
    index.subscribe(A, "$share/g/c", OPTIONS, None).unwrap();
    assert_eq!(
        index.subscribe(A, "d", OPTIONS, None),
        Err(SubscribeError::ClientQuotaExceeded)
    );
    assert_eq!(
        index.subscribe(A, "$share/g/d", OPTIONS, None),
        Err(SubscribeError::ClientQuotaExceeded)
    );
    assert_eq!(SubscribeError::ClientQuotaExceeded.reason_code(), 0x97);
    // Replacing does not add a subscription, so it is allowed at the bound.
    assert_eq!(
        index.subscribe(A, "a", OPTIONS, Some(3)),
        Ok(SubscribeOutcome::Replaced)
    );
    // Others are not affected; after an unsubscribe there is room again.
    assert!(index.subscribe(B, "d", OPTIONS, None).is_ok());
    assert!(index.unsubscribe(A, "b"));
    assert!(index.subscribe(A, "d", OPTIONS, None).is_ok());
}

#[test]
fn max_subscriptions_total_gets_quota_exceeded() {
    let mut index = SubscriptionIndex::new(&limits(), SharedStrategy::default(), 1);
    for id in 0..5 {
        index
            .subscribe(SubscriberId(id), "t/#", OPTIONS, None)
            .unwrap();
    }
    assert_eq!(
        index.subscribe(SubscriberId(9), "t/#", OPTIONS, None),
        Err(SubscribeError::TotalQuotaExceeded)
    );
    assert_eq!(
        index.subscribe(SubscriberId(9), "$share/g/t", OPTIONS, None),
        Err(SubscribeError::TotalQuotaExceeded)
    );
    assert_eq!(SubscribeError::TotalQuotaExceeded.reason_code(), 0x97);
    assert_eq!(index.len(), 5);
    index.unsubscribe_all(SubscriberId(0));
    assert!(
        index
            .subscribe(SubscriberId(9), "t/#", OPTIONS, None)
            .is_ok()
    );
}

#[test]
fn max_retained_messages_gets_quota_exceeded() {
    let mut retained = RetainedIndex::new(&limits(), 1);
    for topic in ["a", "b", "c"] {
        retained.retain(topic, b"1".to_vec()).unwrap();
    }
    assert_eq!(
        retained.retain("d", b"1".to_vec()),
        Err(RetainError::MessageQuotaExceeded)
    );
    assert_eq!(RetainError::MessageQuotaExceeded.reason_code(), 0x97);
    assert_eq!(retained.get("d"), None);
    assert_eq!(retained.node_count(), 3);
    // Replacing and deleting are allowed at the bound.
    assert_eq!(retained.retain("a", b"2".to_vec()), Ok(Some(b"1".to_vec())));
    assert_eq!(retained.retain("b", Vec::new()), Ok(Some(b"1".to_vec())));
    assert_eq!(retained.retain("d", b"1".to_vec()), Ok(None));
}

#[test]
fn max_retained_bytes_gets_quota_exceeded() {
    let mut retained = RetainedIndex::new(&limits(), 1);
    // Topic bytes count: 1 + 29 = 30 of 40.
    retained.retain("a", vec![0; 29]).unwrap();
    assert_eq!(retained.bytes(), 30);
    assert_eq!(
        retained.retain("b", vec![0; 10]),
        Err(RetainError::ByteQuotaExceeded)
    );
    assert_eq!(RetainError::ByteQuotaExceeded.reason_code(), 0x97);
    assert!(retained.retain("b", vec![0; 9]).is_ok());
    assert_eq!(retained.bytes(), 40);
    // A replacement that would not fit leaves the previous message in place.
    assert_eq!(
        retained.retain("a", vec![1; 30]),
        Err(RetainError::ByteQuotaExceeded)
    );
    assert_eq!(retained.get("a"), Some(&vec![0; 29]));
    // One that fits in the room freed by the old one is fine.
    assert!(retained.retain("a", vec![1; 20]).is_ok());
    assert_eq!(retained.bytes(), 31);
}
