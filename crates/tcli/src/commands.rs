//! The command tree and what each command does.

use crate::{admin, table};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tabbify_client::CoordinatorClient;
use tabbify_wire::Tag;
use tabbify_wire::app::AppName;
use tabbify_wire::token::{CreateJoinTokenRequest, JoinTokenState};

#[derive(Debug, Parser)]
#[command(name = "tcli", version, about = "Operate a Tabbify mesh")]
pub struct Cli {
    /// Coordinator base URL (http:// only for one running --insecure-no-mtls).
    #[arg(
        long,
        global = true,
        env = "TABBIFY_MESH_COORDINATOR",
        default_value = "https://127.0.0.1:8888"
    )]
    coordinator: String,

    /// Trust the coordinator whose mesh CA has this SHA-256 (what `tcli token create` prints
    /// on stderr; also the part of a join token after its `.`).
    #[arg(long, global = true, env = "TABBIFY_COORDINATOR_CA_FINGERPRINT")]
    ca_fingerprint: Option<String>,

    /// Trust the CA certificates in this PEM file (default: the mesh CA beside the admin token
    /// file, plus the public roots).
    #[arg(long, global = true, env = "TABBIFY_COORDINATOR_CA_FILE")]
    ca_file: Option<PathBuf>,

    /// File holding the admin token (when TABBIFY_ADMIN_TOKEN is not set).
    #[arg(long, global = true, env = "TABBIFY_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the mesh roster (or: `peers removed`, `peers readmit`).
    #[command(args_conflicts_with_subcommands = true)]
    Peers {
        /// Only peers carrying this tag.
        #[arg(long)]
        tag: Option<Tag>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<crate::removed::PeersCommand>,
    },
    /// Manage one peer.
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// Get an operator token for the nodes' control APIs (with the admin token) and cache it;
    /// commands that need one do this by themselves when none is cached or it ran out.
    Login(LoginArgs),
    /// Certificates from the mesh CA for the mesh's other services (the appsrv).
    Cert {
        #[command(subcommand)]
        command: crate::cert::CertCommand,
    },
    /// Manage join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Deploy an app from its tabbify.toml: stage the artifact, create or update the app, wait
    /// until it serves, print its address.
    Deploy(crate::apps::DeployArgs),
    /// List the apps at the coordinator.
    Apps {
        #[arg(long)]
        json: bool,
    },
    /// Show one app: where each replica runs and how it is doing.
    App {
        name: AppName,
        #[arg(long)]
        json: bool,
    },
    /// Print an app's log (from the node running its first replica).
    Logs {
        name: AppName,
        /// Keep printing as the app writes.
        #[arg(short, long)]
        follow: bool,
        /// The node's control API, when its ULA is not reachable from here.
        #[arg(long)]
        node_api: Option<String>,
    },
    /// Remove an app: every replica is stopped.
    Rm { name: AppName },
    /// Run a whole mesh on this machine: coordinator, appsrv, one node and a sample app, until
    /// Ctrl-C.
    Dev(crate::dev::DevArgs),
    /// Bring a node online from a node.toml and operate it (Docker backend).
    Node {
        #[command(subcommand)]
        command: crate::node::NodeCommand,
    },
}

#[derive(Debug, clap::Args)]
struct LoginArgs {
    /// Lifetime, e.g. 1h, 12h (default: the coordinator's, 12h; at most 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Scopes to ask for (repeatable): node:read, node:write, artifacts:write, mesh:read
    /// (default: node:read and node:write, plus mesh:read when the token is not limited to
    /// some nodes).
    #[arg(long = "scope")]
    scopes: Vec<tabbify_auth::Scope>,
    /// Only valid on the node with this name (repeatable).
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// Only valid on nodes carrying this tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<Tag>,
    /// Print the token on stdout (for curl and scripts) besides caching it.
    #[arg(long)]
    print: bool,
}

#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Remove a peer from the roster (frees its ULA); its open streams close at once.
    Rm { peer_id: String },
    /// Revoke the peer's node certificates: its next request is refused and its streams close.
    RevokeCert { peer_id: String },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a join token and print it (shown once).
    Create {
        /// Lifetime, e.g. 1h, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Number of joins allowed.
        #[arg(long, default_value_t = 1, conflicts_with = "reusable")]
        uses: u32,
        /// Unlimited joins until expiry or revocation.
        #[arg(long)]
        reusable: bool,
        /// Restrict the tags a node joining with this token may advertise (repeatable).
        #[arg(long = "tag")]
        tags: Vec<Tag>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List join tokens.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a join token by id.
    Revoke {
        id: String,
        /// Also remove every peer this token admitted (their keys are refused until
        /// `tcli peers readmit`).
        #[arg(long)]
        cascade: bool,
    },
}

