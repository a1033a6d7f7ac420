//! Bad input: each case gets a typed error, other requests and connections carry
//! on, the broker stays up and its data stays intact.

use bytes::{BufMut, Bytes, BytesMut};
use eddy_sdk::protocol::batch::BatchBuilder;
use eddy_sdk::protocol::codec::{from_bytes, to_bytes};
use eddy_sdk::protocol::frame::{request_frame, split_response, ApiKey};
use eddy_sdk::protocol::messages::*;
use eddy_sdk::protocol::{ErrorCode, ErrorResponse};
use eddy_sdk::{Admin, Client, ClientError, NewTopic, Producer, ProducerConfig, ProducerRecord};
use eddy_tests::BrokerProcess;

use super::read_all;

/// Sends raw bytes on a new stream, finishes it, and returns the first
/// response's error code and error body (or None for success).
async fn raw(client: &Client, bytes: &[u8]) -> anyhow::Result<(ErrorCode, Option<ErrorResponse>, Bytes)> {
    let (mut send, mut recv) = client.open_stream().await?;
    send.write_all(bytes).await?;
    send.finish()?;
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    recv.read_exact(&mut body).await?;
    let (code, payload) = split_response(Bytes::from(body))?;
    let code = ErrorCode::from_u16(code);
    if code == ErrorCode::None {
        return Ok((code, None, payload));
    }
    Ok((code, Some(from_bytes(payload)?), Bytes::new()))
}

fn frame_with(api_key: u16, version: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u32_le(4 + payload.len() as u32);
    b.put_u16_le(api_key);
    b.put_u16_le(version);
    b.put_slice(payload);
    b.to_vec()
}

fn produce_frame(topic: &str, partition: u32, batch: Bytes) -> Vec<u8> {
    let req = ProduceRequest {
        topic: topic.into(),
        acks: Acks::Leader,
        timeout_ms: 1000,
        partitions: vec![PartitionBatch { partition, batch }],
    };
    request_frame(ApiKey::Produce, &to_bytes(&req)).to_vec()
}

fn partition_error(payload: Bytes) -> ErrorCode {
    let resp: ProduceResponse = from_bytes(payload).expect("produce response");
    ErrorCode::from_u16(resp.partitions[0].error_code)
}

