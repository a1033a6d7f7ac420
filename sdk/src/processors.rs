//! Processor administration and the worker's broker calls: deploy, list,
//! describe and delete processors; fetch a version's module; read a
//! partition's committed state; commit a batch's offsets and state atomically;
//! stop a processor. Each call is one request on the shared [`Client`].

use std::time::Duration;

use bytes::Bytes;
use eddy_protocol::messages::CommittedOffset;
use eddy_protocol::processors::{
    CommitProcessorBatchRequest, DeleteProcessorRequest, DeployProcessorRequest, DescribeProcessorRequest,
    FetchProcessorModuleRequest, ListProcessorsRequest, PartitionStateWrites, ProcessorDescription, ProcessorStats,
    StateScanRequest, StopProcessorRequest,
};

use crate::client::Client;
use crate::error::ClientError;

/// How long a deploy may take: the broker validates and compiles the module
/// before it answers.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes of state asked for per scan request.
const STATE_SCAN_BYTES: u32 = 4 * 1024 * 1024;

/// Processor calls on a shared [`Client`].
#[derive(Clone)]
pub struct Processors {
    client: Client,
}

impl Processors {
    /// Processor calls over `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Deploys or redeploys a processor; the broker refuses a module that is
    /// not a component of the processor world with `INVALID_PROCESSOR`.
    pub async fn deploy(&self, req: &DeployProcessorRequest) -> Result<ProcessorDescription, ClientError> {
        self.client.request_with_timeout(req, DEPLOY_TIMEOUT).await
    }

    /// Every deployed processor, sorted by name.
    pub async fn list(&self) -> Result<Vec<ProcessorDescription>, ClientError> {
        Ok(self.client.request(&ListProcessorsRequest {}).await?.processors)
    }

    /// One processor; `UNKNOWN_PROCESSOR` if there is none of that name.
    pub async fn describe(&self, name: &str) -> Result<ProcessorDescription, ClientError> {
        self.client.request(&DescribeProcessorRequest { name: name.to_string() }).await
    }

    /// Deletes a processor with its module, state, counters and offsets.
    pub async fn delete(&self, name: &str) -> Result<(), ClientError> {
        self.client.request(&DeleteProcessorRequest { name: name.to_string() }).await?;
        Ok(())
    }

    /// The module bytes of a processor version.
    pub async fn fetch_module(&self, name: &str, version: u32) -> Result<Bytes, ClientError> {
        let req = FetchProcessorModuleRequest { name: name.to_string(), version };
        Ok(self.client.request_with_timeout(&req, DEPLOY_TIMEOUT).await?.wasm)
    }

    /// The whole committed state of one processor and input partition number.
    pub async fn load_state(&self, name: &str, partition: u32) -> Result<Vec<(Bytes, Bytes)>, ClientError> {
        let mut entries = Vec::new();
        let mut after = None;
        loop {
            let req = StateScanRequest {
                name: name.to_string(),
                partition,
                after: after.clone(),
                max_bytes: STATE_SCAN_BYTES,
            };
            let resp = self.client.request(&req).await?;
            for entry in resp.entries {
                after = Some(entry.key.clone());
                if let Some(value) = entry.value {
                    entries.push((entry.key, value));
                }
            }
            if !resp.more {
                return Ok(entries);
            }
        }
    }

    /// Commits a batch: the member's input offsets, the state changes and the
    /// counters, in one broker transaction.
    pub async fn commit_batch(
        &self,
        name: &str,
        member_id: &str,
        generation: u32,
        offsets: Vec<CommittedOffset>,
        state: Vec<PartitionStateWrites>,
        stats: ProcessorStats,
    ) -> Result<(), ClientError> {
        let req = CommitProcessorBatchRequest {
            name: name.to_string(),
            member_id: member_id.to_string(),
            generation,
            offsets,
            state,
            stats,
        };
        self.client.request(&req).await?;
        Ok(())
    }

    /// Marks a processor version stopped, with the reason.
    pub async fn stop(&self, name: &str, version: u32, reason: &str) -> Result<(), ClientError> {
        let req = StopProcessorRequest { name: name.to_string(), version, reason: reason.to_string() };
        self.client.request(&req).await?;
        Ok(())
    }
}
