//! `tcli deploy`, `tcli apps`, `tcli app`, `tcli logs`, `tcli rm`: apps at the coordinator.
//! Deploy stages the artifact on the appsrv (skipped when it is already there), creates or
//! updates the app, and waits until every replica serves. Logs come from the node that runs a
//! replica, over its control API (`[node ula]:8730` on the mesh, or `--node-api`).

use crate::table;
use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tabbify_client::AppChange;
use tabbify_client::CoordinatorClient;
use tabbify_wire::app::{AppName, ArtifactDigest, Manifest, RuntimeSpec};
use tabbify_wire::node_apps::AppList as NodeAppList;
use tabbify_wire::placement::{AppStatus, AppView, CreateAppRequest};

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The app manifest.
    #[arg(short = 'f', long = "file", default_value = "tabbify.toml")]
    pub manifest: PathBuf,
    /// The artifact to stage (default: the manifest's `[runtime] component`; for a docker app,
    /// an optional `docker save` tarball).
    #[arg(long)]
    pub artifact: Option<PathBuf>,
    /// The artifact server the artifact is staged on and nodes fetch it from.
    #[arg(long, env = "TABBIFY_APPSRV", default_value = "http://127.0.0.1:9000")]
    pub appsrv: String,
    /// Return once the coordinator accepted the app, without waiting for it to serve.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for every replica to serve.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print no progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What deploy did, for callers such as `tcli dev`.
pub struct Deployed {
    pub view: AppView,
    pub change: AppChange,
}

/// The artifact file of a manifest: `--artifact`, else the wasm component path, which is
/// relative to the manifest's directory.
fn artifact_path(
    manifest: &Manifest,
    manifest_path: &Path,
    explicit: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    match &manifest.runtime {
        RuntimeSpec::Wasm(w) => w.component.as_ref().map(|c| {
            let base = manifest_path.parent().unwrap_or_else(|| Path::new("."));
            base.join(c)
        }),
        _ => None,
    }
}

pub async fn deploy(
    client: &CoordinatorClient,
    admin: &str,
    args: &DeployArgs,
) -> Result<Deployed> {
    let text = std::fs::read_to_string(&args.manifest)
        .with_context(|| format!("reading {}", args.manifest.display()))?;
    let manifest = Manifest::from_toml_str(&text)
        .with_context(|| format!("{} is not a valid manifest", args.manifest.display()))?;
    let digest = match artifact_path(&manifest, &args.manifest, args.artifact.as_deref()) {
        Some(path) => Some(stage(client, &args.appsrv, admin, &path, args.quiet).await?),
        None => None,
    };
    let req = CreateAppRequest {
        manifest: text,
        artifact_digest: digest,
        appsrv_url: Some(args.appsrv.trim_end_matches('/').to_string()),
    };
    let (change, view) = client
        .create_app(admin, &req)
        .await
        .context("creating the app at the coordinator")?;
    if !args.quiet {
        eprintln!(
            "{} {} version {}",
            match change {
                AppChange::Created => "created",
                AppChange::Updated => "updated",
            },
            view.name,
            view.version
        );
    }
    if args.no_wait {
        return Ok(Deployed { view, change });
    }
    let view = wait_serving(client, admin, &view.name, view.version, args.timeout).await?;
    Ok(Deployed { view, change })
}