async fn assert_healthy(client: &Client) -> anyhow::Result<()> {
    let topics = Admin::new(client.clone()).list_topics().await?;
    assert!(topics.iter().any(|t| t.name == "kept"), "metadata still served");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_typed_error_and_nothing_breaks() -> anyhow::Result<()> {
    let broker = BrokerProcess::start_with(&["--max-record-bytes", "2000"])?;
    let client = broker.client().await?;
    Admin::new(client.clone()).create_topic(NewTopic::new("kept", 2)).await?;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    for i in 0..100 {
        producer.send(ProducerRecord::new("kept", format!("v{i}")).partition(i % 2)).await?;
    }
    producer.flush().await?;

    // Truncated frame: the length promises more than the stream carries.
    let mut truncated = frame_with(ApiKey::Metadata as u16, 1, &[0u8; 50]);
    truncated.truncate(20);
    let (code, body, _) = raw(&client, &truncated).await?;
    assert_eq!(code, ErrorCode::MalformedRequest);
    assert!(body.unwrap().message.contains("truncated"));
    assert_healthy(&client).await?;

    // Length prefix beyond the frame limit: refused before allocating.
    let (code, body, _) = raw(&client, &u32::MAX.to_le_bytes()).await?;
    assert_eq!(code, ErrorCode::MalformedRequest);
    assert!(body.unwrap().message.contains("exceeds the limit"));
    // Length shorter than a header.
    let (code, _, _) = raw(&client, &[2, 0, 0, 0, 1, 0]).await?;
    assert_eq!(code, ErrorCode::MalformedRequest);

    // Unknown API key and unsupported version.
    let (code, body, _) = raw(&client, &frame_with(999, 1, &[])).await?;
    assert_eq!(code, ErrorCode::UnknownApiKey);
    assert!(body.unwrap().message.contains("999"));
    let (code, _, _) = raw(&client, &frame_with(ApiKey::Metadata as u16, 7, &[0])).await?;
    assert_eq!(code, ErrorCode::UnsupportedVersion);

    // A payload that does not decode.
    let (code, _, _) = raw(&client, &frame_with(ApiKey::Fetch as u16, 1, &[1, 2, 3])).await?;
    assert_eq!(code, ErrorCode::MalformedRequest);
    let (code, _, _) = raw(&client, &frame_with(ApiKey::Metadata as u16, 1, &[9])).await?;
    assert_eq!(code, ErrorCode::MalformedRequest);
    assert_healthy(&client).await?;

    // A batch whose CRC does not match.
    let mut b = BatchBuilder::with_capacity(100);
    b.push(None, b"hello", 1, &[]);
    let good = b.finish(0, 0);
    let mut corrupt = BytesMut::from(&good[..]);
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0xff;
    let (code, _, payload) = raw(&client, &produce_frame("kept", 0, corrupt.freeze())).await?;
    assert_eq!(code, ErrorCode::None);
    assert_eq!(partition_error(payload), ErrorCode::CorruptBatch);
    // A batch cut short.
    let (_, _, payload) = raw(&client, &produce_frame("kept", 0, good.slice(..good.len() - 3))).await?;
    assert_eq!(partition_error(payload), ErrorCode::CorruptBatch);

    // A record over the broker's --max-record-bytes.
    let mut b = BatchBuilder::with_capacity(5000);
    b.push(None, &[7u8; 3000], 1, &[]);
    let (_, _, payload) = raw(&client, &produce_frame("kept", 0, b.finish(0, 0))).await?;
    assert_eq!(partition_error(payload), ErrorCode::RecordTooLarge);
    // ... and through the SDK, as a typed error on that record only.
    let big = producer.send_and_wait(ProducerRecord::new("kept", vec![1u8; 3000]).partition(0)).await;
    assert!(
        matches!(
            big,
            Err(ClientError::Broker { code: ErrorCode::RecordTooLarge, .. }) | Err(ClientError::RecordTooLarge { .. })
        ),
        "{big:?}"
    );

    // Unknown topic and partition, for produce and fetch.
    let (_, _, payload) = raw(&client, &produce_frame("nope", 0, good.clone())).await?;
    assert_eq!(partition_error(payload), ErrorCode::UnknownTopic);
    let (_, _, payload) = raw(&client, &produce_frame("kept", 9, good.clone())).await?;
    assert_eq!(partition_error(payload), ErrorCode::UnknownPartition);
    let fetch = |topic: &str, partition| FetchRequest {
        topic: topic.into(),
        partition,
        offset: 0,
        max_bytes: 1 << 20,
        min_bytes: 0,
        max_wait_ms: 0,
    };
    assert!(matches!(
        client.request(&fetch("nope", 0)).await,
        Err(ClientError::Broker { code: ErrorCode::UnknownTopic, .. })
    ));
    assert!(matches!(
        client.request(&fetch("kept", 5)).await,
        Err(ClientError::Broker { code: ErrorCode::UnknownPartition, .. })
    ));
    // Fetch beyond the log end.
    let mut beyond = fetch("kept", 0);
    beyond.offset = 1_000;
    match client.request(&beyond).await {
        Err(ClientError::Broker { code: ErrorCode::OffsetOutOfRange, log_start, log_end, .. }) => {
            assert_eq!((log_start, log_end), (Some(0), Some(50)));
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }

    // Garbage on a brand-new connection does not affect this one, and the data is intact.
    let other = broker.client().await?;
    let _ = raw(&other, b"\x05\x00\x00\x00garbage").await;
    assert_healthy(&client).await?;
    let read = read_all(&client, "kept", 100).await?;
    assert_eq!(read[&0].len() + read[&1].len(), 100);
    Ok(())
}
