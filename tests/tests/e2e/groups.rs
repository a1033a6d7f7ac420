//! Consumer groups end to end: members are `eddy consume --group ... --json`
//! processes (killed with SIGKILL for faults) or SDK `GroupConsumer`s; the
//! group is inspected with `Admin::describe_group` and `eddy group describe`.
//! Every wait is a loop with a deadline; nothing asserts on timing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use eddy_sdk::protocol::messages::{
    AssignmentStrategy, CommittedOffset, GroupDescription, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, OffsetCommitRequest,
};
use eddy_sdk::protocol::ErrorCode;
use eddy_sdk::{
    Admin, Client, ClientError, GroupConfig, GroupConsumer, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use eddy_tests::{BrokerProcess, CliProcess};

/// Longest any single wait of these tests may take.
const WAIT: Duration = Duration::from_secs(60);

/// Fails once `deadline` has passed, with `what` and the members' stderr.
fn check_deadline(deadline: Instant, what: &str, members: &[Member]) -> anyhow::Result<()> {
    if Instant::now() < deadline {
        return Ok(());
    }
    let logs: Vec<String> = members.iter().map(|m| format!("--- {} stderr:\n{}", m.name, m.proc.stderr())).collect();
    bail!("timed out waiting for {what}\n{}", logs.join("\n"))
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// One record as a member printed it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Got {
    partition: u32,
    offset: u64,
    value: String,
}

/// An `eddy consume TOPIC --group G --json` process and what it printed.
struct Member {
    name: String,
    proc: CliProcess,
    got: Vec<Got>,
}

impl Member {
    fn start(broker: &BrokerProcess, topic: &str, group: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["consume", topic, "--group", group, "--json", "--from-beginning"];
        args.extend_from_slice(extra);
        let proc = broker.spawn_cli(&args)?;
        let name = format!("member pid {}", proc.pid().unwrap_or(0));
        Ok(Self { name, proc, got: Vec::new() })
    }

    /// The client id `eddy consume` reports, which `describe` shows.
    fn client_id(&self) -> String {
        let pid = self.name.rsplit(' ').next().unwrap_or_default();
        format!("eddy-consume-{pid}")
    }

    /// Parses what was printed since the last call; fails if the process exited.
    fn pump(&mut self) -> anyhow::Result<()> {
        for line in self.proc.read_lines() {
            let v: serde_json::Value =
                serde_json::from_str(&line).with_context(|| format!("{} printed {line:?}", self.name))?;
            self.got.push(Got {
                partition: v["partition"].as_u64().context("partition")? as u32,
                offset: v["offset"].as_u64().context("offset")?,
                value: v["value"].as_str().context("value")?.to_string(),
            });
        }
        if self.proc.pid().is_some() {
            if let Some(status) = self.proc.try_wait()? {
                bail!("{} exited early with {status}; stderr:\n{}", self.name, self.proc.stderr());
            }
        }
        Ok(())
    }

    fn partitions(&self) -> BTreeSet<u32> {
        self.got.iter().map(|g| g.partition).collect()
    }

    /// SIGTERM: the member commits and leaves; it must exit 0.
    fn stop(&mut self) -> anyhow::Result<()> {
        let status = self.proc.terminate(WAIT)?;
        ensure!(status.success(), "{} exited with {status}; stderr:\n{}", self.name, self.proc.stderr());
        self.pump()
    }
}

/// Every (partition, offset) printed by `members`, with repeats, sorted.
fn all_got(members: &[Member]) -> Vec<Got> {
    let mut all: Vec<Got> = members.iter().flat_map(|m| m.got.iter().cloned()).collect();
    all.sort();
    all
}

/// Sends records `r{from}`..`r{from + count - 1}`, record i to partition i % partitions,
/// and waits for every acknowledgement.
async fn produce(client: &Client, topic: &str, partitions: u32, from: u64, count: u64) -> anyhow::Result<()> {
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    let mut deliveries = Vec::new();
    for i in from..from + count {
        let record = ProducerRecord::new(topic, format!("r{i}")).partition((i % u64::from(partitions)) as u32);
        deliveries.push(producer.send(record).await?);
    }
    for d in deliveries {
        d.await?;
    }
    producer.close().await?;
    Ok(())
}

/// The (partition, offset, value) every record of `count` produced by [`produce`] got.
fn expected(partitions: u32, count: u64) -> Vec<Got> {
    let mut out: Vec<Got> = (0..count)
        .map(|i| {
            let p = (i % u64::from(partitions)) as u32;
            Got { partition: p, offset: i / u64::from(partitions), value: format!("r{i}") }
        })
        .collect();
    out.sort();
    out
}

/// Waits until `group` is stable with `members` members and `owned`
/// partitions owned, pumping the member processes meanwhile.
async fn wait_stable(
    admin: &Admin,
    group: &str,
    members: usize,
    owned: usize,
    procs: &mut [Member],
) -> anyhow::Result<GroupDescription> {
    let deadline = Instant::now() + WAIT;
    loop {
        for m in procs.iter_mut() {
            m.pump()?;
        }
        if let Ok(d) = admin.describe_group(group).await {
            let with_owner = d.partitions.iter().filter(|p| p.owner.is_some()).count();
            if d.state == "Stable" && d.members.len() == members && with_owner == owned {
                return Ok(d);
            }
        }
        check_deadline(deadline, &format!("group {group} to be stable with {members} members"), procs)?;
        pause().await;
    }
}

/// Waits until the members together printed at least `distinct` different records.
async fn wait_received(members: &mut [Member], distinct: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        for m in members.iter_mut() {
            m.pump()?;
        }
        let mut all = all_got(members);
        all.dedup();
        if all.len() >= distinct {
            return Ok(());
        }
        check_deadline(deadline, &format!("{distinct} records (have {})", all.len()), members)?;
        pause().await;
    }
}

