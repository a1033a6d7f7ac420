//! Handler tests of the processor requests: frames in, typed responses out,
//! against a real store, group service and runtime (no network).

use std::sync::Arc;

use bytes::Bytes;
use eddy_protocol::codec::{from_bytes, to_bytes};
use eddy_protocol::frame::{request_frame, split_response, ApiKey, LENGTH_BYTES};
use eddy_protocol::messages::*;
use eddy_protocol::processors::*;
use eddy_protocol::{ErrorCode, ErrorResponse};
use tokio::sync::watch;

use super::processors::deployment_of;
use super::{HandlerConfig, Handlers};
use crate::cluster::plan::assign_replicas;
use crate::groups::GroupService;
use crate::replication::{ReplicaManager, ReplicationConfig};
use crate::store::tests::{config, topic};
use crate::store::Store;
use crate::store::{MetaCommand, TopicConfig};

struct Env {
    _dir: tempfile::TempDir,
    _shutdown: watch::Sender<bool>,
    store: Arc<Store>,
    handlers: Arc<Handlers>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(config(dir.path())).unwrap());
    let cluster = crate::cluster::testing::single(dir.path(), store.clone()).await;
    for (name, partitions) in [("in", 2), ("out", 1), ("one", 1)] {
        let config = TopicConfig { assignments: assign_replicas(&[1], 0, partitions, 1, 0), ..topic(name, partitions) };
        cluster.propose(MetaCommand::CreateTopic { config }).await.unwrap();
    }
    let replicas = ReplicaManager::new(cluster.clone(), store.clone(), ReplicationConfig::default());
    replicas.reconcile();
    let groups = GroupService::new(store.clone(), cluster);
    let runtime = Arc::new(eddy_runtime::Runtime::new(None).unwrap());
    let (shutdown, rx) = watch::channel(false);
    let config = HandlerConfig {
        broker_id: 1,
        advertised_addr: "127.0.0.1:9400".into(),
        max_batch_bytes: 1 << 20,
        max_record_bytes: 1 << 20,
    };
    let auth = crate::server::handlers::AuthContext {
        authorizer: crate::auth::Authorizer::new(["admin".to_string()]),
        denials: Default::default(),
        fake_salt_key: b"test".to_vec(),
        skip_authorization: false,
    };
    let handlers = Arc::new(Handlers::new(store.clone(), groups, runtime, replicas, config, auth, rx));
    Env { _dir: dir, _shutdown: shutdown, store, handlers }
}

/// Sends one raw request body; returns the error code and the response payload.
async fn raw(h: &Arc<Handlers>, key: ApiKey, payload: &[u8]) -> (u16, Bytes) {
    let frame = request_frame(key, payload).slice(LENGTH_BYTES..);
    // As a broker: these tests are about the requests, not about rights.
    let session =
        Arc::new(crate::auth::Session::new("127.0.0.1:1".parse().unwrap(), Some(crate::auth::Principal::Broker(1))));
    let pending = h.dispatch(frame, &session).await.expect("every request gets a response");
    let response: Vec<u8> = pending.await.concat();
    split_response(Bytes::from(response).slice(LENGTH_BYTES..)).unwrap()
}

async fn call<R: Request>(h: &Arc<Handlers>, req: &R) -> Result<R::Response, (ErrorCode, String)> {
    let (code, payload) = raw(h, R::KEY, &to_bytes(req)).await;
    if code == 0 {
        return Ok(from_bytes(payload).unwrap());
    }
    let body: ErrorResponse = from_bytes(payload).unwrap();
    Err((ErrorCode::from_u16(code), body.message))
}

fn deploy_request(name: &str) -> DeployProcessorRequest {
    DeployProcessorRequest {
        name: name.into(),
        inputs: vec!["in".into()],
        output: "out".into(),
        parallelism: 1,
        on_error: ErrorPolicy::DeadLetter,
        params: Vec::new(),
        start: StartPosition::End,
        timeout_ms: 0,
        memory_bytes: 0,
        wasm: Bytes::from_static(b"\0asm\x0d\x00\x01\x00"),
    }
}

