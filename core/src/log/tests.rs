//! Unit tests of the sled log that need its insides (raw trees, to corrupt a record).
//! Behaviour tests through the public API live in `core/tests/log.rs`.

use super::*;

fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("valid stream name")
}

fn event(payload: &[u8]) -> NewEvent {
    NewEvent {
        id: EventId::new(),
        event_type: "TestEvent".into(),
        schema_version: 1,
        payload: payload.to_vec(),
        pii: None,
    }
}

fn open(dir: &std::path::Path) -> SledLog {
    SledLog::open(&SledLogConfig::new(dir)).expect("open log")
}

async fn append_one(
    log: &SledLog,
    s: &str,
    expected: ExpectedVersion,
) -> Result<AppendOutcome, LogError> {
    log.append(AppendRequest::single(
        stream(s),
        expected,
        vec![event(b"x")],
    ))
    .await
}

#[tokio::test]
async fn positions_and_versions_start_at_one_and_are_dense() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert_eq!(log.head(), 0);
    let a1 = append_one(&log, "a-1", ExpectedVersion::NoStream)
        .await
        .unwrap();
    let b1 = append_one(&log, "b-1", ExpectedVersion::Any).await.unwrap();
    let a2 = append_one(&log, "a-1", ExpectedVersion::Exact(1))
        .await
        .unwrap();
    assert_eq!(
        a1.events,
        vec![Appended {
            position: 1,
            version: 1
        }]
    );
    assert_eq!(
        b1.events,
        vec![Appended {
            position: 2,
            version: 1
        }]
    );
    assert_eq!(
        a2.events,
        vec![Appended {
            position: 3,
            version: 2
        }]
    );
    assert_eq!(log.head(), 3);
    assert_eq!(log.stream_version(&stream("a-1")).await.unwrap(), 2);
    assert_eq!(log.stream_version(&stream("none")).await.unwrap(), 0);
}

#[tokio::test]
async fn a_conflict_on_one_stream_rejects_the_whole_append_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    append_one(&log, "wallet-1", ExpectedVersion::NoStream)
        .await
        .unwrap();
    let request = AppendRequest {
        writes: vec![
            StreamWrite {
                stream: stream("order-1"),
                expected: ExpectedVersion::NoStream,
                events: vec![event(b"placed")],
            },
            StreamWrite {
                stream: stream("wallet-1"),
                expected: ExpectedVersion::Exact(7),
                events: vec![event(b"held")],
            },
        ],
        ..AppendRequest::default()
    };
    match log.append(request).await {
        Err(LogError::WrongExpectedVersion {
            stream: s,
            expected,
            found,
        }) => {
            assert_eq!(s, stream("wallet-1"));
            assert_eq!(expected, ExpectedVersion::Exact(7));
            assert_eq!(found, 1);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(log.head(), 1, "nothing was written");
    assert_eq!(log.stream_version(&stream("order-1")).await.unwrap(), 0);
}

#[tokio::test]
async fn a_multi_stream_append_lands_in_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let request = AppendRequest {
        writes: vec![
            StreamWrite {
                stream: stream("order-1"),
                expected: ExpectedVersion::NoStream,
                events: vec![event(b"placed"), event(b"assigned")],
            },
            StreamWrite {
                stream: stream("wallet-1"),
                expected: ExpectedVersion::NoStream,
                events: vec![event(b"held")],
            },
        ],
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
    };
    let outcome = log.append(request.clone()).await.unwrap();
    assert_eq!(
        outcome.events,
        vec![
            Appended {
                position: 1,
                version: 1
            },
            Appended {
                position: 2,
                version: 2
            },
            Appended {
                position: 3,
                version: 1
            },
        ]
    );
    let all = log.read_all(1, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all
        .iter()
        .all(|e| e.correlation_id == request.correlation_id));
    assert_eq!(all[2].stream, stream("wallet-1"));
    assert_eq!(all[2].payload, b"held");
}

#[tokio::test]
async fn retried_appends_return_the_original_positions_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let request = AppendRequest::single(
        stream("s-1"),
        ExpectedVersion::NoStream,
        vec![event(b"a"), event(b"b")],
    );
    let first = log.append(request.clone()).await.unwrap();
    append_one(&log, "s-1", ExpectedVersion::Exact(2))
        .await
        .unwrap();
    let again = log.append(request.clone()).await.unwrap();
    assert!(again.duplicate && !first.duplicate);
    assert_eq!(again.events, first.events);
    assert_eq!(log.head(), 3);

    // The same id with another body is an error, not a silent no-op.
    let mut changed = request.clone();
    changed.writes[0].events[1].payload = b"other".to_vec();
    assert!(matches!(
        log.append(changed).await,
        Err(LogError::EventIdReused { .. })
    ));
    // Part old, part new: refused as a whole.
    let mut partial = request;
    partial.writes[0].events[1] = event(b"new");
    assert!(matches!(
        log.append(partial).await,
        Err(LogError::PartialDuplicate { .. })
    ));
    assert_eq!(log.head(), 3);
}

