//! Wires the node together: identity, capability probe, join and heartbeat task, the mesh data
//! plane, the control API (TCP with operator tokens, and the unix socket), the assignment loop
//! (apps the coordinator places here), systemd notifications, and a clean shutdown on
//! SIGTERM/SIGINT (which also removes the TUN device).

use crate::api::ApiState;
use crate::api_server::{ApiServer, ControlSocket};
use crate::config::{DataplaneMode, SupervisorArgs};
use crate::control_auth::TrustedKey;
use crate::ingress::IngressServer;
use crate::join::Joiner;
use crate::mesh_link::{LinkSettings, MeshLink};
use crate::probe::{probe, tags_for};
use crate::status::{NodeStatus, StatusHandle};
use crate::systemd;
use anyhow::{Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;
use tabbify_client::CoordinatorClient;
use tabbify_mesh::identity::MeshIdentity;
use tabbify_wire::SUPERVISOR_PORT;
use tabbify_wire::health::MeshState;
use tabbify_wire::mesh::RegisterResponse;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

const LOOPBACK_API: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), SUPERVISOR_PORT);

pub async fn run(args: SupervisorArgs) -> Result<()> {
    tabbify_fsutil::ensure_dir(&args.data_dir, 0o700)
        .with_context(|| format!("creating the state directory {}", args.data_dir.display()))?;
    let (identity, created) =
        MeshIdentity::load_or_create(&args.data_dir).context("loading the mesh identity")?;
    if created {
        tracing::info!(public_key = %identity.public_key(), "created a new mesh identity");
    }

    let caps = probe().await;
    let tags = tags_for(&caps, &args.extra_tags);
    tracing::info!(
        tags = %tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(","),
        docker = %caps.docker_detail,
        kvm = %caps.kvm_detail,
        "capabilities"
    );
    let status = StatusHandle::new(NodeStatus {
        name: args.display_name(),
        mesh: if args.no_mesh {
            MeshState::NoMesh
        } else {
            MeshState::Joining
        },
        caps,
        tags,
        endpoints: Vec::new(),
        observed_addr: None,
        peer_id: identity.registration.as_ref().map(|r| r.peer_id.clone()),
        ula: identity.ula(),
        subnet: identity.registration.as_ref().map(|r| r.subnet),
        public_key: identity.public_key().to_string(),
        coordinator: (!args.no_mesh).then(|| args.coordinator.clone()),
        mesh_error: None,
        started: Instant::now(),
    });
    let apps = crate::apps::start(apps_config(&args, status.clone())).await;
    let trusted_key = if args.no_mesh {
        let (key, token_file) = crate::control_auth::start_local_tokens(&args.data_dir)?;
        tracing::info!(path = %token_file.display(), "wrote a local operator token for the control API: send it as `Authorization: Bearer $(cat FILE)`");
        println!(
            "tabbify-supervisor control token in {}",
            token_file.display()
        );
        TrustedKey::new(Some(key))
    } else {
        TrustedKey::new(crate::control_auth::load_pinned(&args.data_dir))
    };
    let api_state = ApiState {
        status: status.clone(),
        data_dir: args.data_dir.clone(),
        dataplane: Default::default(),
        apps,
        trusted_key: trusted_key.clone(),
    };
    let control_socket = match args.control_socket() {
        Some(path) => match ControlSocket::start(path, api_state.clone()).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no control socket: root on this node needs a token too");
                None
            }
        },
        None => None,
    };
    spawn_probe_loop(&args, status.clone());
    let _watchdog = systemd::spawn_watchdog();
    let mut signals = Signals::new()?;

    if args.no_mesh {
        let api = ApiServer::start(args.bind.unwrap_or(LOOPBACK_API), api_state).await?;
        announce_ready(&format!("no mesh, API on {}", api.addr));
        signals.wait().await;
        systemd::stopping();
        api.stop().await;
        if let Some(s) = control_socket {
            s.stop().await;
        }
        return Ok(());
    }

    let join_token = read_join_token(&args)?;
    let pin = match join_token.as_deref() {
        Some(text) => tabbify_wire::token::split_join_token(text)
            .context("the join token")?
            .ca_fingerprint
            .map(|hex| hex.parse::<tabbify_client::CaFingerprint>())
            .transpose()
            .context("the join token's CA fingerprint")?,
        None => None,
    };
    let tls = crate::node_tls::NodeTls::load_or_create(&args.data_dir)
        .context("loading the node's TLS key")?;
    let joined_over_tls = identity
        .registration
        .as_ref()
        .is_some_and(|r| r.coordinator.starts_with("https://"));
    let coordinator = crate::node_tls::coordinator_url(
        &args.coordinator,
        pin.is_some() || (joined_over_tls && tls.saved_ca().is_some()),
    );
    let client = CoordinatorClient::with_tls(
        &coordinator,
        &tabbify_client::TlsSettings {
            trust: tls.trust(pin)?,
            identity: Some(tls.slot.clone()),
        },
    )
    .with_context(|| format!("coordinator URL {coordinator:?}"))?;
    status.update(|s| s.coordinator = Some(coordinator.clone()));
    tokio::spawn(crate::node_tls::renew_loop(tls.clone(), client.clone()));
    let settings = LinkSettings {
        private_key: identity.private_key_bytes(),
        tun_name: args.tun_name.clone(),
        listen_port: args.listen_port,
        advertise: args.advertise_endpoints.clone(),
    };
    let (registered_tx, mut registered) = watch::channel::<Option<RegisterResponse>>(None);
    let joiner = Joiner {
        client: client.clone(),
        data_dir: args.data_dir.clone(),
        identity,
        join_token,
        status: status.clone(),
        backoff_cap: args.join_backoff_cap,
        tls,
        trusted_key,
    };
    let join_task = tokio::spawn(joiner.run(registered_tx));
    let assignments_task = tokio::spawn(
        crate::assignments::Follower {
            client: client.clone(),
            apps: api_state.apps.clone(),
            cache: crate::assignments::ArtifactCache::new(&args.data_dir),
            state_file: args.data_dir.join("assignments.json"),
            registered: registered.clone(),
        }
        .run(),
    );

    // An explicit --bind serves at once, so /health shows a node that cannot join yet; the
    // default ([ula]:8730) can only bind once the ULA is on the TUN device.
    let mut node = MeshNode {
        link: None,
        ingress: None,
        api: None,
        fixed_api: match args.bind {
            Some(bind) => Some(ApiServer::start(bind, api_state.clone()).await?),
            None => None,
        },
        dataplane_of_api: api_state.clone(),
    };
    let mut status_rx = status.subscribe();
    let mut ready_sent = false;
    let result = loop {
        tokio::select! {
            _ = signals.wait() => break Ok(()),
            changed = registered.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                let reg = registered.borrow_and_update().clone();
                if let Some(reg) = reg {
                    if let Err(e) = node
                        .on_registered(&args, &settings, &reg, &client, &status, &api_state)
                        .await
                    {
                        break Err(e);
                    }
                    if let Err(e) = node.ensure_ingress(&args, &client, &reg).await {
                        break Err(e);
                    }
                }
            }
            _ = status_rx.changed() => {}
        }
        if !ready_sent
            && status.snapshot().mesh == MeshState::Joined
            && let Some(api) = node.fixed_api.as_ref().or(node.api.as_ref())
        {
            let ula = status
                .snapshot()
                .ula
                .map(|u| u.to_string())
                .unwrap_or_default();
            announce_ready(&format!("joined as {ula}, API on {}", api.addr));
            ready_sent = true;
        }
    };
    tracing::info!("shutting down");
    systemd::stopping();
    join_task.abort();
    assignments_task.abort();
    node.stop().await;
    if let Some(s) = control_socket {
        s.stop().await;
    }
    result
}