/// Waits until every partition of the group has committed offset `offset` per partition.
async fn wait_committed(admin: &Admin, group: &str, offsets: &BTreeMap<u32, u64>) -> anyhow::Result<GroupDescription> {
    let deadline = Instant::now() + WAIT;
    loop {
        let d = admin.describe_group(group).await?;
        let committed: BTreeMap<u32, u64> =
            d.partitions.iter().filter_map(|p| p.committed.map(|c| (p.partition, c))).collect();
        if &committed == offsets {
            return Ok(d);
        }
        ensure!(Instant::now() < deadline, "commits of {group} stayed at {committed:?}, expected {offsets:?}");
        pause().await;
    }
}

/// Partitions per member (by client id) as `describe` reports them; also
/// checks that no partition has two owners and owners match the members' lists.
fn owners_by_client(d: &GroupDescription) -> anyhow::Result<BTreeMap<String, BTreeSet<u32>>> {
    let mut by_client: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for m in &d.members {
        let parts = by_client.entry(m.client_id.clone()).or_default();
        for tp in &m.assignment {
            for &p in &tp.partitions {
                ensure!(seen.insert((tp.topic.clone(), p)), "{}/{p} is owned twice in {d:?}", tp.topic);
                parts.insert(p);
                let owner = d.partitions.iter().find(|gp| gp.topic == tp.topic && gp.partition == p);
                ensure!(
                    owner.and_then(|o| o.owner.as_deref()) == Some(m.member_id.as_str()),
                    "partition table disagrees with member {}: {d:?}",
                    m.member_id
                );
            }
        }
    }
    Ok(by_client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_split_four_partitions_and_see_every_record_once() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    let admin = Admin::new(client.clone());
    admin.create_topic(NewTopic::new("orders", 4)).await?;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::start(&broker, "orders", "billing", &["--auto-commit-ms", "200"])?);
    }
    let d = wait_stable(&admin, "billing", 3, 4, &mut members).await?;
    let owners = owners_by_client(&d)?;
    ensure!(owners.len() == 3, "three members: {owners:?}");
    ensure!(owners.values().all(|ps| !ps.is_empty()), "every member owns a partition: {owners:?}");
    for m in &members {
        ensure!(owners.contains_key(&m.client_id()), "{} not in {owners:?}", m.client_id());
    }

    produce(&client, "orders", 4, 0, 400).await?;
    wait_received(&mut members, 400).await?;
    ensure!(all_got(&members) == expected(4, 400), "every record exactly once");
    for m in &members {
        let owned = &owners[&m.client_id()];
        ensure!(m.partitions().is_subset(owned), "{} printed {:?} but owns {owned:?}", m.name, m.partitions());
    }
    for p in 0..4 {
        let readers = members.iter().filter(|m| m.partitions().contains(&p)).count();
        ensure!(readers == 1, "partition {p} was read by {readers} members");
    }

    // The commits catch up with the log end: lag 0, also in the CLI's view.
    wait_committed(&admin, "billing", &(0..4).map(|p| (p, 100)).collect()).await?;
    let out = broker.cli(&["group", "describe", "billing", "--json"], b"")?;
    ensure!(out.status.success(), "describe: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["state"] == "Stable" && v["members"].as_array().map(Vec::len) == Some(3), "{v}");
    let parts = v["partitions"].as_array().context("partitions")?;
    ensure!(parts.len() == 4, "{v}");
    let owner_ids: BTreeSet<&str> = parts.iter().filter_map(|p| p["owner"].as_str()).collect();
    ensure!(owner_ids.len() == 3, "four partitions over three owners: {v}");
    for p in parts {
        ensure!(p["committed"] == 100 && p["log_end"] == 100 && p["lag"] == 0, "{p}");
    }
    let text = broker.cli(&["group", "describe", "billing"], b"")?;
    ensure!(String::from_utf8_lossy(&text.stdout).contains("state Stable"), "{text:?}");

    // SIGTERM: each member commits and leaves; the group ends empty with its commits.
    for m in &mut members {
        m.stop()?;
    }
    ensure!(all_got(&members) == expected(4, 400), "nothing more after the members left");
    let d = admin.describe_group("billing").await?;
    ensure!(d.members.is_empty() && d.state == "Empty", "{d:?}");
    ensure!(d.partitions.iter().all(|p| p.committed == Some(100)), "{d:?}");
    let listed = broker.cli(&["group", "list", "--json"], b"")?;
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout)?;
    ensure!(v.as_array().is_some_and(|gs| gs.iter().any(|g| g["group"] == "billing")), "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_s_partitions_move_and_only_uncommitted_records_repeat() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    let admin = Admin::new(client.clone());
    admin.create_topic(NewTopic::new("clicks", 4)).await?;
    let flags = ["--session-timeout-ms", "2000", "--auto-commit-ms", "200"];
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::start(&broker, "clicks", "counters", &flags)?);
    }
    let d = wait_stable(&admin, "counters", 3, 4, &mut members).await?;
    let owners = owners_by_client(&d)?;
    // A first half, read and committed...
    produce(&client, "clicks", 4, 0, 200).await?;
    wait_received(&mut members, 200).await?;
    wait_committed(&admin, "counters", &(0..4).map(|p| (p, 50)).collect()).await?;
    // ...then more, and the kill right after it was printed (likely before its commit).
    produce(&client, "clicks", 4, 200, 200).await?;
    wait_received(&mut members, 400).await?;

    // SIGKILL the member with the most partitions: no commit, no leave.
    let victim_index = (0..members.len()).max_by_key(|&i| owners[&members[i].client_id()].len()).unwrap_or(0);
    let victim_parts = owners[&members[victim_index].client_id()].clone();
    let victim_id =
        d.members.iter().find(|m| m.client_id == members[victim_index].client_id()).map(|m| m.member_id.clone());
    members[victim_index].pump()?;
    members[victim_index].proc.kill();
    let committed_at_kill: BTreeMap<u32, u64> = admin
        .describe_group("counters")
        .await?
        .partitions
        .iter()
        .filter_map(|p| p.committed.map(|c| (p.partition, c)))
        .collect();
    let mut victim = members.remove(victim_index);
    produce(&client, "clicks", 4, 400, 200).await?;

    // After the session timeout the survivors own everything.
    let d = wait_stable(&admin, "counters", 2, 4, &mut members).await?;
    ensure!(d.members.iter().all(|m| Some(&m.member_id) != victim_id.as_ref()), "victim still a member: {d:?}");
    owners_by_client(&d)?;
    let deadline = Instant::now() + WAIT;
    loop {
        for m in members.iter_mut() {
            m.pump()?;
        }
        let mut all = all_got(&members);
        all.extend(victim.got.iter().cloned());
        all.sort();
        all.dedup();
        if all == expected(4, 600) {
            break;
        }
        check_deadline(deadline, "every record at least once", &members)?;
        pause().await;
    }

    // Where each of the victim's partitions restarted: the survivors' first offset there.
    let mut starts: BTreeMap<u32, u64> = BTreeMap::new();
    for g in members.iter().flat_map(|m| m.got.iter()) {
        ensure!(
            victim_parts.contains(&g.partition) || !victim.got.contains(g),
            "{g:?} of a survivor's partition repeated"
        );
        if victim_parts.contains(&g.partition) {
            let s = starts.entry(g.partition).or_insert(g.offset);
            *s = (*s).min(g.offset);
        }
    }
    for p in &victim_parts {
        let start = starts.get(p).copied().context("no survivor read the victim's partition")?;
        let committed = committed_at_kill.get(p).copied().unwrap_or(0);
        // The new owner resumed from the victim's last commit (never earlier).
        ensure!(start >= committed, "partition {p} restarted at {start}, before the last commit {committed}");
    }
    let mut all = all_got(&members);
    all.extend(victim.got.iter().cloned());
    all.sort();
    let mut counts: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for g in &all {
        *counts.entry((g.partition, g.offset)).or_default() += 1;
    }
    for ((p, o), n) in counts.into_iter().filter(|(_, n)| *n > 1) {
        ensure!(n == 2, "{p}/{o} delivered {n} times");
        ensure!(
            victim_parts.contains(&p) && o >= starts[&p],
            "{p}/{o} repeated but is before where the new owner started ({:?})",
            starts.get(&p)
        );
    }
    victim.proc.kill();
    for m in &mut members {
        m.stop()?;
    }
    wait_committed(&admin, "counters", &(0..4).map(|p| (p, 150)).collect()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_on_one_topic_each_receive_every_record() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    let admin = Admin::new(client.clone());
    admin.create_topic(NewTopic::new("news", 2)).await?;
    produce(&client, "news", 2, 0, 100).await?;

    // Group "web": two CLI members. Group "mail": one SDK member.
    let mut web = vec![Member::start(&broker, "news", "web", &[])?, Member::start(&broker, "news", "web", &[])?];
    let config = GroupConfig::new("mail").offset_reset(OffsetReset::Earliest);
    let mut mail = GroupConsumer::subscribe(client.clone(), config, &["news".to_string()]).await?;
    ensure!(mail.assignment().len() == 2, "sole member owns both partitions: {:?}", mail.assignment());
    let mut mail_got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while mail_got.len() < 100 {
        for r in mail.poll(Duration::from_millis(200)).await? {
            mail_got.push(Got {
                partition: r.partition,
                offset: r.offset,
                value: String::from_utf8_lossy(&r.value).into_owned(),
            });
        }
        check_deadline(deadline, "group mail to read 100 records", &web)?;
    }
    wait_stable(&admin, "web", 2, 2, &mut web).await?;
    wait_received(&mut web, 100).await?;

    produce(&client, "news", 2, 100, 50).await?;
    wait_received(&mut web, 150).await?;
    let deadline = Instant::now() + WAIT;
    while mail_got.len() < 150 {
        for r in mail.poll(Duration::from_millis(200)).await? {
            mail_got.push(Got {
                partition: r.partition,
                offset: r.offset,
                value: String::from_utf8_lossy(&r.value).into_owned(),
            });
        }
        check_deadline(deadline, "group mail to read 150 records", &web)?;
    }
    mail.close().await?;
    mail_got.sort();
    ensure!(mail_got == expected(2, 150), "group mail got every record once");
    for m in &mut web {
        m.stop()?;
    }
    ensure!(all_got(&web) == expected(2, 150), "group web got every record once");
    // Each group has its own commits.
    let committed = admin.committed_offsets("mail", None).await?;
    ensure!(committed.iter().all(|c| c.offset == 75) && committed.len() == 2, "{committed:?}");
    wait_committed(&admin, "web", &[(0, 75), (1, 75)].into()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_broker_restart() -> anyhow::Result<()> {
    let mut broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    Admin::new(client.clone()).create_topic(NewTopic::new("ledger", 2)).await?;
    produce(&client, "ledger", 2, 0, 100).await?;
    let config = GroupConfig::new("audit").auto_commit(None).session_timeout(Duration::from_secs(3));
    let mut member = GroupConsumer::subscribe(client.clone(), config, &["ledger".to_string()]).await?;
    let mut got = 0;
    let deadline = Instant::now() + WAIT;
    while got < 100 {
        got += member.poll(Duration::from_millis(200)).await?.len();
        ensure!(Instant::now() < deadline, "read {got} of 100");
    }
    // Partition 0 committed part way, partition 1 to its end.
    member.commit_offsets(&[("ledger".into(), 0, 30), ("ledger".into(), 1, 50)]).await?;
    let first_id = member.member_id().to_string();

    broker.restart()?;
    let fresh = broker.client().await?;
    let admin = Admin::new(fresh.clone());
    let mut committed: Vec<(u32, u64)> =
        admin.committed_offsets("audit", None).await?.iter().map(|c| (c.partition, c.offset)).collect();
    committed.sort_unstable();
    ensure!(committed == vec![(0, 30), (1, 50)], "after restart: {committed:?}");
    let out = broker.cli(&["group", "describe", "audit", "--json"], b"")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let lags: Vec<serde_json::Value> =
        v["partitions"].as_array().context("partitions")?.iter().map(|p| p["lag"].clone()).collect();
    ensure!(lags == vec![serde_json::json!(20), serde_json::json!(0)], "{v}");

    // The member from before the restart is unknown to the new broker: it
    // rejoins as a new member and resumes from the commits.
    let mut again = Vec::new();
    let deadline = Instant::now() + WAIT;
    while again.len() < 20 || member.member_id() == first_id {
        match member.poll(Duration::from_millis(200)).await {
            Ok(records) => again.extend(records.iter().map(|r| (r.partition, r.offset))),
            Err(e) if e.is_retriable() => {}
            Err(e) => return Err(e.into()),
        }
        ensure!(Instant::now() < deadline, "member did not resume after the restart: {again:?}");
    }
    ensure!(again == (30..50).map(|o| (0, o)).collect::<Vec<_>>(), "resumed at the commits: {again:?}");
    member.close().await?;

    // A new CLI member resumes from the same commits, and commits on exit.
    let mut cli = vec![Member::start(&broker, "ledger", "audit", &[])?];
    wait_received(&mut cli, 20).await?;
    cli[0].stop()?;
    let offsets: Vec<(u32, u64)> = cli[0].got.iter().map(|g| (g.partition, g.offset)).collect();
    ensure!(offsets == (30..50).map(|o| (0, o)).collect::<Vec<_>>(), "{offsets:?}");
    wait_committed(&admin, "audit", &[(0, 50), (1, 50)].into()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_member_of_a_four_partition_group_stays_idle() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    let admin = Admin::new(client.clone());
    admin.create_topic(NewTopic::new("jobs", 4)).await?;
    let mut members = Vec::new();
    for _ in 0..5 {
        members.push(Member::start(&broker, "jobs", "workers", &[])?);
    }
    let d = wait_stable(&admin, "workers", 5, 4, &mut members).await?;
    let owners = owners_by_client(&d)?;
    let mut sizes: Vec<usize> = owners.values().map(BTreeSet::len).collect();
    sizes.sort_unstable();
    ensure!(sizes == vec![0, 1, 1, 1, 1], "one idle member, one partition each for the rest: {owners:?}");
    let idle = owners.iter().find(|(_, ps)| ps.is_empty()).map(|(c, _)| c.clone()).context("idle member")?;
    produce(&client, "jobs", 4, 0, 40).await?;
    wait_received(&mut members, 40).await?;
    ensure!(all_got(&members) == expected(4, 40), "every record exactly once");
    let idle_member = members.iter().find(|m| m.client_id() == idle).context("idle process")?;
    ensure!(idle_member.got.is_empty(), "the idle member printed {:?}", idle_member.got);
    let d = admin.describe_group("workers").await?;
    ensure!(d.state == "Stable" && d.members.len() == 5, "still five members: {d:?}");
    Ok(())
}

/// Sends a raw join with the given session timeout.
async fn raw_join(
    client: &Client,
    group: &str,
    member_id: &str,
    session_timeout_ms: u32,
) -> Result<JoinGroupResponse, ClientError> {
    let req = JoinGroupRequest {
        group: group.into(),
        member_id: member_id.into(),
        client_id: "raw".into(),
        topics: vec!["t".into()],
        strategy: AssignmentStrategy::Sticky,
        session_timeout_ms,
        rebalance_timeout_ms: 10_000,
    };
    client.request_with_timeout(&req, Duration::from_secs(30)).await
}

fn commit(group: &str, member_id: &str, generation: u32, offsets: &[(&str, u32, u64)]) -> OffsetCommitRequest {
    OffsetCommitRequest {
        group: group.into(),
        member_id: member_id.into(),
        generation,
        offsets: offsets
            .iter()
            .map(|(t, p, o)| CommittedOffset {
                topic: t.to_string(),
                partition: *p,
                offset: *o,
                metadata: String::new(),
            })
            .collect(),
    }
}

fn heartbeat(group: &str, member_id: &str, generation: u32) -> HeartbeatRequest {
    HeartbeatRequest { group: group.into(), member_id: member_id.into(), generation, max_wait_ms: 0 }
}

fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Option<ErrorCode> {
    match result {
        Err(e) => e.code(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_get_typed_errors() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    let admin = Admin::new(client.clone());
    admin.create_topic(NewTopic::new("t", 2)).await?;

    // Member a alone: generation 1 with both partitions.
    let a = raw_join(&client, "raw", "", 30_000).await?;
    ensure!(a.assignment.iter().map(|tp| tp.partitions.len()).sum::<usize>() == 2, "{a:?}");
    client.request(&commit("raw", &a.member_id, a.generation, &[("t", 0, 1)])).await?;

    // Member b joins (held until a rejoins); a hears of it from its heartbeat.
    let b_join = {
        let client = client.clone();
        tokio::spawn(async move { raw_join(&client, "raw", "", 30_000).await })
    };
    let deadline = Instant::now() + WAIT;
    loop {
        match client.request(&heartbeat("raw", &a.member_id, a.generation)).await {
            Err(e) if e.code() == Some(ErrorCode::RebalanceInProgress) => break,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        ensure!(Instant::now() < deadline, "no rebalance announced");
        pause().await;
    }
    // During the rebalance a may still commit for its old generation's partitions.
    client.request(&commit("raw", &a.member_id, a.generation, &[("t", 1, 1)])).await?;
    let a2 = raw_join(&client, "raw", &a.member_id, 30_000).await?;
    let b = b_join.await??;
    ensure!(a2.generation == b.generation && a2.generation > a.generation, "{a2:?} {b:?}");
    let b_partition = b.assignment[0].partitions[0];
    let a_partition = a2.assignment[0].partitions[0];

    // Stale generation.
    let stale = client.request(&commit("raw", &a.member_id, a.generation, &[("t", a_partition, 2)])).await;
    ensure!(code(stale) == Some(ErrorCode::IllegalGeneration));
    let stale_beat = client.request(&heartbeat("raw", &a.member_id, a.generation)).await;
    ensure!(code(stale_beat) == Some(ErrorCode::IllegalGeneration));
    // Another member's partition.
    let foreign = client.request(&commit("raw", &a.member_id, a2.generation, &[("t", b_partition, 2)])).await;
    ensure!(code(foreign) == Some(ErrorCode::NotPartitionOwner));
    client.request(&commit("raw", &a.member_id, a2.generation, &[("t", a_partition, 2)])).await?;
    // A nonexistent partition, as a member and as a tool (no member, group without members).
    let missing = client.request(&commit("raw", &a.member_id, a2.generation, &[("t", 9, 2)])).await;
    let missing = code(missing);
    ensure!(
        matches!(missing, Some(ErrorCode::UnknownPartition | ErrorCode::NotPartitionOwner)),
        "member commit to t/9: {missing:?}"
    );
    ensure!(code(client.request(&commit("tools", "", 0, &[("t", 9, 2)])).await) == Some(ErrorCode::UnknownPartition));
    ensure!(code(client.request(&commit("tools", "", 0, &[("nope", 0, 2)])).await).is_some());
    // Commits from outside a group that has members are refused.
    ensure!(code(client.request(&commit("raw", "", 0, &[("t", 0, 2)])).await) == Some(ErrorCode::UnknownMember));

    // A member that stops heartbeating is evicted; it then gets UNKNOWN_MEMBER.
    let short = raw_join(&client, "short", "", 500).await?;
    let deadline = Instant::now() + WAIT;
    while !admin.describe_group("short").await.map(|d| d.members.is_empty()).unwrap_or(true) {
        ensure!(Instant::now() < deadline, "member was never evicted");
        pause().await;
    }
    let evicted = client.request(&heartbeat("short", &short.member_id, short.generation)).await;
    ensure!(code(evicted) == Some(ErrorCode::UnknownMember));
    let evicted = client.request(&commit("short", &short.member_id, short.generation, &[("t", 0, 1)])).await;
    ensure!(code(evicted) == Some(ErrorCode::UnknownMember));
    let rejoin = raw_join(&client, "short", &short.member_id, 500).await;
    ensure!(code(rejoin) == Some(ErrorCode::UnknownMember));

    // Left members are unknown at once.
    client.request(&LeaveGroupRequest { group: "raw".into(), member_id: b.member_id.clone() }).await?;
    let left = client.request(&heartbeat("raw", &b.member_id, b.generation)).await;
    ensure!(code(left) == Some(ErrorCode::UnknownMember));
    client.request(&LeaveGroupRequest { group: "raw".into(), member_id: a.member_id.clone() }).await?;

    // Unknown groups and bad group ids.
    ensure!(code(admin.describe_group("nobody").await) == Some(ErrorCode::UnknownGroup));
    let out = broker.cli(&["group", "describe", "nobody"], b"")?;
    ensure!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("UNKNOWN_GROUP"), "{out:?}");
    ensure!(code(raw_join(&client, "", "", 10_000).await) == Some(ErrorCode::InvalidGroup));
    ensure!(code(raw_join(&client, "g", "", 0).await) == Some(ErrorCode::InvalidGroup));
    // The CLI refuses flag combinations that make no sense for a group.
    let out = broker.cli(&["consume", "t", "--group", "g", "--partition", "1"], b"")?;
    ensure!(!out.status.success(), "--partition with --group accepted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_consume_that_stops_at_max_records_commits_only_what_it_printed() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    Admin::new(client.clone()).create_topic(NewTopic::new("steps", 1)).await?;
    produce(&client, "steps", 1, 0, 10).await?;
    let mut offsets = Vec::new();
    for _ in 0..3 {
        let args = ["consume", "steps", "--group", "walkers", "--from-beginning", "--json", "--max-records", "3"];
        let out = broker.cli(&args, b"")?;
        ensure!(out.status.success(), "exit {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            offsets.push(v["offset"].as_u64().context("offset")?);
        }
    }
    // Each run resumes where the previous one stopped printing, not where it stopped fetching.
    ensure!(offsets == (0..9).collect::<Vec<_>>(), "{offsets:?}");
    let committed = Admin::new(client).committed_offsets("walkers", None).await?;
    ensure!(committed.iter().map(|c| c.offset).collect::<Vec<_>>() == vec![9], "{committed:?}");
    Ok(())
}
