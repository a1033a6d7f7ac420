//! The authorization decision (Kafka's model), a pure function of the
//! principal, the operation, the resource, the committed rules and the
//! configured superusers:
//!
//! 1. Brokers and superusers may do anything.
//! 2. A processor may do what its deployment needs and nothing else: read
//!    its inputs, write its output, the output's dead-letter topic and its
//!    logs topic, read its group `processor.<name>`, read and write itself
//!    (module, state, commits) and describe all of those.
//! 3. A user may do what a matching allow rule grants and no matching deny
//!    rule forbids: deny wins. A rule matches when its principal is the
//!    user's or `*`, its resource type is the resource's, and its name equals
//!    the resource's name (literal; `*` matches every name) or is a prefix of
//!    it (prefix). `all` matches every operation; allowing read, write,
//!    delete or alter also allows describe. Describing a processor allows
//!    reading its logs topic.
//! 4. Anything else is denied.

use std::collections::BTreeSet;

use eddy_protocol::processors::{dead_letter_topic, processor_group, processor_logs_topic, ProcessorDescription};
use eddy_protocol::security::{AclRule, Operation, PatternType, Permission, ResourceType};

use super::Principal;
use crate::store::SecurityState;

/// What a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    /// Topic, group, processor or the cluster.
    pub kind: ResourceType,
    /// Its name ([`eddy_protocol::security::CLUSTER_RESOURCE`] for the cluster).
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    /// A topic.
    pub fn topic(name: &'a str) -> Self {
        Self { kind: ResourceType::Topic, name }
    }
    /// A consumer group.
    pub fn group(name: &'a str) -> Self {
        Self { kind: ResourceType::Group, name }
    }
    /// A processor.
    pub fn processor(name: &'a str) -> Self {
        Self { kind: ResourceType::Processor, name }
    }
    /// The cluster.
    pub fn cluster() -> Self {
        Self { kind: ResourceType::Cluster, name: eddy_protocol::security::CLUSTER_RESOURCE }
    }
}

impl std::fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} '{}'", self.kind, self.name)
    }
}

/// The broker's authorization settings.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    superusers: BTreeSet<String>,
}

impl Authorizer {
    /// An authorizer treating the users named in `superusers` as superusers.
    pub fn new(superusers: impl IntoIterator<Item = String>) -> Self {
        Self { superusers: superusers.into_iter().collect() }
    }

    /// Whether `principal` is a broker or a superuser (skips every rule).
    pub fn is_super(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Broker(_) => true,
            Principal::User(name) => self.superusers.contains(name),
            Principal::Processor(_) => false,
        }
    }

    /// Whether `principal` may do `op` on `resource`. `processor` looks a
    /// deployed processor up by name (for processor principals and logs topics).
    pub fn allows<'p>(
        &self,
        principal: &Principal,
        op: Operation,
        resource: Resource<'_>,
        security: &SecurityState,
        processor: impl Fn(&str) -> Option<&'p ProcessorDescription>,
    ) -> bool {
        match principal {
            Principal::Broker(_) => true,
            Principal::User(name) if self.superusers.contains(name) => true,
            Principal::User(name) => {
                user_allows(name, op, resource, security)
                    || (resource.kind == ResourceType::Topic
                        && matches!(op, Operation::Read | Operation::Describe)
                        && logs_topic_owner(resource.name).is_some_and(|p| {
                            processor(p).is_some()
                                && user_allows(name, Operation::Describe, Resource::processor(p), security)
                        }))
            }
            Principal::Processor(name) => processor(name).is_some_and(|d| processor_allows(d, op, resource)),
        }
    }

    /// Whether `principal` may do `op` on at least one resource of `kind`
    /// (Kafka's check for requests that name no resource, such as a
    /// producer id for a producer that will write somewhere).
    pub fn allows_any(
        &self,
        principal: &Principal,
        op: Operation,
        kind: ResourceType,
        security: &SecurityState,
    ) -> bool {
        match principal {
            Principal::Broker(_) => true,
            Principal::User(name) if self.superusers.contains(name) => true,
            Principal::User(name) => {
                let me = format!("User:{name}");
                security.acls.iter().any(|r| {
                    (r.principal == me || r.principal == "*")
                        && r.resource_type == kind
                        && r.permission == Permission::Allow
                        && grants(r.operation, op)
                })
            }
            Principal::Processor(_) => kind == ResourceType::Topic && op == Operation::Write,
        }
    }
}

/// The processor whose logs topic `topic` is, if it is one.
pub(crate) fn logs_topic_owner(topic: &str) -> Option<&str> {
    topic.strip_prefix("_eddy.processor.")?.strip_suffix(".logs").filter(|p| !p.is_empty())
}