/// What runs once the node is registered: the data plane (unless off) and the control API on
/// the ULA (unless an explicit `--bind` already serves it).
struct MeshNode {
    link: Option<MeshLink>,
    ingress: Option<IngressServer>,
    api: Option<ApiServer>,
    fixed_api: Option<ApiServer>,
    /// Where the API finds the data plane's statistics; cleared before the data plane stops.
    dataplane_of_api: ApiState,
}

impl MeshNode {
    async fn on_registered(
        &mut self,
        args: &SupervisorArgs,
        settings: &LinkSettings,
        reg: &RegisterResponse,
        client: &CoordinatorClient,
        status: &StatusHandle,
        api_state: &ApiState,
    ) -> Result<()> {
        let api_up = self.api.is_some() || self.fixed_api.is_some();
        let current = match (&self.link, api_up) {
            (Some(link), true) => Some(link.ula),
            (None, true) if args.dataplane == DataplaneMode::Off => Some(reg.ula),
            _ => None,
        };
        status.update(|s| s.subnet = Some(reg.subnet));
        if current == Some(reg.ula) {
            // Re-registered with the same address: everything already runs.
            status.update(|s| s.mesh = MeshState::Joined);
            return Ok(());
        }
        if current.is_some() {
            tracing::warn!(new = %reg.ula, "address changed; restarting the data plane and API");
        }
        self.stop_mesh().await;
        let default_bind = match args.dataplane {
            DataplaneMode::Tun => {
                let link = MeshLink::start(settings, reg, client.clone(), status.clone()).await?;
                api_state.set_dataplane(Some(link.dataplane()));
                self.link = Some(link);
                SocketAddr::new(reg.ula.into(), SUPERVISOR_PORT)
            }
            DataplaneMode::Off => {
                status.update(|s| s.mesh = MeshState::Joined);
                LOOPBACK_API
            }
        };
        if self.fixed_api.is_none() {
            self.api = Some(ApiServer::start(default_bind, api_state.clone()).await?);
        }
        Ok(())
    }