#[tokio::test]
async fn idempotency_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let request =
        AppendRequest::single(stream("s-1"), ExpectedVersion::NoStream, vec![event(b"a")]);
    let first = {
        let log = open(dir.path());
        log.append(request.clone()).await.unwrap()
    };
    let log = open(dir.path());
    let again = log.append(request).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.events, first.events);
    assert_eq!(log.head(), 1);
    assert_eq!(log.stream_version(&stream("s-1")).await.unwrap(), 1);
}

#[tokio::test]
async fn streams_read_forwards_and_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..20u8 {
        let s = if i % 2 == 0 { "even-1" } else { "odd-1" };
        log.append(AppendRequest::single(
            stream(s),
            ExpectedVersion::Any,
            vec![event(&[i])],
        ))
        .await
        .unwrap();
    }
    let forwards = log
        .read_stream(&stream("even-1"), 3, Direction::Forwards, 4)
        .await
        .unwrap();
    let versions: Vec<u64> = forwards.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![3, 4, 5, 6]);
    assert_eq!(forwards[0].payload, vec![4]);
    let last = log
        .read_stream(&stream("odd-1"), u64::MAX, Direction::Backwards, 1)
        .await
        .unwrap();
    assert_eq!((last[0].version, last[0].payload.clone()), (10, vec![19]));
    let back = log
        .read_stream(&stream("odd-1"), 4, Direction::Backwards, 10)
        .await
        .unwrap();
    let versions: Vec<u64> = back.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![4, 3, 2, 1]);
    assert!(log
        .read_stream(&stream("none"), 1, Direction::Forwards, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    assert!(matches!(
        StreamName::new(""),
        Err(LogError::InvalidStreamName(_))
    ));
    assert!(matches!(
        StreamName::new("a".repeat(129)),
        Err(LogError::InvalidStreamName(_))
    ));
    assert!(matches!(
        StreamName::new("has space"),
        Err(LogError::InvalidStreamName(_))
    ));
    assert!(matches!(
        StreamName::new("nul\0byte"),
        Err(LogError::InvalidStreamName(_))
    ));
    assert!(StreamName::new("a".repeat(128)).is_ok());

    let s = stream("s-1");
    type Case = (AppendRequest, fn(&LogError) -> bool);
    let cases: Vec<Case> = vec![
        (AppendRequest::default(), |e| {
            matches!(e, LogError::EmptyAppend)
        }),
        (
            AppendRequest::single(s.clone(), ExpectedVersion::Any, vec![]),
            |e| matches!(e, LogError::EmptyAppend),
        ),
        (
            AppendRequest::single(
                s.clone(),
                ExpectedVersion::Any,
                vec![NewEvent {
                    schema_version: 0,
                    ..event(b"x")
                }],
            ),
            |e| matches!(e, LogError::InvalidSchemaVersion),
        ),
        (
            AppendRequest::single(
                s.clone(),
                ExpectedVersion::Any,
                vec![NewEvent {
                    event_type: String::new(),
                    ..event(b"x")
                }],
            ),
            |e| matches!(e, LogError::InvalidEventType),
        ),
        (
            AppendRequest::single(
                s.clone(),
                ExpectedVersion::Any,
                vec![event(&vec![0; MAX_PAYLOAD_BYTES + 1])],
            ),
            |e| matches!(e, LogError::PayloadTooLarge { .. }),
        ),
        (
            AppendRequest::single(
                s.clone(),
                ExpectedVersion::Any,
                (0..=MAX_EVENTS_PER_APPEND).map(|_| event(b"x")).collect(),
            ),
            |e| matches!(e, LogError::TooManyEvents { .. }),
        ),
        (
            AppendRequest::single(
                s.clone(),
                ExpectedVersion::Any,
                (0..9).map(|_| event(&vec![0; 60_000])).collect(),
            ),
            |e| matches!(e, LogError::PayloadTooLarge { .. }),
        ),
        (
            {
                let e = event(b"x");
                AppendRequest::single(s.clone(), ExpectedVersion::Any, vec![e.clone(), e])
            },
            |e| matches!(e, LogError::DuplicateIdInAppend { .. }),
        ),
        (
            AppendRequest {
                writes: vec![
                    StreamWrite {
                        stream: s.clone(),
                        expected: ExpectedVersion::Any,
                        events: vec![event(b"x")],
                    },
                    StreamWrite {
                        stream: s.clone(),
                        expected: ExpectedVersion::Any,
                        events: vec![event(b"y")],
                    },
                ],
                ..AppendRequest::default()
            },
            |e| matches!(e, LogError::StreamRepeated { .. }),
        ),
    ];
    for (request, is_expected) in cases {
        let err = log.append(request).await.expect_err("bad input must fail");
        assert!(is_expected(&err), "unexpected error: {err}");
    }
    assert_eq!(log.head(), 0);
}

#[tokio::test]
async fn decode_refuses_unknown_schema_versions_and_other_types() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let payload = bincode::serialize(&42u32).unwrap();
    let e = NewEvent {
        schema_version: 3,
        payload,
        ..event(b"")
    };
    log.append(AppendRequest::single(
        stream("s-1"),
        ExpectedVersion::Any,
        vec![e],
    ))
    .await
    .unwrap();
    let recorded = &log.read_all(1, 1).await.unwrap()[0];
    assert_eq!(recorded.decode::<u32>("TestEvent", 3).unwrap(), 42);
    assert!(matches!(
        recorded.decode::<u32>("TestEvent", 2),
        Err(LogError::UnknownSchemaVersion {
            found: 3,
            supported: 2,
            ..
        })
    ));
    assert!(matches!(
        recorded.decode::<u32>("OtherEvent", 3),
        Err(LogError::WrongEventType { position: 1, .. })
    ));
}