/// Uploads `path` to the appsrv unless a blob with its digest is already there, with an
/// `artifacts:write` token minted for this upload.
async fn stage(
    client: &CoordinatorClient,
    appsrv: &str,
    admin: &str,
    path: &Path,
    quiet: bool,
) -> Result<ArtifactDigest> {
    let bytes = tokio::fs::read(path)
        .await
        .with_context(|| format!("reading the artifact {}", path.display()))?;
    let digest = digest_of(&bytes);
    let url = format!("{}/v1/blobs/{digest}", appsrv.trim_end_matches('/'));
    // The appsrv is trusted as the coordinator is: its certificate comes from the mesh CA.
    let http = tabbify_client::http_client(&url, client.tls_settings())
        .with_context(|| format!("setting up TLS for the appsrv at {appsrv}"))?;
    let head = http
        .head(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach the appsrv at {appsrv}"))?;
    if head.status().is_success() {
        if !quiet {
            eprintln!("artifact {digest} is already staged");
        }
        return Ok(digest);
    }
    let token = crate::operator::upload_token(client, admin).await?;
    let total = bytes.len() as u64;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let chunks: Vec<bytes::Bytes> = bytes::Bytes::from(bytes)
        .chunks(64 * 1024)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let progress = bar.clone();
    let body = futures_util::stream::iter(chunks).map(move |c| {
        progress.inc(c.len() as u64);
        Ok::<_, std::io::Error>(c)
    });
    let resp = http
        .put(&url)
        .bearer_auth(&token)
        .header(reqwest::header::CONTENT_LENGTH, total)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .with_context(|| format!("uploading to the appsrv at {appsrv}"))?;
    bar.finish_and_clear();
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!("the appsrv refused the upload ({status}): {}", text.trim());
    }
    if !quiet {
        eprintln!("staged {digest} ({total} bytes)");
    }
    Ok(digest)
}

fn digest_of(bytes: &[u8]) -> ArtifactDigest {
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    ArtifactDigest::parse(format!("sha256:{hex}"))
        .unwrap_or_else(|_| unreachable!("a sha256 in hex is a valid digest"))
}

/// Polls the app until every replica reports running at `version`.
async fn wait_serving(
    client: &CoordinatorClient,
    admin: &str,
    name: &AppName,
    version: u64,
    timeout: Duration,
) -> Result<AppView> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = client.app(admin, name).await?;
        let current = view.version == version;
        if current && view.status == AppStatus::Running {
            return Ok(view);
        }
        if Instant::now() >= deadline {
            let why = view
                .pending_reason
                .clone()
                .or_else(|| view.replicas.iter().find_map(|r| r.error.clone()))
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            bail!(
                "{name} is {} after {}{why} (see `tcli app {name}`)",
                view.status,
                humantime::format_duration(timeout)
            );
        }
        // Cheap for the coordinator (one read of its in-memory table), and the wait is what an
        // operator sees of a deploy.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn print_deployed(view: &AppView) {
    for r in &view.replicas {
        if let Some(url) = &r.url {
            println!("{url}");
        }
    }
}

pub async fn list(client: &CoordinatorClient, admin: &str, json: bool) -> Result<()> {
    let list = client.apps(admin).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .apps
        .iter()
        .map(|a| {
            let running = a
                .replicas
                .iter()
                .filter(|r| r.state == Some(tabbify_wire::node_apps::AppState::Running))
                .count();
            vec![
                a.name.to_string(),
                a.version.to_string(),
                a.runtime.to_string(),
                a.status.to_string(),
                format!("{running}/{}", a.replicas_desired),
                a.replicas
                    .iter()
                    .filter_map(|r| r.address.map(|x| x.to_string()))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "NAME",
                "VERSION",
                "RUNTIME",
                "STATUS",
                "RUNNING",
                "ADDRESSES"
            ],
            &rows
        )
    );
    Ok(())
}

