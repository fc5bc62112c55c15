//! `node.toml`: the operator's declaration of one node, read strictly. Unknown keys, wrong types
//! and unacceptable values are refused with the file, line and column, the offending line and a
//! caret under the value, and what would have been accepted. The result is plain data
//! ([`NodeSpec`]) that [`super::plan`] turns into a container.
//!
//! ```toml
//! [backend]
//! kind = "docker"              # the only backend today
//! restart = "on-failure"       # no | always | unless-stopped | on-failure | on-failure:N
//! container = "tbf-sup"        # default tbf-sup
//! volume = "tbf-state"         # a named volume or an absolute host path; default tbf-state
//! image = "tabbify-supervisor" # default tabbify-supervisor (tabbify-supervisor:fc with firecracker)
//! network = "tbf-net"          # a Docker network to join (not with docker = true)
//!
//! [capabilities]
//! docker = false               # mount the Docker socket, host network
//! firecracker = false          # pass /dev/kvm, use the :fc image
//!
//! [mesh]
//! coordinator = "http://coord.example:8888"
//! name = "edge-fra-1"
//! join_token_file = "join-token"   # or join_token = "tbfj_..."
//! tags = ["eu-central"]
//!
//! [resources]
//! cpus = 2
//! memory_mb = 2048
//! ```

use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use tabbify_wire::Tag;
use toml::Spanned;

pub const DEFAULT_CONTAINER: &str = "tbf-sup";
pub const DEFAULT_VOLUME: &str = "tbf-state";
pub const DEFAULT_IMAGE: &str = "tabbify-supervisor";
pub const DEFAULT_FC_IMAGE: &str = "tabbify-supervisor:fc";
pub const MIN_MEMORY_MB: i64 = 64;
pub const MAX_MEMORY_MB: i64 = 4 * 1024 * 1024;
pub const MAX_CPUS: f64 = 1024.0;

/// A checked `node.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub restart: RestartPolicy,
    pub container: String,
    pub state: StateMount,
    pub image: String,
    pub network: Option<String>,
    pub docker: bool,
    pub firecracker: bool,
    pub coordinator: Option<String>,
    pub name: Option<String>,
    pub join_token: Option<JoinToken>,
    pub tags: Vec<Tag>,
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    OnFailure { max_retries: Option<u32> },
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
            RestartPolicy::OnFailure { max_retries: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
        }
    }
}

/// Where `/var/lib/tabbify` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateMount {
    Volume(String),
    HostDir(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinToken {
    /// Passed as `TABBIFY_JOIN_TOKEN`.
    Inline(String),
    /// A host file (absolute), mounted read-only and named by `TABBIFY_JOIN_TOKEN_FILE`.
    File(PathBuf),
}

/// Why a `node.toml` was refused, pointing into its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The line the error is on and a caret line under the span.
    pub snippet: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}\n{}",
            self.file, self.line, self.column, self.message, self.snippet
        )
    }
}

impl std::error::Error for SpecError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    #[serde(default)]
    backend: Option<RawBackend>,
    #[serde(default)]
    capabilities: Option<RawCapabilities>,
    #[serde(default)]
    mesh: Option<RawMesh>,
    #[serde(default)]
    resources: Option<RawResources>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    kind: Option<Spanned<String>>,
    restart: Option<Spanned<String>>,
    container: Option<Spanned<String>>,
    volume: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    network: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    docker: Option<Spanned<bool>>,
    firecracker: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    coordinator: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    join_token: Option<Spanned<String>>,
    join_token_file: Option<Spanned<String>>,
    tags: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpus: Option<Spanned<toml::Value>>,
    memory_mb: Option<Spanned<i64>>,
}

/// Reads `path` (relative `join_token_file` paths are taken from its directory).
pub fn load(path: &Path) -> Result<NodeSpec, anyhow::Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let base = std::path::absolute(&base).unwrap_or(base);
    Ok(parse(&text, &path.display().to_string(), &base)?)
}