/// Deploys through the store (the handler would refuse these bytes as a module).
async fn deploy_directly(store: &Store, name: &str, wasm: &'static [u8]) -> ProcessorDescription {
    let req = DeployProcessorRequest { wasm: Bytes::from_static(wasm), ..deploy_request(name) };
    let initial_offsets = vec![("in".into(), 0, 0, String::new()), ("in".into(), 1, 0, String::new())];
    store.deploy_processor(deployment_of(req, "m".into(), 0, initial_offsets, "User:admin".into())).await.unwrap()
}

#[tokio::test]
async fn deploys_are_validated_before_anything_is_created() {
    let env = env().await;
    let h = &env.handlers;
    let cases: Vec<(DeployProcessorRequest, ErrorCode, &str)> = vec![
        (deploy_request("has space"), ErrorCode::InvalidProcessor, "invalid processor name"),
        (deploy_request(""), ErrorCode::InvalidProcessor, "it is empty"),
        (deploy_request(&"x".repeat(201)), ErrorCode::InvalidProcessor, "the limit is 200"),
        (DeployProcessorRequest { inputs: vec![], ..deploy_request("p") }, ErrorCode::InvalidProcessor, "1 to 16"),
        (
            DeployProcessorRequest { inputs: (0..17).map(|_| "in".to_string()).collect(), ..deploy_request("p") },
            ErrorCode::InvalidProcessor,
            "1 to 16",
        ),
        (
            DeployProcessorRequest { inputs: vec!["nope".into()], ..deploy_request("p") },
            ErrorCode::UnknownTopic,
            "input topic nope does not exist: create it with `eddy topic create nope`",
        ),
        (
            DeployProcessorRequest { inputs: vec!["in".into(), "one".into()], ..deploy_request("p") },
            ErrorCode::InvalidProcessor,
            "the inputs must have the same number of partitions (partition p of every input is processed \
             together, with one state): in has 2, one has 1",
        ),
        (
            DeployProcessorRequest { inputs: vec!["in".into(), "in".into()], ..deploy_request("p") },
            ErrorCode::InvalidProcessor,
            "listed twice",
        ),
        (
            DeployProcessorRequest { output: "gone".into(), ..deploy_request("p") },
            ErrorCode::UnknownTopic,
            "`eddy topic create gone`",
        ),
        (
            DeployProcessorRequest { output: "in".into(), ..deploy_request("p") },
            ErrorCode::InvalidProcessor,
            "also an input",
        ),
        (DeployProcessorRequest { parallelism: 0, ..deploy_request("p") }, ErrorCode::InvalidProcessor, "1..=64"),
        (DeployProcessorRequest { parallelism: 65, ..deploy_request("p") }, ErrorCode::InvalidProcessor, "1..=64"),
        (DeployProcessorRequest { wasm: Bytes::new(), ..deploy_request("p") }, ErrorCode::InvalidProcessor, "empty"),
        (
            DeployProcessorRequest { wasm: vec![0u8; (32 << 20) + 1].into(), ..deploy_request("p") },
            ErrorCode::InvalidProcessor,
            "over the limit",
        ),
        (
            DeployProcessorRequest {
                params: vec![ProcessorParam { key: "k".into(), value: "v".repeat(60_000) }; 2],
                ..deploy_request("p")
            },
            ErrorCode::InvalidProcessor,
            "parameters take",
        ),
        (
            DeployProcessorRequest { wasm: Bytes::from_static(b"not wasm at all"), ..deploy_request("p") },
            ErrorCode::InvalidProcessor,
            "not a WebAssembly binary",
        ),
        (
            DeployProcessorRequest { wasm: Bytes::from_static(b"\0asm\x01\x00\x00\x00"), ..deploy_request("p") },
            ErrorCode::InvalidProcessor,
            "not a component",
        ),
        // A valid, empty component: compiled, then refused for not exporting the world.
        (deploy_request("p"), ErrorCode::InvalidProcessor, "does not export"),
    ];
    for (req, code, text) in cases {
        let (got, message) = call(h, &req).await.unwrap_err();
        assert_eq!(got, code, "{message}");
        assert!(message.contains(text), "{message:?} should contain {text:?}");
    }
    assert!(env.store.processors().is_empty());
    // Neither the dead-letter topic nor the logs topic was created.
    assert_eq!(env.store.catalog().keys().collect::<Vec<_>>(), ["in", "one", "out"]);
}

