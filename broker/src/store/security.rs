//! Users and access-control rules: two replicated tables, changed only by
//! metadata commands, mirrored in memory ([`SecurityState`]) for the
//! authorizer and the authenticator, which never touch redb.
//!
//! * `users`: user name -> SCRAM credential (`ScramCredential::to_bytes`:
//!   iterations, salt, stored key, server key; never a password).
//! * `acls`: wire-encoded `AclRule` -> `()`; a set of rules.
//! * `meta["security_bootstrapped"]`: 1 once the first superuser was created
//!   ([`MetaCommand::BootstrapUser`](super::MetaCommand::BootstrapUser) applies
//!   only while it is 0, so two brokers bootstrapping at once make one user).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use eddy_protocol::codec::{from_bytes, to_bytes};
use eddy_protocol::security::{validate_user_name, AclRule};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{StoreError, META};

/// User name -> encoded SCRAM credential.
pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// Encoded rule -> nothing.
pub(crate) const ACLS: TableDefinition<&[u8], ()> = TableDefinition::new("acls");
/// The `meta` counter marking that the first superuser was created.
pub(crate) const BOOTSTRAPPED: &str = "security_bootstrapped";
/// Most rules a cluster holds (each is checked on requests it may match).
pub const MAX_ACLS: usize = 100_000;
/// Most users a cluster holds.
pub const MAX_USERS: usize = 100_000;
/// Longest encoded credential accepted.
pub const MAX_CREDENTIAL_BYTES: usize = 1024;

/// The committed users and rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityState {
    /// User name -> encoded credential.
    pub users: BTreeMap<String, Bytes>,
    /// Every rule.
    pub acls: BTreeSet<AclRule>,
    /// Whether the first superuser was created.
    pub bootstrapped: bool,
}