/// Whether a rule's operation grants `op` (for allow rules).
fn grants(rule: Operation, op: Operation) -> bool {
    rule == op
        || rule == Operation::All
        || (op == Operation::Describe
            && matches!(rule, Operation::Read | Operation::Write | Operation::Delete | Operation::Alter))
}

fn matches_name(rule: &AclRule, name: &str) -> bool {
    match rule.pattern {
        PatternType::Literal => rule.name == name || rule.name == "*",
        PatternType::Prefix => name.starts_with(rule.name.as_str()),
    }
}

/// The rules of `principal` (a `User:NAME` or `*`) on `kind`, by a range
/// scan of the ordered rule set.
fn rules_of<'s>(security: &'s SecurityState, principal: &str, kind: ResourceType) -> impl Iterator<Item = &'s AclRule> {
    let from = AclRule {
        principal: principal.to_string(),
        resource_type: kind,
        name: String::new(),
        pattern: PatternType::Literal,
        operation: Operation::Read,
        permission: Permission::Allow,
    };
    let principal = principal.to_string();
    security.acls.range(from..).take_while(move |r| r.principal == principal && r.resource_type == kind)
}

fn user_allows(name: &str, op: Operation, resource: Resource<'_>, security: &SecurityState) -> bool {
    if security.acls.is_empty() {
        return false;
    }
    let me = format!("User:{name}");
    let mut allowed = false;
    for rule in rules_of(security, &me, resource.kind).chain(rules_of(security, "*", resource.kind)) {
        if !matches_name(rule, resource.name) {
            continue;
        }
        match rule.permission {
            Permission::Deny if rule.operation == op || rule.operation == Operation::All => return false,
            Permission::Deny => {}
            Permission::Allow => allowed |= grants(rule.operation, op),
        }
    }
    allowed
}