#[tokio::test]
async fn batch_commits_are_checked_like_offset_commits_and_visible_to_groups() {
    let env = env().await;
    let h = &env.handlers;
    deploy_directly(&env.store, "p", b"module-bytes").await;
    let group = processor_group("p");
    let batch = |member: &str, generation: u32, partition: u32, offset: u64| CommitProcessorBatchRequest {
        name: "p".into(),
        member_id: member.into(),
        generation,
        offsets: vec![CommittedOffset { topic: "in".into(), partition, offset, metadata: String::new() }],
        state: vec![PartitionStateWrites {
            partition,
            writes: vec![StateEntry { key: Bytes::from_static(b"k"), value: Some(Bytes::from(offset.to_string())) }],
        }],
        stats: ProcessorStats { records_in: 1, batches: 1, ..ProcessorStats::default() },
    };
    let code = |r: Result<Empty, (ErrorCode, String)>| r.unwrap_err().0;

    let unknown = CommitProcessorBatchRequest { name: "q".into(), ..batch("", 0, 0, 1) };
    assert_eq!(code(call(h, &unknown).await), ErrorCode::UnknownProcessor);
    // No members yet: a tool may commit with an empty member id and generation 0.
    call(h, &batch("", 0, 0, 5)).await.unwrap();
    assert_eq!(code(call(h, &batch("someone", 1, 0, 6)).await), ErrorCode::UnknownMember);

    let join = JoinGroupRequest {
        group: group.clone(),
        member_id: String::new(),
        client_id: "worker".into(),
        topics: vec!["in".into()],
        strategy: AssignmentStrategy::Sticky,
        session_timeout_ms: 30_000,
        rebalance_timeout_ms: 1_000,
    };
    let joined = call(h, &join).await.unwrap();
    let (member, generation) = (joined.member_id.as_str(), joined.generation);
    call(h, &batch(member, generation, 1, 7)).await.unwrap();
    assert_eq!(code(call(h, &batch(member, generation + 1, 1, 8)).await), ErrorCode::IllegalGeneration);
    assert_eq!(code(call(h, &batch("", 0, 1, 8)).await), ErrorCode::UnknownMember);
    assert_eq!(code(call(h, &batch(member, generation, 9, 8)).await), ErrorCode::UnknownPartition);
    let mut big_key = batch(member, generation, 1, 8);
    big_key.state[0].writes[0].key = vec![0u8; 5000].into();
    assert_eq!(code(call(h, &big_key).await), ErrorCode::InvalidRequest);
    // State for a partition the member does not own is refused like its offsets.
    let (join_second, rejoin_first) = (
        JoinGroupRequest { member_id: String::new(), ..join.clone() },
        JoinGroupRequest { member_id: member.to_string(), ..join.clone() },
    );
    let (second, first) = tokio::join!(call(h, &join_second), call(h, &rejoin_first));
    let (second, first) = (second.unwrap(), first.unwrap());
    let theirs = second.assignment[0].partitions[0];
    let mut foreign_state = batch(&first.member_id, first.generation, 0, 9);
    foreign_state.offsets.clear();
    foreign_state.state[0].partition = theirs;
    assert_eq!(code(call(h, &foreign_state).await), ErrorCode::NotPartitionOwner);

    // The offsets are the group's: OffsetFetch and DescribeGroup see them.
    let fetched = call(h, &OffsetFetchRequest { group: group.clone(), topics: None }).await.unwrap();
    let offsets: Vec<(u32, u64)> = fetched.offsets.iter().map(|o| (o.partition, o.offset)).collect();
    assert_eq!(offsets, [(0, 5), (1, 7)]);
    let described = call(h, &DescribeGroupRequest { group: group.clone() }).await.unwrap();
    assert_eq!(described.partitions.iter().map(|p| p.committed).collect::<Vec<_>>(), [Some(5), Some(7)]);
    // State and counters.
    let scan = |partition| StateScanRequest { name: "p".into(), partition, after: None, max_bytes: u32::MAX };
    let scanned = call(h, &scan(1)).await.unwrap();
    assert_eq!(scanned.entries, [StateEntry { key: Bytes::from_static(b"k"), value: Some(Bytes::from_static(b"7")) }]);
    assert!(!scanned.more);
    let described = call(h, &DescribeProcessorRequest { name: "p".into() }).await.unwrap();
    assert_eq!((described.stats.records_in, described.stats.batches), (2, 2));
}

