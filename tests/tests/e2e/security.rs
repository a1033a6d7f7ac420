//! Identity and authorization against real brokers: every attack of issue 11
//! (inter-broker requests from clients, brokers posing as other brokers,
//! unauthenticated and wrongly authenticated connections) is refused with
//! its typed error and leaves data untouched; ACLs decide what users and
//! processors may do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use eddy_sdk::protocol::messages::*;
use eddy_sdk::protocol::security::*;
use eddy_sdk::protocol::ErrorCode;
use eddy_sdk::{
    Admin, Client, ClientConfig, ClientError, NewTopic, Processors, Producer, ProducerConfig, ProducerRecord, Security,
};
use eddy_tests::{eddy, BrokerProcess};

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Broker { code, .. }) => code,
        other => panic!("expected a broker error, got {other:?}"),
    }
}

/// Issues a certificate with the broker's own CA (`eddy ca issue-*`).
fn issue(broker: &BrokerProcess, args: &[&str], out: &Path) -> anyhow::Result<()> {
    let ca_dir = broker.dir().join("tls");
    let mut all = vec!["ca"];
    all.extend_from_slice(args);
    all.extend(["--ca-dir", ca_dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let o = eddy(&all, b"")?;
    anyhow::ensure!(o.status.success(), "eddy ca failed: {}", String::from_utf8_lossy(&o.stderr));
    Ok(())
}

fn plain(broker: &BrokerProcess) -> ClientConfig {
    ClientConfig::new(broker.addr().to_string()).ca_file(broker.ca()).request_timeout(Duration::from_secs(5))
}

async fn as_user(broker: &BrokerProcess, user: &str, password: &str) -> anyhow::Result<Client> {
    Ok(Client::connect(plain(broker).credentials(user, password)).await?)
}

async fn seeded(broker: &BrokerProcess, topic: &str, records: usize) -> anyhow::Result<Client> {
    let admin_client = broker.client().await?;
    Admin::new(admin_client.clone()).create_topic(NewTopic::new(topic, 1)).await?;
    let producer = Producer::new(admin_client.clone(), ProducerConfig::default()).await?;
    for i in 0..records {
        producer.send_and_wait(ProducerRecord::new(topic, format!("v{i}"))).await?;
    }
    producer.close().await?;
    Ok(admin_client)
}

async fn log_end(admin: &Client, topic: &str) -> anyhow::Result<u64> {
    Ok(Admin::new(admin.clone()).list_offset(topic, 0, OffsetSpec::Latest).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_send_what_only_brokers_may() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let admin = seeded(&broker, "kept", 100).await?;
    let dir = tempfile::tempdir()?;
    issue(&broker, &["issue-client", "mallory"], &dir.path().join("c"))?;
    let cert_client =
        Client::connect(plain(&broker).client_cert(dir.path().join("c/mallory.pem"), dir.path().join("c/mallory.key")))
            .await?;
    let raft = |payload: &'static [u8]| RaftMessage { payload: Bytes::from_static(payload) };
    // Even the superuser (a user, not a broker) and a client certificate are refused.
    for client in [&admin, &cert_client] {
        assert_eq!(
            code(client.request(&RaftSnapshotRequest(raft(b"\x00\x01"))).await),
            ErrorCode::ClusterAuthorizationFailed
        );
        assert_eq!(code(client.request(&RaftVoteRequest(raft(b"\x05"))).await), ErrorCode::ClusterAuthorizationFailed);
        assert_eq!(code(client.request(&RaftAppendRequest(raft(b""))).await), ErrorCode::ClusterAuthorizationFailed);
        assert_eq!(
            code(client.request(&MetadataWriteRequest(raft(b"\x01"))).await),
            ErrorCode::ClusterAuthorizationFailed
        );
        let heartbeat = BrokerHeartbeatRequest { broker_id: 1, applied_index: 999 };
        assert_eq!(code(client.request(&heartbeat).await), ErrorCode::ClusterAuthorizationFailed);
        let fetch = ReplicaFetchRequest {
            topic: "kept".into(),
            partition: 0,
            replica_id: 2,
            leader_epoch: 0,
            fetch_offset: 0,
            last_fetched_epoch: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
        };
        assert_eq!(code(client.request(&fetch).await), ErrorCode::ClusterAuthorizationFailed);
    }
    // Nothing changed: the topic and its records are there.
    assert_eq!(log_end(&admin, "kept").await?, 100);
    let log = broker.log();
    assert!(log.contains("CLUSTER_AUTHORIZATION_FAILED"), "refusals are logged");
    assert!(log.contains("127.0.0.1"), "with the peer address");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_proves_only_its_own_id() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let dir = tempfile::tempdir()?;
    issue(&broker, &["issue-broker", "--id", "2"], &dir.path().join("b2"))?;
    let two =
        Client::connect(plain(&broker).client_cert(dir.path().join("b2/broker.pem"), dir.path().join("b2/broker.key")))
            .await?;
    // Broker 2 may speak for itself (broker 1 does not know a broker 2, which is a different refusal) ...
    let own = two.request(&BrokerHeartbeatRequest { broker_id: 2, applied_index: 0 }).await;
    assert_ne!(code(own), ErrorCode::ClusterAuthorizationFailed);
    // ... but never for broker 3 or broker 1.
    for other in [3, 1] {
        let posing = two.request(&BrokerHeartbeatRequest { broker_id: other, applied_index: 0 }).await;
        assert_eq!(code(posing), ErrorCode::ClusterAuthorizationFailed, "posing as broker {other}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_wrong_logins_are_refused_and_no_secret_is_logged() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let admin = seeded(&broker, "t", 1).await?;
    Security::new(admin.clone()).create_user("alice", "correct horse").await?;
    // No credentials at all: refused at once with the typed error.
    let anonymous = Client::connect(plain(&broker)).await?;
    assert_eq!(code(Admin::new(anonymous).list_topics().await), ErrorCode::AuthenticationFailed);
    // Wrong password and unknown user: the same refusal.
    for (user, password) in [("alice", "battery staple"), ("nobody", "correct horse")] {
        let c = as_user(&broker, user, password).await?;
        assert_eq!(code(Admin::new(c).list_topics().await), ErrorCode::AuthenticationFailed, "{user}");
    }
    // The right password works.
    let alice = as_user(&broker, "alice", "correct horse").await?;
    Admin::new(alice).list_topics().await?;
    let log = broker.log();
    assert!(log.contains("authentication failed"), "failed logins are logged");
    let admin_password = std::fs::read_to_string(broker.dir().join("admin.password"))?;
    for secret in ["correct horse", "battery staple", admin_password.trim()] {
        assert!(!log.contains(secret), "the log holds a password");
    }
    Ok(())
}

fn rule(principal: &str, kind: ResourceType, name: &str, prefix: bool, op: Operation, allow: bool) -> AclRule {
    AclRule {
        principal: principal.into(),
        resource_type: kind,
        name: name.into(),
        pattern: if prefix { PatternType::Prefix } else { PatternType::Literal },
        operation: op,
        permission: if allow { Permission::Allow } else { Permission::Deny },
    }
}

async fn produce_one(client: &Client, topic: &str) -> Result<(), ClientError> {
    let req = ProduceRequest {
        topic: topic.into(),
        acks: Acks::Leader,
        timeout_ms: 5000,
        partitions: vec![PartitionBatch {
            partition: 0,
            batch: {
                let mut b = eddy_sdk::protocol::BatchBuilder::with_capacity(128);
                b.push(None, b"x", 1, &[]);
                b.finish(0, 0)
            },
        }],
    };
    let resp = client.request_to_leader(topic, 0, &req).await?;
    match resp.partitions.first() {
        Some(p) if p.error_code == 0 => Ok(()),
        Some(p) => Err(ClientError::Broker {
            code: ErrorCode::from_u16(p.error_code),
            message: p.error_message.clone(),
            log_start: None,
            log_end: None,
        }),
        None => Err(ClientError::Decode("no partition answer".into())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_matrix_allow_deny_prefix_and_superuser() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let admin = broker.client().await?;
    let admin_api = Admin::new(admin.clone());
    for t in ["orders", "orders.eu", "logs.app", "secret", "logs.secret"] {
        admin_api.create_topic(NewTopic::new(t, 1)).await?;
    }
    let security = Security::new(admin.clone());
    security.create_user("alice", "pw-alice").await?;
    security
        .add_acls(vec![
            rule("User:alice", ResourceType::Topic, "orders", false, Operation::Write, true),
            rule("User:alice", ResourceType::Topic, "logs.", true, Operation::Read, true),
            rule("User:alice", ResourceType::Topic, "logs.secret", false, Operation::Read, false),
            rule("User:alice", ResourceType::Group, "g", false, Operation::Read, true),
        ])
        .await?;
    let alice = as_user(&broker, "alice", "pw-alice").await?;
    // Write allowed on the literal name only. Topics alice may not describe
    // are hidden from her (metadata never names them); one she may see but
    // not write is refused by the broker.
    produce_one(&alice, "orders").await?;
    assert_eq!(code(produce_one(&alice, "orders.eu").await), ErrorCode::UnknownTopic);
    assert_eq!(code(produce_one(&alice, "secret").await), ErrorCode::UnknownTopic);
    assert_eq!(code(produce_one(&alice, "logs.app").await), ErrorCode::AuthorizationFailed);
    let named = alice.request(&MetadataRequest { topics: Some(vec!["secret".into()]) }).await;
    assert_eq!(code(named), ErrorCode::AuthorizationFailed, "naming a hidden topic is refused, not answered");
    // Read by prefix, with a deny that wins.
    let fetch = |topic: &str| FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        min_bytes: 0,
        max_wait_ms: 0,
    };
    alice.request_to_leader("logs.app", 0, &fetch("logs.app")).await?;
    assert_eq!(
        code(alice.request_to_leader("logs.secret", 0, &fetch("logs.secret")).await),
        ErrorCode::AuthorizationFailed
    );
    assert_eq!(code(alice.request_to_leader("orders", 0, &fetch("orders")).await), ErrorCode::AuthorizationFailed);
    // Metadata lists only what alice may describe (write and read imply describe; deny read does not).
    let names: Vec<String> = Admin::new(alice.clone()).list_topics().await?.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["logs.app", "logs.secret", "orders"]);
    // No admin rights.
    assert_eq!(
        code(Admin::new(alice.clone()).create_topic(NewTopic::new("new", 1)).await),
        ErrorCode::AuthorizationFailed
    );
    assert_eq!(code(Admin::new(alice.clone()).delete_topic("orders").await), ErrorCode::AuthorizationFailed);
    assert_eq!(code(Security::new(alice.clone()).create_user("eve", "pw").await), ErrorCode::AuthorizationFailed);
    assert_eq!(code(Security::new(alice.clone()).list_acls(None).await), ErrorCode::AuthorizationFailed);
    // A deny on everything overrides the allows.
    security.add_acls(vec![rule("User:alice", ResourceType::Topic, "*", false, Operation::All, false)]).await?;
    let alice = as_user(&broker, "alice", "pw-alice").await?;
    assert_eq!(code(produce_one(&alice, "orders").await), ErrorCode::UnknownTopic);
    assert!(Admin::new(alice.clone()).list_topics().await?.is_empty());
    // The superuser may do anything; rules are listed.
    produce_one(&admin, "secret").await?;
    assert_eq!(security.list_acls(Some("User:alice")).await?.len(), 5);
    assert_eq!(
        security.remove_acls(vec![rule("User:alice", ResourceType::Topic, "*", false, Operation::All, false)]).await?,
        1
    );
    let alice = as_user(&broker, "alice", "pw-alice").await?;
    produce_one(&alice, "orders").await?;
    Ok(())
}

fn wasm(name: &str) -> anyhow::Result<Bytes> {
    Ok(Bytes::from(std::fs::read(eddy_tests::processor_wasm(name))?))
}

fn deploy_request(
    name: &str,
    input: &str,
    output: &str,
    wasm: Bytes,
) -> eddy_sdk::protocol::processors::DeployProcessorRequest {
    use eddy_sdk::protocol::processors::*;
    DeployProcessorRequest {
        name: name.into(),
        inputs: vec![input.into()],
        output: output.into(),
        parallelism: 1,
        on_error: ErrorPolicy::DeadLetter,
        params: Vec::new(),
        start: StartPosition::Beginning,
        timeout_ms: 0,
        memory_bytes: 0,
        wasm,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_run_with_their_deployment_rights_only() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let admin = broker.client().await?;
    let admin_api = Admin::new(admin.clone());
    for t in ["in", "out", "elsewhere"] {
        admin_api.create_topic(NewTopic::new(t, 1)).await?;
    }
    let security = Security::new(admin.clone());
    security.create_user("dev", "pw-dev").await?;
    security
        .add_acls(vec![
            rule("User:dev", ResourceType::Processor, "up", false, Operation::All, true),
            rule("User:dev", ResourceType::Topic, "in", false, Operation::Read, true),
        ])
        .await?;
    let dev = as_user(&broker, "dev", "pw-dev").await?;
    // dev may not write to `out`: the deploy is refused.
    let refused = dev.request(&deploy_request("up", "in", "out", wasm("uppercase")?)).await;
    assert_eq!(code(refused), ErrorCode::AuthorizationFailed);
    assert_eq!(code(Processors::new(admin.clone()).describe("up").await), ErrorCode::UnknownProcessor);
    // Deployed by the superuser, the processor runs (embedded worker, as the broker).
    let deployed = admin.request(&deploy_request("up", "in", "out", wasm("uppercase")?)).await?;
    assert_eq!(deployed.deployed_by, "User:admin", "the deployment records who deployed it");
    produce_one(&admin, "in").await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while log_end(&admin, "out").await? < 1 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the processor produced nothing; log:\n{}", broker.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A connection acting as the processor (as a worker does) may write its
    // output but not another topic, nor read its output.
    let worker = Client::connect(plain(&broker).credentials("dev", "pw-dev").act_as_processor("up")).await?;
    produce_one(&worker, "out").await?;
    assert_eq!(code(produce_one(&worker, "elsewhere").await), ErrorCode::UnknownTopic, "hidden from the processor");
    assert_eq!(code(produce_one(&worker, "in").await), ErrorCode::AuthorizationFailed, "an input is read-only");
    // A hand-made commit for offsets of a topic that is not an input is refused.
    use eddy_sdk::protocol::processors::*;
    let commit = CommitProcessorBatchRequest {
        name: "up".into(),
        member_id: String::new(),
        generation: 0,
        offsets: vec![CommittedOffset { topic: "elsewhere".into(), partition: 0, offset: 5, metadata: String::new() }],
        state: Vec::new(),
        stats: ProcessorStats::default(),
    };
    assert_eq!(code(worker.request(&commit).await), ErrorCode::AuthorizationFailed);
    // A user who may not run the processor cannot act as it.
    security.create_user("eve", "pw-eve").await?;
    let eve = Client::connect(plain(&broker).credentials("eve", "pw-eve").act_as_processor("up")).await?;
    assert_eq!(code(Admin::new(eve).list_topics().await), ErrorCode::AuthenticationFailed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_users_and_rules() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let dir = tempfile::tempdir()?;
    let pw: PathBuf = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n")?;
    broker.cli_ok(&["user", "create", "carol", "--new-password-file", pw.to_str().unwrap()])?;
    let users = broker.cli_ok(&["user", "list", "--json"])?;
    assert!(users.contains("\"carol\"") && users.contains("\"admin\""), "{users}");
    broker.cli_ok(&["acl", "add", "--principal", "carol", "--allow", "read,describe", "--topic", "t.", "--prefix"])?;
    let rules = broker.cli_ok(&["acl", "list", "--json"])?;
    assert_eq!(rules.lines().count(), 2, "{rules}");
    assert!(rules.contains("\"prefix\"") && rules.contains("User:carol"), "{rules}");
    broker.cli_ok(&["topic", "create", "t.one"])?;
    // As carol, through the CLI's --user and EDDY_PASSWORD.
    let out = std::process::Command::new(eddy_tests::eddy_bin())
        .args([
            "topic",
            "list",
            "--broker",
            &broker.addr().to_string(),
            "--ca",
            broker.ca().to_str().unwrap(),
            "--user",
            "carol",
        ])
        .env("EDDY_PASSWORD", "s3cret")
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("t.one"));
    broker.cli_ok(&[
        "acl",
        "remove",
        "--principal",
        "carol",
        "--allow",
        "read,describe",
        "--topic",
        "t.",
        "--prefix",
    ])?;
    broker.cli_ok(&["user", "delete", "carol"])?;
    assert!(!broker.cli_ok(&["user", "list"])?.contains("carol"));
    Ok(())
}

/// A bare QUIC connection to `broker` (no SDK), verified against its CA.
async fn raw_connection(broker: &BrokerProcess) -> anyhow::Result<quinn::Connection> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(broker.ca())? {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![eddy_sdk::protocol::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    Ok(endpoint.connect(broker.addr(), "localhost")?.await?)
}

/// One Authenticate step on a stream: (error code, answer payload).
async fn auth_step(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    message: &str,
) -> anyhow::Result<(u16, Bytes)> {
    use eddy_sdk::protocol::codec::{from_bytes, to_bytes};
    let req = AuthenticateRequest {
        mechanism: SCRAM_SHA_256.into(),
        payload: Bytes::from(message.to_string()),
        act_as_processor: None,
    };
    send.write_all(&eddy_sdk::protocol::frame::request_frame(
        eddy_sdk::protocol::ApiKey::Authenticate,
        &to_bytes(&req),
    ))
    .await?;
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    recv.read_exact(&mut body).await?;
    let (code, payload) = eddy_sdk::protocol::frame::split_response(Bytes::from(body))?;
    if code != 0 {
        return Ok((code, payload));
    }
    let answer: AuthenticateResponse = from_bytes(payload)?;
    Ok((code, answer.payload))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_scram_exchange_fails_and_silent_connections_are_closed() -> anyhow::Result<()> {
    use eddy_sdk::protocol::scram::ScramClient;
    let broker = BrokerProcess::start()?;
    let admin = broker.client().await?;
    Security::new(admin).create_user("alice", "pw-alice").await?;
    // A whole exchange, recorded.
    let conn = raw_connection(&broker).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let (client, first) = ScramClient::start_with_nonce("alice", "pw-alice", "fixed-client-nonce");
    let (code, server_first) = auth_step(&mut send, &mut recv, &first).await?;
    assert_eq!(code, 0);
    let (_, last) = client.handle_server_first(std::str::from_utf8(&server_first)?)?;
    let (code, _) = auth_step(&mut send, &mut recv, &last).await?;
    assert_eq!(code, 0, "the recorded exchange itself succeeds");
    // Replayed on a new connection: the broker's nonce differs, so the proof fails.
    let replay = raw_connection(&broker).await?;
    let (mut send, mut recv) = replay.open_bi().await?;
    assert_eq!(auth_step(&mut send, &mut recv, &first).await?.0, 0);
    let (code, _) = auth_step(&mut send, &mut recv, &last).await?;
    assert_eq!(code, ErrorCode::AuthenticationFailed as u16);
    // A connection that never authenticates is closed after the auth timeout.
    let silent = raw_connection(&broker).await?;
    let started = std::time::Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(20), silent.closed()).await?;
    assert!(started.elapsed() >= Duration::from_secs(9), "closed after {:?}", started.elapsed());
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(c.error_code, quinn::VarInt::from_u32(0x41)),
        other => panic!("expected the broker to close the connection, got {other}"),
    }
    Ok(())
}
