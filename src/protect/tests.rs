//! Sealing a produce's records and opening them on fetch, end to end over real batch bytes.

use kafka_protocol::records::{Compression, RecordBatchDecoder};

use super::*;
use crate::policy::protect::{compile, Mask, ProtectDoc, View};
use crate::protocol::records::test_batch;

fn protect(doc: &str, mask: Option<&str>) -> Protect {
    let doc: ProtectDoc = serde_json::from_str(doc).unwrap();
    compile(
        &doc,
        &[
            ("email".into(), "pii".into()),
            ("customer.phone".into(), "pii".into()),
        ],
        vec!["User:reader".into()],
        mask,
    )
    .unwrap()
}

fn key(kid: &str, byte: u8) -> Arc<DataKey> {
    Arc::new(keys::DataKey::fixed(kid, [byte; 32]))
}

/// Random-mode keys only.
fn random(key: Arc<DataKey>) -> SealKeys {
    SealKeys {
        random: Some(key),
        deterministic: None,
    }
}

/// `set` sealed as a produce to topic `t` is, `require_encrypted` enforced.
fn seal(set: &[u8], p: &Protect, keys: &SealKeys) -> Result<SealedSet, SealError> {
    seal_records(
        set,
        "t",
        (p, Layout::Json),
        keys,
        1 << 20,
        &mut Required::Enforce,
    )
}

/// `set` sealed, when something in it must be.
fn sealed(set: &[u8], p: &Protect, keys: &SealKeys) -> Bytes {
    seal(set, p, keys).unwrap().set.unwrap()
}

/// A record set as a principal with `view` sees it (the set itself when nothing changes); with
/// `need`, keys not in memory are noted there instead of counting as gone.
fn show(
    set: &[u8],
    p: &Arc<Protect>,
    view: View,
    keys: &keys::KeyRing,
    need: Option<&mut Vec<(Box<str>, Box<str>)>>,
) -> Vec<u8> {
    let view = fetch::TopicView {
        topic: "t".into(),
        protect: p.clone(),
        view,
        stats: None,
        avro: None,
    };
    fetch::show_records(set, &view, Some(keys), 1 << 20, need).unwrap_or_else(|| set.to_vec())
}