pub async fn show(
    client: &CoordinatorClient,
    admin: &str,
    name: &AppName,
    json: bool,
) -> Result<()> {
    let a = client.app(admin, name).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&a)?);
        return Ok(());
    }
    println!("name      {}", a.name);
    println!("version   {}", a.version);
    println!("runtime   {}", a.runtime);
    println!("status    {}", a.status);
    if let Some(why) = &a.pending_reason {
        println!("pending   {why}");
    }
    if let Some(d) = &a.artifact_digest {
        println!("artifact  {d}");
    }
    println!();
    let rows: Vec<Vec<String>> = a
        .replicas
        .iter()
        .map(|r| {
            vec![
                r.replica.to_string(),
                r.node_name.clone().unwrap_or_else(|| "-".into()),
                r.state
                    .map(|s| format!("{s:?}").to_lowercase())
                    .unwrap_or_else(|| {
                        if r.pending_reason.is_some() {
                            "pending"
                        } else {
                            "-"
                        }
                        .into()
                    }),
                r.address
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.error
                    .clone()
                    .or_else(|| r.pending_reason.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["REPLICA", "NODE", "STATE", "ADDRESS", "NOTE"], &rows)
    );
    Ok(())
}

pub async fn remove(client: &CoordinatorClient, admin: &str, name: &AppName) -> Result<()> {
    client.delete_app(admin, name).await?;
    println!("removed {name}");
    Ok(())
}

/// Prints the log of one replica, from its node's control API, with an operator token
/// (`node:read`; a fresh one once if the node refuses the cached one).
pub async fn logs(
    client: &CoordinatorClient,
    admin: &str,
    tokens: &crate::operator::NodeTokens<'_>,
    name: &AppName,
    follow: bool,
    node_api: Option<&str>,
) -> Result<()> {
    let view = client.app(admin, name).await?;
    let api = match node_api {
        Some(a) => a.trim_end_matches('/').to_string(),
        None => {
            let ula = view
                .replicas
                .iter()
                .find_map(|r| r.node_ula)
                .with_context(|| format!("{name} runs on no node yet"))?;
            format!("http://[{ula}]:{}", tabbify_wire::SUPERVISOR_PORT)
        }
    };
    let http = reqwest::Client::new();
    let list_url = format!("{api}/v1/apps");
    let mut token = tokens.get(tabbify_auth::Scope::NodeRead).await?;
    let mut resp = http
        .get(&list_url)
        .bearer_auth(&token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach the node API at {api} (pass --node-api)"))?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        // Expired in between, or the signing key was rotated: one fresh token, once.
        token = tokens.fresh().await?;
        resp = http
            .get(&list_url)
            .bearer_auth(&token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("cannot reach the node API at {api}"))?;
    }
    let list: NodeAppList = node_ok(resp)
        .await?
        .json()
        .await
        .context("the node's app list does not parse")?;
    let app = list
        .apps
        .iter()
        .find(|a| &a.name == name)
        .with_context(|| format!("the node at {api} runs no app named {name}"))?;
    let mut url = format!("{api}/v1/apps/{}/logs", app.app_id);
    if follow {
        url.push_str("?follow=true");
    }
    let resp = node_ok(
        http.get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .with_context(|| format!("fetching {url}"))?,
    )
    .await?;
    let mut body = resp.bytes_stream();
    use std::io::Write;
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the log stream broke")?;
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

/// The response when it succeeded; otherwise an error with the node's reason.
async fn node_ok(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let why = serde_json::from_str::<tabbify_wire::ErrorBody>(&text)
        .map(|b| b.to_string())
        .unwrap_or(text);
    bail!("the node answered {status}: {}", why.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_manifest_deploys_the_built_component() {
        let m = Manifest::from_toml_str(include_str!("../../../examples/hello-wasm/tabbify.toml"))
            .unwrap();
        assert_eq!(m.app.name.as_str(), "hello-wasm");
        assert_eq!(
            artifact_path(&m, Path::new("examples/hello-wasm/tabbify.toml"), None),
            Some(PathBuf::from(
                "examples/hello-wasm/../../target/wasm/hello-wasm.wasm"
            ))
        );
    }

    #[test]
    fn the_component_path_is_relative_to_the_manifest() {
        let m = Manifest::from_toml_str(
            "[app]\nname = \"hello\"\n[runtime]\nkind = \"wasm\"\ncomponent = \"out/hello.wasm\"\n",
        )
        .unwrap();
        assert_eq!(
            artifact_path(&m, Path::new("/srv/apps/tabbify.toml"), None),
            Some(PathBuf::from("/srv/apps/out/hello.wasm"))
        );
        assert_eq!(
            artifact_path(
                &m,
                Path::new("/srv/apps/tabbify.toml"),
                Some(Path::new("x.wasm"))
            ),
            Some(PathBuf::from("x.wasm"))
        );
        let pinned = Manifest::from_toml_str(&format!(
            "[app]\nname = \"hello\"\n[runtime]\nkind = \"wasm\"\nartifact = \"sha256:{}\"\n",
            "a".repeat(64)
        ))
        .unwrap();
        assert_eq!(
            artifact_path(&pinned, Path::new("tabbify.toml"), None),
            None
        );
        assert_eq!(
            digest_of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