    /// Stops the ULA-bound API and the data plane (the fixed API keeps serving).
    async fn stop_mesh(&mut self) {
        if let Some(api) = self.api.take() {
            api.stop().await;
        }
        if let Some(link) = self.link.take() {
            self.dataplane_of_api.set_dataplane(None);
            link.shutdown().await;
        }
    }

    /// With `--ingress`: serves it with the current credential (restarted when a new
    /// registration brings another one).
    async fn ensure_ingress(
        &mut self,
        args: &SupervisorArgs,
        client: &CoordinatorClient,
        reg: &RegisterResponse,
    ) -> Result<()> {
        let Some(bind) = args.ingress else {
            return Ok(());
        };
        if self
            .ingress
            .as_ref()
            .is_some_and(|i| i.credential == reg.peer_credential)
        {
            return Ok(());
        }
        if let Some(old) = self.ingress.take() {
            old.stop().await;
        }
        self.ingress = Some(
            IngressServer::start(
                bind,
                client.clone(),
                reg.peer_credential.clone(),
                reg.mesh_prefix,
            )
            .await?,
        );
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some(ingress) = self.ingress.take() {
            ingress.stop().await;
        }
        if let Some(api) = self.fixed_api.take() {
            api.stop().await;
        }
        self.stop_mesh().await;
    }
}

fn announce_ready(what: &str) {
    systemd::ready(what);
    println!("tabbify-supervisor ready: {what}");
}

struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn spawn_probe_loop(args: &SupervisorArgs, status: StatusHandle) {
    let every = args.probe_interval;
    let extra = args.extra_tags.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let caps = probe().await;
            let tags = tags_for(&caps, &extra);
            let before = status.snapshot();
            if before.caps != caps {
                if before.tags != tags {
                    tracing::info!(old = ?before.tags, new = ?tags, "capabilities changed");
                }
                status.update(|s| {
                    s.caps = caps;
                    s.tags = tags;
                });
            }
        }
    });
}

/// Apps get loopback addresses without a mesh data plane, addresses of the node's /64 with one.
fn apps_config(args: &SupervisorArgs, status: StatusHandle) -> crate::apps::AppsConfig {
    let mode = if args.no_mesh || args.dataplane == DataplaneMode::Off {
        crate::apps::AddressMode::Loopback
    } else {
        crate::apps::AddressMode::Mesh
    };
    crate::apps::AppsConfig {
        data_dir: args.data_dir.clone(),
        runner_bin: crate::apps::runner_bin(args.runner_bin.as_deref()),
        mode,
        status,
        start_timeout: args.app_start_timeout,
        request_deadline: args.app_request_deadline,
        stop_grace: args.app_stop_grace,
        vm_kernel: args.vm_kernel.clone(),
        health_interval: std::time::Duration::from_secs(5),
        max_upload: crate::apps::upload::UploadLimits {
            app: args.max_app_upload_mib.saturating_mul(1024 * 1024),
            image: args.max_image_upload_mib.saturating_mul(1024 * 1024),
        },
    }
}

fn read_join_token(args: &SupervisorArgs) -> Result<Option<String>> {
    if let Some(t) = args.join_token.as_ref().filter(|t| !t.trim().is_empty()) {
        return Ok(Some(t.trim().to_string()));
    }
    match &args.join_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the join token file {}", path.display()))?;
            Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
        }
        None => Ok(None),
    }
}
