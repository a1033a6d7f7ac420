//! Users and access-control rules: what `eddy user` and `eddy acl` use.
//!
//! Changing users or rules needs `alter` on the cluster (superusers have
//! it); listing them needs `describe` on the cluster. A user's password is
//! turned into a SCRAM-SHA-256 credential (salt, iterations, stored key,
//! server key) on the client: the password itself never leaves the process.

use bytes::Bytes;
use eddy_protocol::scram::{ScramCredential, DEFAULT_ITERATIONS};
use eddy_protocol::security::*;

use crate::{Client, ClientError};

/// Manages users and rules through a [`Client`].
#[derive(Debug, Clone)]
pub struct Security {
    client: Client,
}

impl Security {
    /// Security administration over `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Creates user `name` with `password` (USER_ALREADY_EXISTS if it exists).
    pub async fn create_user(&self, name: &str, password: &str) -> Result<(), ClientError> {
        self.put_user(name, password, false).await
    }

    /// Sets the password of the existing user `name` (UNKNOWN_USER if none).
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), ClientError> {
        self.put_user(name, password, true).await
    }

    async fn put_user(&self, name: &str, password: &str, replace: bool) -> Result<(), ClientError> {
        validate_user_name(name).map_err(ClientError::Config)?;
        if password.is_empty() {
            return Err(ClientError::Config("a password cannot be empty".into()));
        }
        let credential = Bytes::from(ScramCredential::new(password, DEFAULT_ITERATIONS).to_bytes());
        self.client.request(&CreateUserRequest { name: name.to_string(), credential, replace }).await?;
        Ok(())
    }

    /// Deletes user `name` (its rules stay until removed).
    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        self.client.request(&DeleteUserRequest { name: name.to_string() }).await?;
        Ok(())
    }

    /// Every user (never a credential).
    pub async fn list_users(&self) -> Result<Vec<UserInfo>, ClientError> {
        Ok(self.client.request(&ListUsersRequest {}).await?.users)
    }

    /// Adds rules.
    pub async fn add_acls(&self, rules: Vec<AclRule>) -> Result<(), ClientError> {
        self.client.request(&CreateAclsRequest { rules }).await?;
        Ok(())
    }

    /// Removes rules equal to these; returns how many existed.
    pub async fn remove_acls(&self, rules: Vec<AclRule>) -> Result<u32, ClientError> {
        Ok(self.client.request(&DeleteAclsRequest { rules }).await?.deleted)
    }

    /// Every rule, or those of one principal (`User:alice`, `*`).
    pub async fn list_acls(&self, principal: Option<&str>) -> Result<Vec<AclRule>, ClientError> {
        Ok(self.client.request(&ListAclsRequest { principal: principal.map(String::from) }).await?.rules)
    }
}
