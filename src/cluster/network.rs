//! Raft messages between members, over HTTP on each member's own listener (docs/behaviour.md
//! §9; docs/CLUSTER.md).
//!
//! Each message is one `POST` to `http://ADDRESS/cluster/raft/{append,vote,snapshot}` whose body
//! is the openraft request encoded with bincode; the answer's body is the bincode of
//! `Result<response, RaftError>`. With a cluster token, every message carries
//! `Authorization: Bearer <token>`, which the receiving member checks in constant time. One
//! `reqwest` client (with its connection pool) serves every peer.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{Node, NodeId, TypeConfig};

/// Path of the append-entries message (heartbeats included).
pub const APPEND_PATH: &str = "/cluster/raft/append";
/// Path of the vote message.
pub const VOTE_PATH: &str = "/cluster/raft/vote";
/// Path of one piece of a snapshot being installed.
pub const SNAPSHOT_PATH: &str = "/cluster/raft/snapshot";
/// The content type of every Raft message body.
pub const BINCODE: &str = "application/octet-stream";
/// Largest body of an internal message a member accepts: a snapshot piece (1 MiB) or an
/// append of at most [`MAX_PAYLOAD_ENTRIES`] entries, with room for their encoding.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Most entries in one append message (openraft's `max_payload_entries`). An entry holds at
/// most [`super::proposals::MAX_BATCH`] `/identify` commands or one request body, so this many
/// fit in [`MAX_MESSAGE_BYTES`] whatever they hold (a test checks the bound); openraft's
/// default of 300 would not.
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// Makes the connections openraft uses to reach the other members.
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
    token: Option<String>,
}

impl Network {
    /// A network whose messages carry `token` (when set) as a bearer token.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS is involved; only a broken system
    /// configuration could cause it).
    pub fn new(token: Option<String>) -> Result<Network, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Network { client, token })
    }

    /// Sends `request` to `path` on `target`, at most `ttl` long, and decodes its answer.
    async fn send<Req, Resp, Err>(
        &self,
        target: NodeId,
        node: &Node,
        path: &str,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, Node, Err>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        Err: std::error::Error + DeserializeOwned,
    {
        let body =
            bincode::serialize(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut call = self
            .client
            .post(format!("http://{}{path}", node.addr))
            .header(reqwest::header::CONTENT_TYPE, BINCODE)
            .timeout(ttl)
            .body(body);
        if let Some(token) = &self.token {
            call = call.bearer_auth(token);
        }
        let response = call.send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(openraft::error::Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let error = std::io::Error::other(format!(
                "member {target} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
            return Err(RPCError::Network(NetworkError::new(&error)));
        }
        let answer: Result<Resp, Err> =
            bincode::deserialize(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        Connection {
            network: self.clone(),
            target,
            node: node.clone(),
        }
    }
}

/// The way to one member.
pub struct Connection {
    network: Network,
    target: NodeId,
    node: Node,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.network
            .send(
                self.target,
                &self.node,
                APPEND_PATH,
                &request,
                option.hard_ttl(),
            )
            .await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.network
            .send(
                self.target,
                &self.node,
                SNAPSHOT_PATH,
                &request,
                option.hard_ttl(),
            )
            .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.network
            .send(
                self.target,
                &self.node,
                VOTE_PATH,
                &request,
                option.hard_ttl(),
            )
            .await
    }
}