/// Reads the committed users and rules.
pub(crate) fn load(db: &Database) -> Result<Arc<SecurityState>, StoreError> {
    let txn = db.begin_read()?;
    let mut state = SecurityState::default();
    match txn.open_table(USERS) {
        Ok(table) => {
            for entry in table.iter()? {
                let (name, credential) = entry?;
                state.users.insert(name.value().to_string(), Bytes::copy_from_slice(credential.value()));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match txn.open_table(ACLS) {
        Ok(table) => {
            for entry in table.iter()? {
                let (rule, _) = entry?;
                let rule = from_bytes::<AclRule>(Bytes::copy_from_slice(rule.value()))
                    .map_err(|e| StoreError::Storage(format!("corrupt access rule: {e}")))?;
                state.acls.insert(rule);
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match txn.open_table(META) {
        Ok(meta) => state.bootstrapped = meta.get(BOOTSTRAPPED)?.is_some_and(|v| v.value() != 0),
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Arc::new(state))
}

fn check_credential(credential: &[u8]) -> Result<(), StoreError> {
    if credential.is_empty() || credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(StoreError::InvalidRequest(format!(
            "a credential is 1 to {MAX_CREDENTIAL_BYTES} bytes, not {}",
            credential.len()
        )));
    }
    eddy_protocol::scram::ScramCredential::from_bytes(credential)
        .map_err(|e| StoreError::InvalidRequest(format!("unusable credential: {e}")))?;
    Ok(())
}

/// Creates `name` (or replaces its credential when `replace`).
pub(crate) fn create_user(
    txn: &WriteTransaction,
    state: &mut SecurityState,
    name: &str,
    credential: &[u8],
    replace: bool,
) -> Result<(), StoreError> {
    validate_user_name(name).map_err(StoreError::InvalidRequest)?;
    check_credential(credential)?;
    let exists = state.users.contains_key(name);
    if exists && !replace {
        return Err(StoreError::UserExists(name.to_string()));
    }
    if !exists && replace {
        return Err(StoreError::UnknownUser(name.to_string()));
    }
    if !exists && state.users.len() >= MAX_USERS {
        return Err(StoreError::InvalidRequest(format!("the cluster holds {MAX_USERS} users, its limit")));
    }
    txn.open_table(USERS)?.insert(name, credential)?;
    state.users.insert(name.to_string(), Bytes::copy_from_slice(credential));
    Ok(())
}

/// Creates the first superuser, once per cluster: `Ok(false)` (nothing
/// written) when one was bootstrapped already.
pub(crate) fn bootstrap_user(
    txn: &WriteTransaction,
    state: &mut SecurityState,
    name: &str,
    credential: &[u8],
) -> Result<bool, StoreError> {
    if state.bootstrapped {
        return Ok(false);
    }
    validate_user_name(name).map_err(StoreError::InvalidRequest)?;
    check_credential(credential)?;
    txn.open_table(USERS)?.insert(name, credential)?;
    txn.open_table(META)?.insert(BOOTSTRAPPED, 1)?;
    state.users.insert(name.to_string(), Bytes::copy_from_slice(credential));
    state.bootstrapped = true;
    Ok(true)
}

/// Deletes a user (UNKNOWN_USER if there is none).
pub(crate) fn delete_user(txn: &WriteTransaction, state: &mut SecurityState, name: &str) -> Result<(), StoreError> {
    if state.users.remove(name).is_none() {
        return Err(StoreError::UnknownUser(name.to_string()));
    }
    txn.open_table(USERS)?.remove(name)?;
    Ok(())
}

fn check_rule(rule: &AclRule) -> Result<(), StoreError> {
    let bad = |m: String| Err(StoreError::InvalidRequest(format!("invalid rule '{rule}': {m}")));
    if rule.principal != "*" {
        match rule.principal.split_once(':') {
            Some(("User", name)) => validate_user_name(name).or_else(bad)?,
            _ => return bad("the principal is `User:NAME` or `*`".into()),
        }
    }
    if rule.name.is_empty() && rule.pattern == eddy_protocol::security::PatternType::Literal {
        return bad("a literal rule needs a name (`*` for every name)".into());
    }
    if rule.name.len() > 1024 {
        return bad("the name is over 1,024 bytes".into());
    }
    Ok(())
}

/// Adds rules (all or none); rules present already are kept once.
pub(crate) fn create_acls(
    txn: &WriteTransaction,
    state: &mut SecurityState,
    rules: &[AclRule],
) -> Result<(), StoreError> {
    for rule in rules {
        check_rule(rule)?;
    }
    let new: BTreeSet<&AclRule> = rules.iter().filter(|r| !state.acls.contains(*r)).collect();
    if state.acls.len() + new.len() > MAX_ACLS {
        return Err(StoreError::InvalidRequest(format!("the cluster holds at most {MAX_ACLS} access rules")));
    }
    let mut table = txn.open_table(ACLS)?;
    for rule in new {
        table.insert(to_bytes(rule).as_ref(), ())?;
        state.acls.insert(rule.clone());
    }
    Ok(())
}

/// Removes the rules equal to `rules`; returns how many existed.
pub(crate) fn delete_acls(
    txn: &WriteTransaction,
    state: &mut SecurityState,
    rules: &[AclRule],
) -> Result<u32, StoreError> {
    let mut table = txn.open_table(ACLS)?;
    let mut deleted = 0;
    for rule in rules {
        if state.acls.remove(rule) {
            table.remove(to_bytes(rule).as_ref())?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Replaces both tables and the mark with a snapshot's content.
pub(crate) fn install(
    txn: &WriteTransaction,
    users: &[(String, Bytes)],
    acls: &[Bytes],
    bootstrapped: bool,
) -> Result<SecurityState, StoreError> {
    let mut state = SecurityState { bootstrapped, ..Default::default() };
    txn.delete_table(USERS)?;
    let mut table = txn.open_table(USERS)?;
    for (name, credential) in users {
        table.insert(name.as_str(), credential.as_ref())?;
        state.users.insert(name.clone(), credential.clone());
    }
    drop(table);
    txn.delete_table(ACLS)?;
    let mut table = txn.open_table(ACLS)?;
    for rule in acls {
        let decoded = from_bytes::<AclRule>(rule.clone())
            .map_err(|e| StoreError::InvalidRequest(format!("corrupt snapshot: access rule: {e}")))?;
        table.insert(rule.as_ref(), ())?;
        state.acls.insert(decoded);
    }
    drop(table);
    txn.open_table(META)?.insert(BOOTSTRAPPED, u64::from(bootstrapped))?;
    Ok(state)
}

/// The rows of both tables: (name, credential) users and encoded rules.
pub(crate) type SecurityRows = (Vec<(String, Bytes)>, Vec<Bytes>);

/// The rows of both tables in key order, for a snapshot.
pub(crate) fn read_rows(txn: &redb::ReadTransaction) -> Result<SecurityRows, StoreError> {
    let mut users = Vec::new();
    match txn.open_table(USERS) {
        Ok(table) => {
            for entry in table.iter()? {
                let (name, credential) = entry?;
                users.push((name.value().to_string(), Bytes::copy_from_slice(credential.value())));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut acls = Vec::new();
    match txn.open_table(ACLS) {
        Ok(table) => {
            for entry in table.iter()? {
                let (rule, _) = entry?;
                acls.push(Bytes::copy_from_slice(rule.value()));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok((users, acls))
}

#[cfg(test)]
mod tests {
    use eddy_protocol::scram::ScramCredential;
    use eddy_protocol::security::{Operation, PatternType, Permission, ResourceType};

    use super::*;

    fn db() -> Database {
        Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap()
    }

    fn rule(name: &str) -> AclRule {
        AclRule {
            principal: "User:alice".into(),
            resource_type: ResourceType::Topic,
            name: name.into(),
            pattern: PatternType::Literal,
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn every_limit_is_checked_before_anything_is_written() {
        let db = db();
        let txn = db.begin_write().unwrap();
        let mut state = SecurityState::default();
        // Rules: a full set refuses one more; a rule with an overlong name or a bad principal is refused.
        let acls = (0..MAX_ACLS).map(|i| rule(&format!("t{i}"))).collect();
        let mut full = SecurityState { acls, ..Default::default() };
        let err = create_acls(&txn, &mut full, &[rule("one-more")]).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        assert!(create_acls(&txn, &mut state, &[rule(&"x".repeat(1025))]).is_err());
        let mut bad = rule("t");
        bad.principal = "Broker:1".into();
        assert!(create_acls(&txn, &mut state, &[rule("ok"), bad]).is_err());
        assert!(state.acls.is_empty(), "all or nothing");
        // Credentials: empty, oversized or unusable ones are refused.
        for credential in [Vec::new(), vec![7u8; MAX_CREDENTIAL_BYTES + 1], vec![1, 2, 3]] {
            assert!(create_user(&txn, &mut state, "bob", &credential, false).is_err());
        }
        // Users: the name rules, and the count limit.
        let good = ScramCredential::new("pw", 4096).to_bytes();
        assert!(create_user(&txn, &mut state, "bad name", &good, false).is_err());
        let users = (0..MAX_USERS).map(|i| (format!("u{i}"), Bytes::from_static(b"x"))).collect();
        let mut crowded = SecurityState { users, ..Default::default() };
        assert!(create_user(&txn, &mut crowded, "bob", &good, false).is_err());
        assert!(state.users.is_empty());
        // The first superuser is created once.
        assert!(bootstrap_user(&txn, &mut state, "admin", &good).unwrap());
        assert!(!bootstrap_user(&txn, &mut state, "admin2", &good).unwrap());
        assert!(create_user(&txn, &mut state, "admin", &good, false).is_err(), "exists");
        create_user(&txn, &mut state, "admin", &good, true).unwrap();
        assert_eq!(delete_acls(&txn, &mut state, &[rule("never")]).unwrap(), 0);
        txn.commit().unwrap();
        assert_eq!(*load(&db).unwrap(), state, "the tables hold what the mirror holds");
    }
}