fn values(set: &[u8]) -> Vec<String> {
    let mut buf = Bytes::copy_from_slice(set);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let batch = RecordBatchDecoder::decode(&mut buf).unwrap();
        for r in batch.records {
            out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

const RECORDS: [&str; 3] = [
    r#"{"id": 1, "email": "ann@x.example", "customer": {"phone": "+33 1", "tier": "gold"}}"#,
    r#"{"id": 2, "email": null}"#,
    r#"{"id": 3}"#,
];

fn produced(compression: Compression) -> Vec<u8> {
    let specs: Vec<test_batch::Spec<'_>> = RECORDS
        .iter()
        .map(|r| (Some(&b"k"[..]), Some(r.as_bytes()), &[][..]))
        .collect();
    test_batch::encode(&specs, compression)
}

#[test]
fn sealed_fields_hide_their_values_and_leave_every_other_byte() {
    let p = protect(r#"{"pii": "encrypt"}"#, None);
    let keys = random(key("20261201.aa", 1));
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let set = produced(c);
        let done = seal(&set, &p, &keys).unwrap();
        assert_eq!(done.fields, 2, "email and phone of the first record");
        let sealed = done.set.unwrap();
        let vals = values(&sealed);
        assert!(
            !vals[0].contains("ann@x.example") && !vals[0].contains("+33 1"),
            "{c:?}"
        );
        assert!(
            vals[0].starts_with(r#"{"id": 1, "email": "mg1:20261201.aa:"#),
            "{}",
            vals[0]
        );
        assert!(vals[0].contains(r#", "tier": "gold"}}"#));
        assert_eq!(vals[1], RECORDS[1], "null stays null");
        assert_eq!(vals[2], RECORDS[2]);
        // Same codec as sent.
        let b = batches(&sealed).next().unwrap().unwrap();
        assert_eq!(
            b.attributes & 7,
            batches(&set).next().unwrap().unwrap().attributes & 7
        );
    }
}

#[test]
fn readers_get_the_plaintext_back_and_others_the_mask() {
    let p = Arc::new(protect(r#"{"pii": "encrypt"}"#, Some("***")));
    let ring = keys::KeyRing::in_memory(vec![("t", key("20261201.aa", 1))]);
    let keys = random(ring.cached("t", "20261201.aa").unwrap().unwrap());
    let set = produced(Compression::Lz4);
    let sealed = sealed(&set, &p, &keys);
    let mut need = Vec::new();
    let plain = show(&sealed, &p, View::Plain, &ring, Some(&mut need));
    assert_eq!(values(&plain), RECORDS.to_vec());
    let masked = show(
        &sealed,
        &p,
        View::Masked(Mask::Text("***".into())),
        &ring,
        Some(&mut need),
    );
    assert_eq!(
        values(&masked)[0],
        r#"{"id": 1, "email": "***", "customer": {"phone": "***", "tier": "gold"}}"#
    );
    let hashed = show(
        &sealed,
        &p,
        View::Masked(Mask::Hash),
        &ring,
        Some(&mut need),
    );
    // SHA-256 of `"ann@x.example"` (with its quotes).
    let want = ring::digest::digest(&ring::digest::SHA256, br#""ann@x.example""#);
    let hex: String = want.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert!(values(&hashed)[0].contains(&format!("sha256:{hex}")));
}

#[test]
fn a_missing_key_is_asked_for_and_a_gone_key_masks_for_everyone() {
    let p = Arc::new(protect(r#"{"pii": "encrypt"}"#, None));
    let k = key("20261201.bb", 2);
    let keys = random(k);
    let sealed = sealed(&produced(Compression::None), &p, &keys);
    let empty = keys::KeyRing::in_memory(vec![]);
    let mut need = Vec::new();
    let _ = show(&sealed, &p, View::Plain, &empty, Some(&mut need));
    need.dedup();
    assert_eq!(need, vec![("t".into(), "20261201.bb".into())]);
    let shown = show(&sealed, &p, View::Plain, &empty, None);
    assert_eq!(
        values(&shown)[0],
        r#"{"id": 1, "email": "***", "customer": {"phone": "***", "tier": "gold"}}"#
    );
}

#[tokio::test]
async fn a_dry_run_judges_the_plaintext_and_the_mask_where_a_key_is_gone() {
    let p = Arc::new(protect(r#"{"pii": "encrypt"}"#, Some("***")));
    let ring = keys::KeyRing::in_memory(vec![("t", key("20261201.aa", 1))]);
    let keys = random(ring.cached("t", "20261201.aa").unwrap().unwrap());
    let sealed = sealed(&produced(Compression::Zstd), &p, &keys);
    assert_ne!(values(&sealed), RECORDS.to_vec());
    let opened = fetch::opened_for_judging(&sealed, "t", &p, &ring, 1 << 20)
        .await
        .expect("envelopes to open");
    assert_eq!(values(&opened), RECORDS.to_vec());
    // Offsets are kept: the dry run resumes from them.
    let offsets = |set: &[u8]| -> Vec<i64> {
        let mut buf = Bytes::copy_from_slice(set);
        let batch = RecordBatchDecoder::decode(&mut buf).unwrap();
        batch.records.iter().map(|r| r.offset).collect()
    };
    assert_eq!(offsets(&opened), offsets(&sealed));
    // A key that cannot be loaded (this ring has no key store): the mask, never the envelope.
    let empty = keys::KeyRing::in_memory(vec![]);
    let masked = fetch::opened_for_judging(&sealed, "t", &p, &empty, 1 << 20)
        .await
        .expect("envelopes replaced");
    assert_eq!(
        values(&masked)[0],
        r#"{"id": 1, "email": "***", "customer": {"phone": "***", "tier": "gold"}}"#
    );
    // Nothing sealed: nothing to change.
    let plain = produced(Compression::None);
    assert!(fetch::opened_for_judging(&plain, "t", &p, &ring, 1 << 20)
        .await
        .is_none());
}

#[test]
fn deterministic_fields_seal_equal_values_equally() {
    let p = protect(r#"{"pii": "encrypt", "deterministic": ["email"]}"#, None);
    let keys = SealKeys {
        random: Some(key("20261201.aa", 1)),
        deterministic: Some(key("d.cc", 3)),
    };
    let specs: Vec<test_batch::Spec<'_>> = vec![
        (
            None,
            Some(&br#"{"email": "a@x", "customer": {"phone": "1"}}"#[..]),
            &[][..],
        ),
        (
            None,
            Some(&br#"{"email": "a@x", "customer": {"phone": "1"}}"#[..]),
            &[][..],
        ),
    ];
    let sealed = sealed(&test_batch::encode(&specs, Compression::None), &p, &keys);
    let v = values(&sealed);
    let email = |s: &str| s.split('"').nth(3).unwrap().to_string();
    let phone = |s: &str| s.split('"').nth(9).unwrap().to_string();
    assert_eq!(email(&v[0]), email(&v[1]));
    assert!(email(&v[0]).starts_with("mg1:d.cc:"));
    assert_ne!(phone(&v[0]), phone(&v[1]), "random mode");
}

#[test]
fn what_cannot_be_sealed_or_is_not_sealed_is_refused_by_index() {
    let p = protect(r#"{"pii": "encrypt"}"#, None);
    let keys = random(key("k", 1));
    let specs: Vec<test_batch::Spec<'_>> = vec![
        (None, Some(&br#"{"email": "a"}"#[..]), &[][..]),
        (None, Some(&b"plain text with a@x"[..]), &[][..]),
    ];
    let set = test_batch::encode(&specs, Compression::Gzip);
    assert!(matches!(
        seal(&set, &p, &keys),
        Err(SealError::NotJson { index: 1, .. })
    ));
    assert_eq!(seal(&set, &p, &SealKeys::default()), Err(SealError::NoKey));
    let required = protect(r#"{"pii": "require_encrypted"}"#, None);
    let env = key("k", 1).cipher.seal(
        "k",
        envelope::FieldAt {
            topic: "t",
            path: "email",
        },
        b"\"a\"",
        false,
    );
    let ok = format!(r#"{{"email": "{env}", "customer": {{"phone": null}}}}"#);
    let specs: Vec<test_batch::Spec<'_>> = vec![
        (None, Some(ok.as_bytes()), &[][..]),
        (None, Some(&br#"{"email": "a@x"}"#[..]), &[][..]),
    ];
    let set = test_batch::encode(&specs, Compression::None);
    assert_eq!(
        seal(&set, &required, &SealKeys::default()),
        Err(SealError::NotSealed {
            index: 1,
            field: "email".into()
        })
    );
    assert_eq!(
        seal(&set[..0], &required, &SealKeys::default()),
        Ok(SealedSet {
            set: None,
            fields: 0
        })
    );
}

#[test]
fn a_confluent_framed_json_value_keeps_its_frame() {
    let p = protect(r#"{"pii": "encrypt"}"#, None);
    let keys = random(key("k", 1));
    let mut framed = vec![0u8, 0, 0, 0, 42];
    framed.extend_from_slice(br#"{"email": "a@x"}"#);
    let specs: Vec<test_batch::Spec<'_>> = vec![(None, Some(&framed[..]), &[][..])];
    let sealed = sealed(&test_batch::encode(&specs, Compression::None), &p, &keys);
    let mut buf = sealed;
    let b = RecordBatchDecoder::decode(&mut buf).unwrap();
    let v = b.records[0].value.clone().unwrap();
    assert_eq!(&v[..5], &[0, 0, 0, 0, 42]);
    assert!(v[5..].starts_with(br#"{"email": "mg1:k:"#));
}

#[test]
fn in_shadow_an_unsealed_required_field_is_noted_and_the_records_go_on() {
    let p = protect(r#"{"pii": "require_encrypted"}"#, None);
    let specs: Vec<test_batch::Spec<'_>> = vec![(None, Some(&br#"{"email": "a@x"}"#[..]), &[][..])];
    let set = test_batch::encode(&specs, Compression::None);
    let mut required = Required::Shadow(None);
    assert_eq!(
        seal_records(
            &set,
            "t",
            (&p, Layout::Json),
            &SealKeys::default(),
            1 << 20,
            &mut required
        ),
        Ok(SealedSet {
            set: None,
            fields: 0
        })
    );
    assert_eq!(required, Required::Shadow(Some("email".into())));
}

/// A Fetch answer at `version` with the sealed set on partition 0 of `t` (plus a partial batch
/// cut at the size limit, and an aborted transaction), and an unprotected topic `u`.
fn fetch_answer(version: i16, sealed: &[u8], other: &[u8]) -> Bytes {
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let mut with_tail = sealed.to_vec();
    with_tail.extend_from_slice(&sealed[..sealed.len() / 2]);
    let mut r = FetchResponse::default();
    if version >= 7 {
        r.session_id = 77;
    }
    for (i, (name, set)) in [("t", &with_tail[..]), ("u", other)]
        .into_iter()
        .enumerate()
    {
        let mut t = FetchableTopicResponse::default();
        if version >= 13 {
            t.topic_id = uuid::Uuid::from_bytes([i as u8 + 1; 16]);
        } else {
            t.topic = TopicName(StrBytes::from_static_str(name));
        }
        let mut p = PartitionData::default();
        p.high_watermark = 1000 + i as i64;
        p.last_stable_offset = 990;
        p.aborted_transactions = Some(vec![AbortedTransaction::default()
            .with_producer_id(kafka_protocol::messages::ProducerId(5))
            .with_first_offset(3)]);
        p.records = Some(Bytes::copy_from_slice(set));
        t.partitions.push(p);
        r.responses.push(t);
    }
    let mut out = bytes::BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(9)
        .encode(
            &mut out,
            kafka_protocol::messages::ApiKey::Fetch.response_header_version(version),
        )
        .unwrap();
    r.encode(&mut out, version).unwrap();
    out.freeze()
}

#[test]
fn a_fetch_answer_is_shown_partition_by_partition_and_the_rest_kept() {
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    let p = Arc::new(protect(r#"{"pii": "encrypt"}"#, None));
    let k = key("20261201.aa", 1);
    let ring = keys::KeyRing::in_memory(vec![("t", k.clone())]);
    let seal = random(k);
    let sealed = sealed(&produced(Compression::Zstd), &p, &seal);
    let other = produced(Compression::Gzip);
    let stats = crate::metrics::Metrics::new().contract("c", "t");
    let views = fetch::FetchViews {
        topics: vec![fetch::TopicView {
            topic: "t".into(),
            protect: p.clone(),
            view: View::Plain,
            stats: Some(stats.clone()),
            avro: None,
        }],
        schemas: None,
    };
    let ids = |id: [u8; 16]| match id[0] {
        1 => Some("t".to_string()),
        2 => Some("u".to_string()),
        _ => None,
    };
    for version in [4i16, 11, 12, 13, 15] {
        let frame = fetch_answer(version, &sealed, &other);
        let fetch::Outcome::Rewritten(parts) =
            fetch::rewrite(&frame, version, &views, &ids, Some(&ring), 1 << 20, false)
        else {
            panic!("v{version}: not rewritten");
        };
        let mut whole = Bytes::from(parts.concat());
        let hv = ApiKey::Fetch.response_header_version(version);
        assert_eq!(
            ResponseHeader::decode(&mut whole, hv)
                .unwrap()
                .correlation_id,
            9
        );
        let r = FetchResponse::decode(&mut whole, version).unwrap();
        if version >= 7 {
            assert_eq!(r.session_id, 77);
        }
        let t = &r.responses[0].partitions[0];
        assert_eq!(t.high_watermark, 1000);
        assert_eq!(t.last_stable_offset, 990);
        assert_eq!(t.aborted_transactions.as_ref().unwrap()[0].producer_id.0, 5);
        let set = t.records.clone().unwrap();
        // Whole batches shown in plaintext, uncompressed; the partial tail as it came.
        let first = batches(&set).next().unwrap().unwrap();
        assert_eq!(first.attributes & 7, 0, "v{version}");
        let mut b = set.clone();
        let decoded = RecordBatchDecoder::decode(&mut b).unwrap();
        let vals: Vec<String> = decoded
            .records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(vals, RECORDS.to_vec(), "v{version}");
        assert_eq!(&set[first.bytes.len()..], &sealed[..sealed.len() / 2]);
        // The unprotected topic's records are the bytes that came.
        assert_eq!(
            r.responses[1].partitions[0].records.as_deref(),
            Some(&other[..])
        );
    }
    // Two fields opened per answer (the first record's email and phone), five answers.
    assert_eq!(stats.fields_opened.get(), 10);
    assert_eq!(stats.fields_masked.get() + stats.fields_unreadable.get(), 0);
    // A principal who gets the ciphertext: nothing to do.
    let none = fetch::FetchViews {
        topics: vec![fetch::TopicView {
            topic: "u".into(),
            protect: p,
            view: View::Plain,
            stats: None,
            avro: None,
        }],
        schemas: None,
    };
    let frame = fetch_answer(12, &sealed, &other);
    assert!(matches!(
        fetch::rewrite(&frame, 12, &none, &ids, Some(&ring), 1 << 20, false),
        fetch::Outcome::Unchanged
    ));
}

#[test]
fn only_a_fetch_that_may_carry_a_protected_topic_concerns_its_views() {
    use kafka_protocol::messages::fetch_request::FetchTopic;
    use kafka_protocol::messages::{ApiKey, FetchRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let views = fetch::FetchViews {
        topics: vec![fetch::TopicView {
            topic: "t".into(),
            protect: Arc::new(protect(r#"{"pii": "encrypt"}"#, None)),
            view: View::Plain,
            stats: None,
            avro: None,
        }],
        schemas: None,
    };
    let ids = |id: [u8; 16]| match id[0] {
        1 => Some("t".to_string()),
        2 => Some("u".to_string()),
        _ => None,
    };
    let request = |version: i16, topic: u8, epoch: i32| {
        let mut t = FetchTopic::default();
        if version >= 13 {
            t.topic_id = uuid::Uuid::from_bytes([topic; 16]);
        } else {
            t.topic = TopicName(StrBytes::from_static_str(if topic == 1 {
                "t"
            } else {
                "u"
            }));
        }
        let mut r = FetchRequest::default();
        if version >= 7 {
            r.session_epoch = epoch;
        }
        r.topics.push(t);
        let h = RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(version);
        crate::protocol::header::join_request(&h, ApiKey::Fetch, version, &r).unwrap()
    };
    for version in [4i16, 12] {
        assert!(views.concern(&request(version, 1, 0), version, &ids));
        assert!(!views.concern(&request(version, 2, 0), version, &ids));
    }
    assert!(views.concern(&request(13, 1, -1), 13, &ids));
    assert!(!views.concern(&request(13, 2, -1), 13, &ids));
    assert!(
        views.concern(&request(13, 9, -1), 13, &ids),
        "an unknown id may be protected"
    );
    assert!(
        views.concern(&request(12, 2, 3), 12, &ids),
        "an incremental fetch may carry any"
    );
    assert!(views.concern(&Bytes::from_static(&[0, 1, 2]), 12, &ids));
}

/// A Fetch answer streamed through [`fetch::StreamShower`] read `step` bytes at a time: what
/// the client got (size prefix and all) and how it went.
async fn streamed(
    frame: &[u8],
    version: i16,
    views: &fetch::FetchViews,
    ring: &keys::KeyRing,
) -> (Vec<u8>, crate::protocol::fetch_stream::Streamed) {
    use crate::protocol::fetch_stream::stream_fetch;
    use crate::protocol::frame::FrameReader;
    let mut data = (frame.len() as i32).to_be_bytes().to_vec();
    data.extend_from_slice(frame);
    let mut reader = FrameReader::new(&data[..], 1 << 24);
    let (size, head) = reader.read_head(4).await.unwrap().unwrap();
    let mut out = (size as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&head);
    let ids = |id: [u8; 16]| (id[0] == 1).then(|| "t".to_string());
    let mut shower = fetch::StreamShower::new(views, &ids, Some(ring), 1 << 20);
    let r = stream_fetch(
        &mut reader,
        &mut out,
        size - head.len(),
        version,
        false,
        &mut shower,
        |_, _, _, _| {},
    )
    .await
    .unwrap();
    (out, r)
}

#[tokio::test]
async fn a_streamed_answer_is_shown_batch_by_batch_at_its_size_loading_keys_as_it_goes() {
    use crate::protocol::records::Codec;
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    let dir = std::env::temp_dir().join(format!("mg-stream-show-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kek = dir.join("kek");
    std::fs::write(
        &kek,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [3u8; 32]),
    )
    .unwrap();
    let ring = || {
        keys::KeyRing::new(
            dir.join("keys"),
            super::kms::Kms::local(&kek).unwrap(),
            keys::Rotate::Day,
            std::time::Duration::from_secs(60),
        )
    };
    // One gateway sealed them; another, whose ring holds no key yet, shows them.
    let k = ring().prepare("t", false).await.unwrap();
    let p = Arc::new(protect(r#"{"pii": "encrypt"}"#, Some("***")));
    let set = [
        sealed(&produced(Compression::None), &p, &random(k.clone())).to_vec(),
        sealed(&produced(Compression::Zstd), &p, &random(k)).to_vec(),
    ]
    .concat();
    let other = produced(Compression::Gzip);
    let stats = crate::metrics::Metrics::new().contract("c", "t");
    let views = |view: View| fetch::FetchViews {
        topics: vec![fetch::TopicView {
            topic: "t".into(),
            protect: p.clone(),
            view,
            stats: Some(stats.clone()),
            avro: None,
        }],
        schemas: None,
    };
    let shown_set = |out: &[u8], version: i16| {
        let mut b = Bytes::copy_from_slice(&out[4..]);
        ResponseHeader::decode(&mut b, ApiKey::Fetch.response_header_version(version)).unwrap();
        let r = FetchResponse::decode(&mut b, version).unwrap();
        assert_eq!(
            r.responses[1].partitions[0].records.as_deref(),
            Some(&other[..]),
            "the other topic as it came"
        );
        r.responses[0].partitions[0].records.clone().unwrap()
    };
    for version in [4i16, 12, 13, 15] {
        let frame = fetch_answer(version, &set, &other);
        let reader = ring();
        let (out, r) = streamed(&frame, version, &views(View::Plain), &reader).await;
        assert!(r.walked && r.cut == 0, "v{version}: {r:?}");
        assert_eq!(
            out.len(),
            frame.len() + 4,
            "v{version}: the size prefix holds"
        );
        assert_eq!(
            i32::from_be_bytes(out[..4].try_into().unwrap()) as usize,
            frame.len()
        );
        let shown = shown_set(&out, version);
        // Whole batches in plaintext; the zstd one compressed again with zstd; then the filler.
        let codecs: Vec<Codec> = batches(&shown)
            .map_while(Result::ok)
            .map(|b| b.codec().unwrap())
            .collect();
        assert_eq!(codecs, vec![Codec::None, Codec::Zstd], "v{version}");
        let whole: usize = batches(&shown)
            .map_while(Result::ok)
            .map(|b| b.bytes.len())
            .sum();
        assert_eq!(values(&shown[..whole]), [RECORDS, RECORDS].concat());
        assert!(
            reader.cached("t", &k_kid(&set)).unwrap().is_ok(),
            "loaded once, kept"
        );
        // Others see the mask, streamed the same way.
        let (out, _) = streamed(
            &frame,
            version,
            &views(View::Masked(Mask::Text("***".into()))),
            &reader,
        )
        .await;
        let shown = shown_set(&out, version);
        let whole: usize = batches(&shown)
            .map_while(Result::ok)
            .map(|b| b.bytes.len())
            .sum();
        let masked = values(&shown[..whole]);
        assert!(
            masked[0].contains(r#""email": "***""#) && !masked[0].contains("ann@"),
            "{masked:?}"
        );
    }
    // Per answer: two fields opened for the reader, two masked for the other, in each of the
    // two sealed batches.
    assert_eq!(stats.fields_opened.get(), 4 * 4);
    assert_eq!(stats.fields_masked.get(), 4 * 4);
    assert_eq!(stats.fields_unreadable.get(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The kid of the first envelope in a sealed set.
fn k_kid(set: &[u8]) -> String {
    let v = &values(&set[..batches(set).next().unwrap().unwrap().bytes.len()])[0];
    let at = v.find("mg1:").unwrap();
    v[at + 4..].split(':').next().unwrap().to_string()
}

const AVRO_POLICY: &str = r#"contract:
  name: c
  owner: o
  topic: t
  schema:
    format: avro
    definition: {"type": "record", "name": "R", "fields": [{"name": "id", "type": "long"}, {"name": "email", "type": ["null", "string"], "default": null, "classification": "pii"}, {"name": "card", "type": "bytes", "classification": "pii"}, {"name": "note", "type": "string"}]}
  protect: {pii: encrypt}
  pii_readers: [User:reader]
  mask_on_fetch: '***'
"#;

/// The records of topic `t` in a Fetch answer, as values.
fn answer_values(parts: &[Bytes], version: i16) -> Vec<Vec<u8>> {
    use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;
    let mut whole = parts.concat();
    let mut buf = Bytes::from(std::mem::take(&mut whole));
    ResponseHeader::decode(&mut buf, ApiKey::Fetch.response_header_version(version)).unwrap();
    let r = FetchResponse::decode(&mut buf, version).unwrap();
    let mut set = r.responses[0].partitions[0].records.clone().unwrap();
    let mut out = Vec::new();
    while let Ok(batch) = RecordBatchDecoder::decode(&mut set) {
        out.extend(batch.records.into_iter().map(|r| r.value.unwrap().to_vec()));
    }
    out
}

#[test]
fn avro_fields_are_sealed_in_place_and_shown_per_principal_under_the_same_writer_schema() {
    use crate::policy::judge::Writers;
    use crate::protect::avro_fields::ContractWriters;
    use apache_avro::types::Value as A;
    let set = crate::policy::load::compile_text("c.yaml", AVRO_POLICY);
    let generation = Arc::new(crate::generation::Generation::new(
        set,
        &crate::metrics::Metrics::new(),
    ));
    let c = &generation.contracts[0];
    let p = c.protect.clone().unwrap();
    let schema = &c.schema.as_ref().unwrap().avro.as_ref().unwrap().decoder;
    let id = generation
        .registry
        .versions("t-value")
        .unwrap()
        .last()
        .unwrap()
        .id;
    let record = |i: i64, email: Option<&str>, card: &[u8]| {
        let v = A::Record(vec![
            ("id".into(), A::Long(i)),
            (
                "email".into(),
                match email {
                    Some(e) => A::Union(1, Box::new(A::String(e.into()))),
                    None => A::Union(0, Box::new(A::Null)),
                },
            ),
            ("card".into(), A::Bytes(card.to_vec())),
            ("note".into(), A::String("kept".into())),
        ]);
        let mut framed = vec![0];
        framed.extend_from_slice(&id.to_be_bytes());
        framed.extend(apache_avro::to_avro_datum(schema, v.clone()).unwrap());
        (framed, v)
    };
    let originals = [
        record(1, Some("ann@x.example"), b"4111-1111"),
        record(2, None, b""),
        record(3, Some(&"long-address@".repeat(20)), &[0xff; 200]),
    ];
    let specs: Vec<test_batch::Spec<'_>> = originals
        .iter()
        .map(|(v, _)| (Some(&b"k"[..]), Some(&v[..]), &[][..]))
        .collect();
    let produced = test_batch::encode(&specs, Compression::Lz4);
    let writers = ContractWriters {
        writers: Writers {
            decoders: &generation.decoders,
            external: None,
        },
        contract: 0,
    };
    let k = key("20261201.aa", 1);
    let done = seal_records(
        &produced,
        "t",
        (&p, Layout::Avro(&writers)),
        &random(k.clone()),
        1 << 20,
        &mut Required::Enforce,
    )
    .unwrap();
    assert_eq!(
        done.fields, 5,
        "two fields of two records, the card of the second"
    );
    let sealed = done.set.unwrap();
    // Read straight from the topic with the writer schema: envelopes in place, the rest as sent.
    let decode = |v: &[u8]| {
        assert_eq!(&v[..5], &originals[0].0[..5], "the frame is kept");
        apache_avro::from_avro_datum(schema, &mut &v[5..], None).unwrap()
    };
    let stored: Vec<A> = values_raw(&sealed).iter().map(|v| decode(v)).collect();
    let A::Record(first) = &stored[0] else {
        panic!()
    };
    let A::Union(1, email) = &first[1].1 else {
        panic!("{:?}", first[1])
    };
    let A::String(email) = &**email else { panic!() };
    assert!(email.starts_with("mg1:20261201.aa:"), "{email}");
    let A::Bytes(card) = &first[2].1 else {
        panic!()
    };
    assert!(card.starts_with(b"mg1:20261201.aa:"));
    assert_eq!(first[0].1, A::Long(1));
    assert_eq!(first[3].1, A::String("kept".into()));
    let A::Record(second) = &stored[1] else {
        panic!()
    };
    assert_eq!(
        second[1].1,
        A::Union(0, Box::new(A::Null)),
        "null stays null"
    );

    // Through a Fetch: the reader gets the bytes produced back; another principal the mask.
    let ring = keys::KeyRing::in_memory(vec![("t", k)]);
    let ids = |_: [u8; 16]| None;
    for (principal, want) in [("User:reader", None), ("User:bi", Some("***"))] {
        let views = fetch::FetchViews::for_principal(&generation, principal, None).unwrap();
        let frame = fetch_answer(12, &sealed, &produced);
        let fetch::Outcome::Rewritten(parts) =
            fetch::rewrite(&frame, 12, &views, &ids, Some(&ring), 1 << 20, false)
        else {
            panic!("{principal}: not rewritten");
        };
        let shown = answer_values(&parts, 12);
        assert_eq!(shown.len(), 3);
        for (got, (framed, original)) in shown.iter().zip(&originals) {
            match want {
                None => assert_eq!(got, framed, "{principal} reads what was produced"),
                Some(mask) => {
                    let A::Record(fields) = decode(got) else {
                        panic!()
                    };
                    let A::Record(orig) = original else { panic!() };
                    assert_eq!(fields[0], orig[0]);
                    assert_eq!(fields[3], orig[3]);
                    match &orig[1].1 {
                        A::Union(0, _) => assert_eq!(fields[1].1, orig[1].1),
                        _ => assert_eq!(fields[1].1, A::Union(1, Box::new(A::String(mask.into())))),
                    }
                    assert_eq!(fields[2].1, A::Bytes(mask.as_bytes().to_vec()));
                }
            }
        }
    }

    // A value the contract cannot read refuses the partition: nothing goes out in plaintext.
    let mut unknown = originals[0].0.clone();
    unknown[1..5].copy_from_slice(&999u32.to_be_bytes());
    let specs: Vec<test_batch::Spec<'_>> = vec![(None, Some(&unknown[..]), &[][..])];
    let err = seal_records(
        &test_batch::encode(&specs, Compression::None),
        "t",
        (&p, Layout::Avro(&writers)),
        &random(key("20261201.aa", 1)),
        1 << 20,
        &mut Required::Enforce,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "record 0: the contract cannot read writer schema id 999, so its protected fields cannot be found"
    );
}

fn values_raw(set: &[u8]) -> Vec<Vec<u8>> {
    let mut buf = Bytes::copy_from_slice(set);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let batch = RecordBatchDecoder::decode(&mut buf).unwrap();
        out.extend(batch.records.into_iter().map(|r| r.value.unwrap().to_vec()));
    }
    out
}