/// Rewrites one byte of the stored record at `position` (inside its payload).
fn tamper(log: &SledLog, position: u64, payload: &[u8]) {
    let tree = log.raw_log_tree();
    let (key, value) = tree
        .range(..=position.to_be_bytes())
        .next_back()
        .unwrap()
        .unwrap();
    let mut bytes = value.to_vec();
    let at = bytes
        .windows(payload.len())
        .position(|w| w == payload)
        .expect("payload is stored in the clear");
    bytes[at] ^= 0xff;
    tree.insert(key, bytes).unwrap();
}

#[tokio::test]
async fn verify_reports_the_first_broken_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..10u32 {
        let payload = format!("payload-number-{i:04}");
        log.append(AppendRequest::single(
            stream("s-1"),
            ExpectedVersion::Any,
            vec![event(payload.as_bytes())],
        ))
        .await
        .unwrap();
    }
    let good = log.verify().await.unwrap();
    assert_eq!(
        (good.events_checked, good.head, good.first_broken),
        (10, 10, None)
    );
    tamper(&log, 7, b"payload-number-0006");
    let report = log.verify().await.unwrap();
    let broken = report.first_broken.expect("tampering is found");
    assert_eq!(broken.position, 7);
    assert_eq!(report.events_checked, 6);
}

#[tokio::test]
async fn a_corrupt_record_on_read_reports_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for _ in 0..3 {
        append_one(&log, "s-1", ExpectedVersion::Any).await.unwrap();
    }
    let tree = log.raw_log_tree();
    let (key, value) = tree
        .range(..=2u64.to_be_bytes())
        .next_back()
        .unwrap()
        .unwrap();
    let first = u64::from_be_bytes(key.as_ref().try_into().unwrap());
    // Cut the record short: its offsets no longer fit.
    tree.insert(key, &value[..value.len() - 3]).unwrap();
    match log.read_all(1, 10).await {
        Err(LogError::Corrupt { position, .. }) => assert_eq!(position, first),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn a_condition_write_checks_a_stream_and_writes_nothing_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    append_one(&log, "wallet-1", ExpectedVersion::NoStream)
        .await
        .unwrap();
    let guarded = |expected| AppendRequest {
        writes: vec![
            StreamWrite {
                stream: stream("account-1"),
                expected: ExpectedVersion::Any,
                events: vec![event(b"deletion")],
            },
            StreamWrite {
                stream: stream("wallet-1"),
                expected,
                events: vec![],
            },
        ],
        ..AppendRequest::default()
    };
    // The wallet moved since the decision: refused, nothing written.
    assert!(matches!(
        log.append(guarded(ExpectedVersion::NoStream)).await,
        Err(LogError::WrongExpectedVersion { found: 1, .. })
    ));
    assert_eq!(log.head(), 1);
    let outcome = log
        .append(guarded(ExpectedVersion::Exact(1)))
        .await
        .unwrap();
    assert_eq!(
        outcome.events,
        vec![Appended {
            position: 2,
            version: 1
        }]
    );
    assert_eq!(
        log.stream_version(&stream("wallet-1")).await.unwrap(),
        1,
        "the condition wrote nothing"
    );
    // A condition alone, or one without a version to check, is refused.
    let alone = AppendRequest::single(stream("wallet-1"), ExpectedVersion::Exact(1), vec![]);
    assert!(matches!(
        log.append(alone).await,
        Err(LogError::EmptyAppend)
    ));
    let unchecked = guarded(ExpectedVersion::Any);
    assert!(matches!(
        log.append(unchecked).await,
        Err(LogError::EmptyAppend)
    ));
}