/// Parses and checks a `node.toml` text. `file` names it in errors; `base_dir` resolves
/// relative paths.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<NodeSpec, SpecError> {
    let err = |span: Range<usize>, message: String| locate(text, file, span, message);
    let raw: RawNode = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        err(e.span().unwrap_or(0..0), message)
    })?;
    let backend = raw.backend.unwrap_or(RawBackend {
        kind: None,
        restart: None,
        container: None,
        volume: None,
        image: None,
        network: None,
    });
    let caps = raw.capabilities.unwrap_or(RawCapabilities {
        docker: None,
        firecracker: None,
    });
    let mesh = raw.mesh.unwrap_or(RawMesh {
        coordinator: None,
        name: None,
        join_token: None,
        join_token_file: None,
        tags: None,
    });
    let resources = raw.resources.unwrap_or(RawResources {
        cpus: None,
        memory_mb: None,
    });

    if let Some(kind) = &backend.kind
        && kind.get_ref() != "docker"
    {
        return Err(err(
            kind.span(),
            format!(
                "[backend] kind = {:?} is not supported: the only backend is \"docker\" \
                 (microVM nodes use the NixOS module or the :fc image)",
                kind.get_ref()
            ),
        ));
    }
    let restart = match &backend.restart {
        None => RestartPolicy::OnFailure { max_retries: None },
        Some(r) => parse_restart(r.get_ref()).map_err(|m| err(r.span(), m))?,
    };
    let container = match &backend.container {
        None => DEFAULT_CONTAINER.to_string(),
        Some(c) => docker_name(c.get_ref())
            .map_err(|m| err(c.span(), format!("[backend] container {m}")))?,
    };
    let state = match &backend.volume {
        None => StateMount::Volume(DEFAULT_VOLUME.to_string()),
        Some(v) if v.get_ref().starts_with('/') => {
            let p = v.get_ref();
            if p.contains(':') || p.contains(',') || p.contains("/../") || p.ends_with("/..") {
                return Err(err(
                    v.span(),
                    "[backend] volume: a host path must be absolute, without ':' ',' or '..'"
                        .into(),
                ));
            }
            StateMount::HostDir(PathBuf::from(p))
        }
        Some(v) => StateMount::Volume(docker_name(v.get_ref()).map_err(|m| {
            err(
                v.span(),
                format!("[backend] volume {m} (or give an absolute host path)"),
            )
        })?),
    };
    let docker = caps.docker.as_ref().is_some_and(|d| *d.get_ref());
    let firecracker = caps.firecracker.as_ref().is_some_and(|f| *f.get_ref());
    let image = match &backend.image {
        Some(i) => {
            let s = i.get_ref();
            if s.is_empty() || s.len() > 255 || s.chars().any(|c| c.is_whitespace()) {
                return Err(err(
                    i.span(),
                    "[backend] image must be a Docker image reference without spaces".into(),
                ));
            }
            s.clone()
        }
        None if firecracker => DEFAULT_FC_IMAGE.to_string(),
        None => DEFAULT_IMAGE.to_string(),
    };
    let network = match &backend.network {
        None => None,
        Some(n) => {
            if docker {
                return Err(err(
                    n.span(),
                    "[backend] network cannot be combined with [capabilities] docker = true: \
                     Docker apps need the host network (--network host)"
                        .into(),
                ));
            }
            Some(
                docker_name(n.get_ref())
                    .map_err(|m| err(n.span(), format!("[backend] network {m}")))?,
            )
        }
    };

    let coordinator = match &mesh.coordinator {
        None => None,
        Some(c) => Some(check_url(c.get_ref()).map_err(|m| err(c.span(), m))?),
    };
    let name = match &mesh.name {
        None => None,
        Some(n) => Some(node_name(n.get_ref()).map_err(|m| err(n.span(), m))?),
    };
    let join_token = match (&mesh.join_token, &mesh.join_token_file) {
        (Some(_), Some(f)) => {
            return Err(err(
                f.span(),
                "[mesh] join_token and join_token_file are both set; keep one".into(),
            ));
        }
        (Some(t), None) => {
            let v = t.get_ref().trim();
            if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(
                    t.span(),
                    "[mesh] join_token must be a single word (as printed by `tcli token create`)"
                        .into(),
                ));
            }
            Some(JoinToken::Inline(v.to_string()))
        }
        (None, Some(f)) => {
            let p = f.get_ref();
            if p.is_empty() || p.contains(':') || p.contains(',') {
                return Err(err(
                    f.span(),
                    "[mesh] join_token_file must be a path without ':' or ','".into(),
                ));
            }
            Some(JoinToken::File(base_dir.join(p)))
        }
        (None, None) => None,
    };
    let mut tags = Vec::new();
    for t in mesh.tags.iter().flatten() {
        let tag = Tag::new(t.get_ref()).map_err(|e| err(t.span(), format!("[mesh] tags: {e}")))?;
        if [Tag::wasm(), Tag::docker(), Tag::firecracker()].contains(&tag) {
            return Err(err(
                t.span(),
                format!(
                    "[mesh] tags: {tag} is a runtime tag; the node advertises it by itself when \
                     it can run it (see [capabilities])",
                    tag = tag.as_str()
                ),
            ));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }

    let cpus = match &resources.cpus {
        None => None,
        Some(c) => Some(check_cpus(c.get_ref()).map_err(|m| err(c.span(), m))?),
    };
    let memory_mb = match &resources.memory_mb {
        None => None,
        Some(m) => {
            let v = *m.get_ref();
            if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&v) {
                return Err(err(
                    m.span(),
                    format!(
                        "[resources] memory_mb = {v} is out of range: a node needs between \
                         {MIN_MEMORY_MB} and {MAX_MEMORY_MB} MiB"
                    ),
                ));
            }
            Some(v.unsigned_abs())
        }
    };

    Ok(NodeSpec {
        restart,
        container,
        state,
        image,
        network,
        docker,
        firecracker,
        coordinator,
        name,
        join_token,
        tags,
        cpus,
        memory_mb,
    })
}

fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    let bad = || {
        format!(
            "[backend] restart = {s:?} is not a restart policy; use \"no\", \"always\", \
             \"unless-stopped\", \"on-failure\" or \"on-failure:N\" (N from 1 to 1000)"
        )
    };
    Ok(match s {
        "no" => RestartPolicy::No,
        "always" => RestartPolicy::Always,
        "unless-stopped" => RestartPolicy::UnlessStopped,
        "on-failure" => RestartPolicy::OnFailure { max_retries: None },
        other => {
            let n = other
                .strip_prefix("on-failure:")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(bad)?;
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            }
        }
    })
}

/// Docker's rule for container, volume and network names.
fn docker_name(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && (2..=128).contains(&s.len()) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid Docker name (2-128 characters of a-z A-Z 0-9 _ . -, starting \
             with a letter or digit)"
        ))
    }
}

fn node_name(s: &str) -> Result<String, String> {
    let ok = (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "[mesh] name = {s:?} is not a node name (1-63 characters of a-z A-Z 0-9 - _ .)"
        ))
    }
}

fn check_url(s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!("[mesh] coordinator = {s:?} {why}; write it like \"http://coord.example:8888\"")
    };
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| bad("is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if host.contains('@') {
        return Err(bad("must not carry credentials"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains spaces"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

fn check_cpus(v: &toml::Value) -> Result<f64, String> {
    let n = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        other => {
            return Err(format!(
                "[resources] cpus must be a number (e.g. 2 or 1.5), found a {}",
                other.type_str()
            ));
        }
    };
    if !n.is_finite() || !(0.01..=MAX_CPUS).contains(&n) {
        return Err(format!(
            "[resources] cpus = {n} is out of range: between 0.01 and {MAX_CPUS}"
        ));
    }
    Ok(n)
}

/// Builds the error for `span` of `text`: 1-based line and column (in characters) and the line
/// with a caret under the span.
fn locate(text: &str, file: &str, span: Range<usize>, message: String) -> SpecError {
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line_text = text[line_start..line_end].trim_end_matches('\r');
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    let end = span.end.clamp(start, line_end.max(start));
    let width = text.get(start..end).map_or(1, |s| s.chars().count()).max(1);
    let gutter = line.to_string().len();
    let snippet = format!(
        "{pad} |\n{line} | {line_text}\n{pad} | {spaces}{carets}",
        pad = " ".repeat(gutter),
        spaces = " ".repeat(column - 1),
        carets = "^".repeat(width),
    );
    SpecError {
        file: file.to_string(),
        line,
        column,
        message,
        snippet,
    }
}
