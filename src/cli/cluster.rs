//! `idrecon cluster status|add|remove --url URL` (docs/behaviour.md §9, docs/CLUSTER.md): the
//! membership routes of a running cluster, from the command line. Any member's URL works: a
//! follower forwards membership changes to the leader. `idrecon cluster seed` works on files
//! instead: it seeds a new member's directory from a single-node one.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// `idrecon cluster …`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Base URL of any member, e.g. http://127.0.0.1:4001.
    #[arg(
        long,
        env = "IDRECON_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub url: String,
    /// The admin token, when the cluster has one (membership routes are admin routes).
    #[arg(
        long,
        env = "IDRECON_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: ClusterAction,
}

/// A membership action.
#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Print the member's view of the cluster: role, leader, term, log and apply positions,
    /// voters and learners.
    Status,
    /// Add a member: first as a learner that receives the log, then (with --voter, once it has
    /// caught up) as a voter.
    Add {
        /// The new member's id (positive, unused).
        #[arg(long)]
        id: u64,
        /// The new member's HOST:PORT (its --listen).
        #[arg(long)]
        address: String,
        /// Promote it to a voter once it has caught up.
        #[arg(long)]
        voter: bool,
    },
    /// Remove a member (voter or learner) from the cluster.
    Remove {
        /// The member's id.
        #[arg(long)]
        id: u64,
    },
    /// Seed a new member's data directory with a single-node data directory's contacts
    /// (read-only), to move a single-node service into a cluster: seed every member's
    /// directory from the same stopped single node, then start the members. Needs no --url.
    Seed {
        /// The single-node data directory to copy the contacts of (read, not changed).
        #[arg(long)]
        from: std::path::PathBuf,
        /// The new member's data directory (created; must not hold anything yet).
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
}

/// Runs `idrecon cluster …`; prints the member's answer as JSON.
///
/// # Errors
/// When the member cannot be reached (naming the URL and the error) or answers with an error
/// (its status and JSON error body).
pub(super) fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let base = args.url.trim_end_matches('/');
        let token = args.admin_token.as_deref();
        let answer = match args.action {
            ClusterAction::Status => {
                send(
                    &client,
                    token,
                    reqwest::Method::GET,
                    base,
                    "/cluster/status",
                    None,
                )
                .await?
            }
            ClusterAction::Add { id, address, voter } => {
                let added = send(
                    &client,
                    token,
                    reqwest::Method::POST,
                    base,
                    "/cluster/learners",
                    Some(json!({"id": id, "address": address})),
                )
                .await?;
                if voter {
                    send(
                        &client,
                        token,
                        reqwest::Method::POST,
                        base,
                        "/cluster/voters",
                        Some(json!({"id": id})),
                    )
                    .await?
                } else {
                    added
                }
            }
            ClusterAction::Seed { from, data_dir } => seed(&from, &data_dir)?,
            ClusterAction::Remove { id } => {
                send(
                    &client,
                    token,
                    reqwest::Method::DELETE,
                    base,
                    &format!("/cluster/members/{id}"),
                    None,
                )
                .await?
            }
        };
        println!("{}", serde_json::to_string_pretty(&answer)?);
        Ok(())
    })
}

async fn send(
    client: &reqwest::Client,
    token: Option<&str>,
    method: reqwest::Method,
    base: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = format!("{base}{path}");
    let mut request = client.request(method, &url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let answer: Value = response
        .json()
        .await
        .with_context(|| format!("{url} answered {status} without a JSON body"))?;
    if !status.is_success() {
        bail!("{url} answered {status}: {answer}");
    }
    Ok(answer)
}

/// `idrecon cluster seed`: reads the single-node directory `from` read-only (as `export` does)
/// and writes its graph as the seed snapshot of the new member directory `data_dir`; answers
/// what it wrote.
///
/// # Errors
/// `from` is missing, is a cluster member's directory or cannot be recovered; `data_dir` holds
/// anything already or cannot be written.
fn seed(from: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<Value> {
    if !from.is_dir() {
        bail!("{} is not a data directory", from.display());
    }
    if crate::cluster::inspect::is_member_dir(from) {
        bail!(
            "{} is a cluster member's directory: seed from a single-node one",
            from.display()
        );
    }
    let graph = crate::store::inspect(from)
        .with_context(|| format!("cannot read {}", from.display()))?
        .graph;
    let snapshot = crate::cluster::seed::seed(&graph, data_dir)?;
    Ok(json!({
        "contacts": graph.len(),
        "identities": graph.identity_count(),
        "snapshot": snapshot.display().to_string(),
    }))
}