pub async fn run(cli: Cli) -> Result<()> {
    let tls = crate::trust::settings(
        cli.ca_fingerprint.as_deref(),
        cli.ca_file.as_deref(),
        cli.admin_token_file.as_deref(),
    )?;
    let client = CoordinatorClient::with_tls(&cli.coordinator, &tls)?;
    let admin = || {
        admin::admin_token(
            std::env::var("TABBIFY_ADMIN_TOKEN").ok().as_deref(),
            cli.admin_token_file.as_deref(),
        )
    };
    match cli.command {
        Command::Peers {
            command: Some(cmd), ..
        } => crate::removed::run(&client, &admin()?, cmd).await,
        Command::Peers { tag, json, .. } => peers(&client, &admin()?, tag, json).await,
        Command::Peer {
            command: PeerCommand::Rm { peer_id },
        } => {
            client.remove_peer(&admin()?, &peer_id).await?;
            println!("removed {peer_id}");
            Ok(())
        }
        Command::Peer {
            command: PeerCommand::RevokeCert { peer_id },
        } => {
            client.revoke_certificates(&admin()?, &peer_id).await?;
            println!("revoked the certificates of {peer_id}");
            Ok(())
        }
        Command::Token { command } => token(&client, &admin()?, command).await,
        Command::Cert { command } => crate::cert::run(&client, &admin()?, command).await,
        Command::Login(args) => login(&client, &admin()?, args).await,
        Command::Deploy(args) => {
            let done = crate::apps::deploy(&client, &admin()?, &args).await?;
            crate::apps::print_deployed(&done.view);
            Ok(())
        }
        Command::Apps { json } => crate::apps::list(&client, &admin()?, json).await,
        Command::App { name, json } => crate::apps::show(&client, &admin()?, &name, json).await,
        Command::Logs {
            name,
            follow,
            node_api,
        } => {
            let tokens = crate::operator::NodeTokens {
                client: &client,
                admin: &admin,
            };
            crate::apps::logs(
                &client,
                &admin()?,
                &tokens,
                &name,
                follow,
                node_api.as_deref(),
            )
            .await
        }
        Command::Rm { name } => crate::apps::remove(&client, &admin()?, &name).await,
        Command::Dev(args) => crate::dev::run(args).await,
        Command::Node { command } => crate::node::run(command).await,
    }
}

async fn login(client: &CoordinatorClient, admin: &str, args: LoginArgs) -> Result<()> {
    let limited = !args.nodes.is_empty() || !args.tags.is_empty();
    let scopes = if !args.scopes.is_empty() {
        args.scopes
    } else if limited {
        vec![
            tabbify_auth::Scope::NodeRead,
            tabbify_auth::Scope::NodeWrite,
        ]
    } else {
        vec![
            tabbify_auth::Scope::NodeRead,
            tabbify_auth::Scope::NodeWrite,
            tabbify_auth::Scope::MeshRead,
        ]
    };
    let req = tabbify_wire::operator::CreateOperatorTokenRequest {
        scopes,
        ttl_secs: args.ttl.map(|t| t.as_secs()),
        subject: Some(crate::operator::subject()),
        nodes: (!args.nodes.is_empty()).then_some(args.nodes),
        tags: (!args.tags.is_empty()).then_some(args.tags),
    };
    let (created, path) = crate::operator::login(client, admin, &req).await?;
    if args.print {
        println!("{}", created.token);
    }
    eprintln!(
        "operator token {} ({}) cached in {}; expires {}",
        created.id,
        created
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        path.display(),
        created.expires_at.to_rfc3339()
    );
    Ok(())
}

async fn peers(
    client: &CoordinatorClient,
    admin: &str,
    tag: Option<Tag>,
    json: bool,
) -> Result<()> {
    let list = client.peers(Some(admin), tag.as_ref()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let now = SystemTime::now();
    let rows: Vec<Vec<String>> = list
        .peers
        .iter()
        .map(|p| {
            vec![
                p.display_name.clone(),
                p.ula.to_string(),
                p.tags.iter().map(Tag::as_str).collect::<Vec<_>>().join(","),
                if p.online { "online" } else { "offline" }.to_string(),
                table::ago(p.last_seen, now),
                p.version.clone(),
                p.peer_id.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "NAME",
                "ULA",
                "TAGS",
                "STATUS",
                "LAST SEEN",
                "VERSION",
                "PEER ID"
            ],
            &rows
        )
    );
    Ok(())
}

async fn token(client: &CoordinatorClient, admin: &str, cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create {
            ttl,
            uses,
            reusable,
            tags,
            description,
            json,
        } => {
            let req = CreateJoinTokenRequest {
                ttl_secs: Some(ttl.as_secs().max(1)),
                uses: (!reusable).then_some(uses),
                reusable,
                tags: (!tags.is_empty()).then_some(tags),
                description,
            };
            let created = client
                .create_join_token(admin, &req)
                .await
                .context("creating a join token")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "join token {} expires {}; uses: {}",
                    created.info.id,
                    created.info.expires_at.to_rfc3339(),
                    created
                        .info
                        .uses_allowed
                        .map_or("unlimited".to_string(), |n| n.to_string())
                );
                if let Ok(t) = tabbify_wire::token::split_join_token(&created.token)
                    && let Some(pin) = t.ca_fingerprint
                {
                    eprintln!(
                        "the token pins the mesh CA sha256:{pin}; elsewhere, tcli trusts this coordinator with --ca-fingerprint {pin}"
                    );
                }
            }
        }
        TokenCommand::List { json } => {
            let list = client.list_join_tokens(admin).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        state_name(t.state).into(),
                        format!(
                            "{}/{}",
                            t.uses,
                            t.uses_allowed.map_or("∞".to_string(), |n| n.to_string())
                        ),
                        t.expires_at.to_rfc3339(),
                        t.tags.as_ref().map_or("any".to_string(), |tags| {
                            tags.iter().map(Tag::as_str).collect::<Vec<_>>().join(",")
                        }),
                        t.description.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &["ID", "STATE", "USES", "EXPIRES", "TAGS", "DESCRIPTION"],
                    &rows
                )
            );
        }
        TokenCommand::Revoke { id, cascade: false } => {
            client.revoke_join_token(admin, &id).await?;
            println!("revoked {id}");
        }
        TokenCommand::Revoke { id, cascade: true } => {
            crate::removed::revoke_cascade(client, admin, &id).await?;
        }
    }
    Ok(())
}

fn state_name(s: JoinTokenState) -> &'static str {
    match s {
        JoinTokenState::Active => "active",
        JoinTokenState::Expired => "expired",
        JoinTokenState::UsedUp => "used up",
        JoinTokenState::Revoked => "revoked",
    }
}