#[tokio::test]
async fn admin_requests_answer_with_typed_errors() {
    let env = env().await;
    let h = &env.handlers;
    let (code, message) = call(h, &DescribeProcessorRequest { name: "p".into() }).await.unwrap_err();
    assert_eq!(code, ErrorCode::UnknownProcessor);
    assert!(message.contains("deploy one with `eddy processor deploy`"), "{message}");
    let unknown = |r: Result<Empty, (ErrorCode, String)>| r.unwrap_err().0 == ErrorCode::UnknownProcessor;
    assert!(unknown(call(h, &DeleteProcessorRequest { name: "p".into() }).await));
    assert!(unknown(call(h, &StopProcessorRequest { name: "p".into(), version: 1, reason: String::new() }).await));
    let scan = StateScanRequest { name: "p".into(), partition: 0, after: None, max_bytes: 0 };
    assert_eq!(call(h, &scan).await.unwrap_err().0, ErrorCode::UnknownProcessor);

    let d = deploy_directly(&env.store, "p", b"the module").await;
    assert_eq!(call(h, &ListProcessorsRequest {}).await.unwrap().processors, std::slice::from_ref(&d));
    let module = call(h, &FetchProcessorModuleRequest { name: "p".into(), version: 1 }).await.unwrap();
    assert_eq!(module.wasm, Bytes::from_static(b"the module"));
    let stale = call(h, &FetchProcessorModuleRequest { name: "p".into(), version: 2 }).await.unwrap_err();
    assert_eq!(stale.0, ErrorCode::UnknownProcessor);
    // max_bytes 0 is clamped: still one page of entries.
    assert!(call(h, &scan).await.unwrap().entries.is_empty());
    // A stale version's stop is ignored; the current one's is applied.
    call(h, &StopProcessorRequest { name: "p".into(), version: 7, reason: "old".into() }).await.unwrap();
    assert_eq!(env.store.processor("p").unwrap().status, STATUS_RUNNING);
    call(h, &StopProcessorRequest { name: "p".into(), version: 1, reason: "bad record".into() }).await.unwrap();
    let d = call(h, &DescribeProcessorRequest { name: "p".into() }).await.unwrap();
    assert_eq!((d.status.as_str(), d.status_reason.as_str()), (STATUS_STOPPED, "bad record"));
    call(h, &DeleteProcessorRequest { name: "p".into() }).await.unwrap();
    assert!(call(h, &ListProcessorsRequest {}).await.unwrap().processors.is_empty());
}

#[tokio::test]
async fn garbage_payloads_get_malformed_request_never_a_panic() {
    let env = env().await;
    let keys = [
        ApiKey::DeployProcessor,
        ApiKey::ListProcessors,
        ApiKey::DescribeProcessor,
        ApiKey::DeleteProcessor,
        ApiKey::FetchProcessorModule,
        ApiKey::CommitProcessorBatch,
        ApiKey::StateScan,
        ApiKey::StopProcessor,
    ];
    let payloads: [&[u8]; 4] = [b"\xff", b"\xff\xff\xff\xff\xff\xff\xff\xff", &[7u8; 64], b"\x01\x00\x00\x00p\x09"];
    for key in keys {
        for payload in payloads {
            let (code, body) = raw(&env.handlers, key, payload).await;
            assert_eq!(ErrorCode::from_u16(code), ErrorCode::MalformedRequest, "{key:?} {payload:?}");
            assert!(from_bytes::<ErrorResponse>(body).is_ok());
        }
    }
}