fn processor_allows(d: &ProcessorDescription, op: Operation, resource: Resource<'_>) -> bool {
    use Operation::*;
    let name = resource.name;
    match resource.kind {
        ResourceType::Topic => {
            let input = d.inputs.iter().any(|i| i == name);
            let output =
                name == d.output || name == dead_letter_topic(&d.output) || name == processor_logs_topic(&d.name);
            match op {
                Read => input,
                Write => output,
                Describe => input || output,
                _ => false,
            }
        }
        ResourceType::Group => name == processor_group(&d.name) && matches!(op, Read | Describe),
        ResourceType::Processor => name == d.name && matches!(op, Read | Write | Describe | Alter),
        ResourceType::Cluster => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn state(rules: Vec<AclRule>) -> SecurityState {
        SecurityState { acls: rules.into_iter().collect(), ..Default::default() }
    }

    fn none(_: &str) -> Option<&'static ProcessorDescription> {
        None
    }

    fn alice() -> Principal {
        Principal::User("alice".into())
    }

    #[test]
    fn nothing_is_allowed_without_a_rule() {
        let a = Authorizer::new(["admin".to_string()]);
        let s = state(vec![]);
        for op in Operation::ALL {
            assert!(!a.allows(&alice(), *op, Resource::topic("t"), &s, none));
        }
        assert!(a.allows(&Principal::User("admin".into()), Operation::Delete, Resource::cluster(), &s, none));
        assert!(a.allows(&Principal::Broker(2), Operation::Alter, Resource::cluster(), &s, none));
    }

    #[test]
    fn literal_prefix_wildcard_and_deny_wins() {
        use Operation::*;
        let a = Authorizer::default();
        let s = state(vec![
            rule("User:alice", ResourceType::Topic, "orders", false, Write, true),
            rule("User:alice", ResourceType::Topic, "logs.", true, Read, true),
            rule("User:alice", ResourceType::Topic, "logs.secret", false, Read, false),
            rule("*", ResourceType::Group, "*", false, All, true),
            rule("User:bob", ResourceType::Topic, "*", false, All, true),
            rule("User:bob", ResourceType::Topic, "private.", true, All, false),
        ]);
        assert!(a.allows(&alice(), Write, Resource::topic("orders"), &s, none));
        assert!(a.allows(&alice(), Describe, Resource::topic("orders"), &s, none), "write implies describe");
        assert!(!a.allows(&alice(), Read, Resource::topic("orders"), &s, none));
        assert!(!a.allows(&alice(), Write, Resource::topic("orders2"), &s, none), "literal is exact");
        assert!(a.allows(&alice(), Read, Resource::topic("logs.app"), &s, none));
        assert!(!a.allows(&alice(), Read, Resource::topic("logs.secret"), &s, none), "deny wins");
        assert!(a.allows(&alice(), Describe, Resource::topic("logs.secret"), &s, none), "deny read keeps describe");
        assert!(a.allows(&alice(), Delete, Resource::group("g"), &s, none), "* principal and * name");
        let bob = Principal::User("bob".into());
        assert!(a.allows(&bob, Create, Resource::topic("x"), &s, none));
        assert!(!a.allows(&bob, Describe, Resource::topic("private.x"), &s, none), "deny all covers describe");
        assert!(a.allows(&bob, Read, Resource::group("g2"), &s, none), "rules of `*` apply to everyone");
        assert!(a.allows_any(&alice(), Write, ResourceType::Topic, &s));
        assert!(!a.allows_any(&alice(), Create, ResourceType::Topic, &s));
    }

    fn description(name: &str, inputs: &[&str], output: &str) -> ProcessorDescription {
        let mut d = crate::store::processor_tests::description(name);
        d.inputs = inputs.iter().map(|s| s.to_string()).collect();
        d.output = output.into();
        d
    }

    #[test]
    fn processors_have_exactly_their_deployment_rights() {
        use Operation::*;
        let a = Authorizer::default();
        let s = state(vec![rule("*", ResourceType::Topic, "*", false, All, true)]);
        let d = description("upper", &["in"], "out");
        let lookup = |n: &str| (n == "upper").then_some(&d);
        let p = Principal::Processor("upper".into());
        assert!(a.allows(&p, Read, Resource::topic("in"), &s, lookup));
        assert!(!a.allows(&p, Write, Resource::topic("in"), &s, lookup));
        for out in ["out", "out.dlq", "_eddy.processor.upper.logs"] {
            assert!(a.allows(&p, Write, Resource::topic(out), &s, lookup), "{out}");
        }
        assert!(!a.allows(&p, Write, Resource::topic("elsewhere"), &s, lookup), "rules never widen a processor");
        assert!(a.allows(&p, Read, Resource::group("processor.upper"), &s, lookup));
        assert!(!a.allows(&p, Read, Resource::group("processor.other"), &s, lookup));
        assert!(a.allows(&p, Write, Resource::processor("upper"), &s, lookup));
        assert!(!a.allows(&p, Write, Resource::processor("other"), &s, lookup));
        assert!(!a.allows(&p, Alter, Resource::cluster(), &s, lookup));
        let gone = Principal::Processor("deleted".into());
        assert!(!a.allows(&gone, Read, Resource::topic("in"), &s, lookup));
    }

    #[test]
    fn describing_a_processor_allows_reading_its_logs() {
        let a = Authorizer::default();
        let s = state(vec![rule("User:alice", ResourceType::Processor, "upper", false, Operation::Describe, true)]);
        let d = description("upper", &["in"], "out");
        let lookup = |n: &str| (n == "upper").then_some(&d);
        assert!(a.allows(&alice(), Operation::Read, Resource::topic("_eddy.processor.upper.logs"), &s, lookup));
        assert!(!a.allows(&alice(), Operation::Write, Resource::topic("_eddy.processor.upper.logs"), &s, lookup));
        assert!(!a.allows(&alice(), Operation::Read, Resource::topic("_eddy.processor.other.logs"), &s, lookup));
    }

    /// What one decision costs, with 10,000 rules of 1,000 users in place
    /// (run by hand: `cargo test --release -p eddy-broker --lib
    /// decision_cost -- --ignored --nocapture`; docs/benchmarks.md).
    #[test]
    #[ignore]
    fn decision_cost() {
        use Operation::*;
        let mut rules = Vec::new();
        for u in 0..1_000 {
            for t in 0..10 {
                rules.push(rule(&format!("User:u{u}"), ResourceType::Topic, &format!("t{t}."), true, Write, true));
            }
        }
        rules.push(rule("User:alice", ResourceType::Topic, "bench", true, All, true));
        let s = state(rules);
        let a = Authorizer::new(["admin".to_string()]);
        let n = 1_000_000;
        let started = std::time::Instant::now();
        let mut allowed = 0;
        for _ in 0..n {
            allowed += usize::from(a.allows(&alice(), Write, Resource::topic("bench-1"), &s, none));
        }
        let per = started.elapsed() / n;
        assert_eq!(allowed, n as usize);
        let admin = Principal::User("admin".into());
        let started = std::time::Instant::now();
        for _ in 0..n {
            allowed += usize::from(a.allows(&admin, Write, Resource::topic("bench-1"), &s, none));
        }
        let per_super = started.elapsed() / n;
        assert_eq!(allowed, 2 * n as usize);
        println!("user with a prefix rule among 10,001: {per:?} per decision; superuser: {per_super:?}");
    }
}
