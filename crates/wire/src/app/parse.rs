//! Reading an operator's `tabbify.toml`: strict TOML shapes (unknown keys rejected) that keep the
//! position of every value, turned into a validated [`Manifest`] with errors that name the field
//! and point at its line and column.

use super::{
    AppName, AppSection, ArtifactDigest, DEFAULT_CPUS, DEFAULT_HTTP_PORT, DEFAULT_MEMORY_MB,
    DockerNetwork, DockerRuntime, FirecrackerRuntime, HttpSection, MAX_CPUS, MAX_MEMORY_MB,
    MAX_REPLICAS, MIN_CPUS, MIN_MEMORY_MB, Manifest, Resources, RestartPolicy, RestartSpec,
    RuntimeKind, RuntimeSpec, WasmRuntime,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use toml::Spanned;

const MAX_ENV_VALUE_LEN: usize = 32 * 1024;

/// A place in the manifest's text, both counted from 1 (columns in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a manifest was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The TOML reader refused it: bad syntax, an unknown key, a missing field, a wrong type.
    #[error("tabbify.toml{}: {message}", at(position))]
    Toml {
        message: String,
        position: Option<Position>,
    },
    /// It is well-formed but a value is not acceptable.
    #[error("tabbify.toml{}: `{field}` {message}", at(position))]
    Invalid {
        field: String,
        message: String,
        position: Option<Position>,
    },
}

fn at(position: &Option<Position>) -> String {
    position.map(|p| format!(" {p}")).unwrap_or_default()
}

impl ManifestError {
    /// The position the error points at, if it has one.
    pub fn position(&self) -> Option<Position> {
        match self {
            ManifestError::Toml { position, .. } | ManifestError::Invalid { position, .. } => {
                *position
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    app: RawApp,
    runtime: RawRuntime,
    http: Option<RawHttp>,
    resources: Option<RawResources>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    restart: Option<RawRestart>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: Spanned<String>,
    replicas: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    kind: Spanned<RuntimeKind>,
    component: Option<Spanned<String>>,
    artifact: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    network: Option<Spanned<DockerNetwork>>,
    rootfs: Option<Spanned<String>>,
    kernel: Option<Spanned<String>>,
    boot_args: Option<Spanned<String>>,
    egress: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    port: Spanned<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    memory_mb: Option<Spanned<u32>>,
    cpus: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: Option<RestartPolicy>,
    backoff_initial_ms: Option<Spanned<u64>>,
    backoff_max_ms: Option<Spanned<u64>>,
    backoff_multiplier: Option<Spanned<f64>>,
    reset_after_ms: Option<Spanned<u64>>,
    max_restarts: Option<u32>,
    crashloop_after: Option<Spanned<u32>>,
}

/// Parses and validates a manifest's text.
pub(super) fn parse_manifest(text: &str) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    let v = Validator { text };
    let name = AppName::new(raw.app.name.get_ref().clone())
        .map_err(|e| v.invalid("app.name", &raw.app.name.span(), e))?;
    let replicas = match raw.app.replicas {
        None => 1,
        Some(r) if (1..=MAX_REPLICAS).contains(r.get_ref()) => *r.get_ref(),
        Some(r) => {
            return Err(v.invalid(
                "app.replicas",
                &r.span(),
                format!("must be between 1 and {MAX_REPLICAS}, got {}", r.get_ref()),
            ));
        }
    };
    let runtime = v.runtime(raw.runtime)?;
    let http = match raw.http {
        None => HttpSection {
            port: DEFAULT_HTTP_PORT,
        },
        Some(h) if *h.port.get_ref() == 0 => {
            return Err(v.invalid("http.port", &h.port.span(), "must be 1..=65535, got 0"));
        }
        Some(h) => HttpSection {
            port: *h.port.get_ref(),
        },
    };
    let resources = v.resources(raw.resources)?;
    let env = v.env(raw.env)?;
    let restart = v.restart(raw.restart)?;
    Ok(Manifest {
        app: AppSection { name, replicas },
        runtime,
        http,
        resources,
        env,
        restart,
    })
}

/// Turns the TOML reader's error into one that says where, and in which table.
fn toml_error(text: &str, e: &toml::de::Error) -> ManifestError {
    let span = e.span();
    let mut message = e.message().trim().to_string();
    if let Some(span) = &span
        && (message.starts_with("unknown field") || message.starts_with("missing field"))
    {
        message.push_str(&match table_at(text, span.start) {
            Some(table) => format!(" (in [{table}])"),
            None => " (at the top level)".to_string(),
        });
    }
    ManifestError::Toml {
        message,
        position: span.map(|s| Position::of_offset(text, s.start)),
    }
}

/// The `[table]` header in force at byte `offset`, if any.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset.min(text.len()))?;
    // The header line itself counts: a missing-field error points at the header.
    let line_end = text[before.len()..]
        .find('\n')
        .map_or(text.len(), |i| before.len() + i);
    text[..line_end].lines().rev().find_map(|line| {
        let line = line.trim_start();
        let inner = line.strip_prefix('[')?;
        let inner = inner.trim_start_matches('[');
        let end = inner.find(']')?;
        Some(inner[..end].trim().to_string())
    })
}

struct Validator<'a> {
    text: &'a str,
}

impl Validator<'_> {
    fn invalid(
        &self,
        field: &str,
        span: &Range<usize>,
        message: impl fmt::Display,
    ) -> ManifestError {
        ManifestError::Invalid {
            field: field.to_string(),
            message: message.to_string(),
            position: Some(Position::of_offset(self.text, span.start)),
        }
    }

    fn runtime(&self, raw: RawRuntime) -> Result<RuntimeSpec, ManifestError> {
        let kind = *raw.kind.get_ref();
        let present: [(&str, Option<Range<usize>>); 9] = [
            ("component", raw.component.as_ref().map(Spanned::span)),
            ("artifact", raw.artifact.as_ref().map(Spanned::span)),
            ("image", raw.image.as_ref().map(Spanned::span)),
            ("command", raw.command.as_ref().map(Spanned::span)),
            ("network", raw.network.as_ref().map(Spanned::span)),
            ("rootfs", raw.rootfs.as_ref().map(Spanned::span)),
            ("kernel", raw.kernel.as_ref().map(Spanned::span)),
            ("boot_args", raw.boot_args.as_ref().map(Spanned::span)),
            ("egress", raw.egress.as_ref().map(Spanned::span)),
        ];
        let allowed: &[&str] = match kind {
            RuntimeKind::Wasm => &["component", "artifact"],
            RuntimeKind::Docker => &["image", "command", "network"],
            RuntimeKind::Firecracker => &["image", "rootfs", "kernel", "boot_args", "egress"],
        };
        for (field, span) in &present {
            if let Some(span) = span
                && !allowed.contains(field)
            {
                return Err(self.invalid(
                    &format!("runtime.{field}"),
                    span,
                    format!(
                        "does not apply to kind = \"{kind}\" (it takes {})",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let kind_span = raw.kind.span();
        match kind {
            RuntimeKind::Wasm => {
                let component = raw
                    .component
                    .map(|c| self.non_empty("runtime.component", c));
                let component = component.transpose()?;
                let artifact = match raw.artifact {
                    None => None,
                    Some(a) => Some(
                        ArtifactDigest::parse(a.get_ref().clone())
                            .map_err(|e| self.invalid("runtime.artifact", &a.span(), e))?,
                    ),
                };
                if component.is_some() == artifact.is_some() {
                    let problem = if component.is_some() {
                        "and `runtime.artifact` are both given; give one"
                    } else {
                        "is missing: kind = \"wasm\" needs `component` (a .wasm path) or `artifact` (sha256:<hex>)"
                    };
                    return Err(self.invalid("runtime.component", &kind_span, problem));
                }
                Ok(RuntimeSpec::Wasm(WasmRuntime {
                    component,
                    artifact,
                }))
            }
            RuntimeKind::Docker => {
                let Some(image) = raw.image else {
                    return Err(self.invalid(
                        "runtime.image",
                        &kind_span,
                        "is missing: kind = \"docker\" needs an image",
                    ));
                };
                let image = self.non_empty("runtime.image", image)?;
                if image.chars().any(char::is_whitespace) {
                    return Err(ManifestError::Invalid {
                        field: "runtime.image".into(),
                        message: format!("{image:?} must not contain whitespace"),
                        position: Some(Position::of_offset(self.text, kind_span.start)),
                    });
                }
                Ok(RuntimeSpec::Docker(DockerRuntime {
                    image,
                    command: raw.command.map(Spanned::into_inner).unwrap_or_default(),
                    network: raw.network.map(Spanned::into_inner).unwrap_or_default(),
                }))
            }
            RuntimeKind::Firecracker => {
                let image = raw.image.map(|i| self.non_empty("runtime.image", i));
                let rootfs = raw.rootfs.map(|r| self.non_empty("runtime.rootfs", r));
                let (image, rootfs) = (image.transpose()?, rootfs.transpose()?);
                if image.is_some() == rootfs.is_some() {
                    return Err(self.invalid(
                        "runtime.image",
                        &kind_span,
                        "kind = \"firecracker\" needs exactly one of `image` (OCI) and `rootfs` (ext4)",
                    ));
                }
                let kernel = raw.kernel.map(|k| self.non_empty("runtime.kernel", k));
                Ok(RuntimeSpec::Firecracker(FirecrackerRuntime {
                    image,
                    rootfs,
                    kernel: kernel.transpose()?,
                    boot_args: raw.boot_args.map(Spanned::into_inner),
                    egress: raw.egress.is_some_and(Spanned::into_inner),
                }))
            }
        }
    }

    fn non_empty(&self, field: &str, value: Spanned<String>) -> Result<String, ManifestError> {
        if value.get_ref().trim().is_empty() {
            return Err(self.invalid(field, &value.span(), "must not be empty"));
        }
        Ok(value.into_inner())
    }

    fn resources(&self, raw: Option<RawResources>) -> Result<Resources, ManifestError> {
        let (memory, cpus) = raw.map_or((None, None), |r| (r.memory_mb, r.cpus));
        let memory_mb = match memory {
            None => DEFAULT_MEMORY_MB,
            Some(m) if (MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(m.get_ref()) => *m.get_ref(),
            Some(m) => {
                return Err(self.invalid(
                    "resources.memory_mb",
                    &m.span(),
                    format!(
                        "must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB}, got {}",
                        m.get_ref()
                    ),
                ));
            }
        };
        let cpus = match cpus {
            None => DEFAULT_CPUS,
            Some(c) if c.get_ref().is_finite() && (MIN_CPUS..=MAX_CPUS).contains(c.get_ref()) => {
                *c.get_ref()
            }
            Some(c) => {
                return Err(self.invalid(
                    "resources.cpus",
                    &c.span(),
                    format!(
                        "must be between {MIN_CPUS} and {MAX_CPUS}, got {}",
                        c.get_ref()
                    ),
                ));
            }
        };
        Ok(Resources { memory_mb, cpus })
    }

    fn env(
        &self,
        raw: BTreeMap<String, Spanned<String>>,
    ) -> Result<BTreeMap<String, String>, ManifestError> {
        let mut env = BTreeMap::new();
        for (key, value) in raw {
            let key_ok = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok {
                return Err(self.invalid(
                    &format!("env.{key}"),
                    &value.span(),
                    "is not a valid variable name: use letters, digits and '_', not starting with a digit",
                ));
            }
            if value.get_ref().contains('\0') || value.get_ref().len() > MAX_ENV_VALUE_LEN {
                return Err(self.invalid(
                    &format!("env.{key}"),
                    &value.span(),
                    format!("must be at most {MAX_ENV_VALUE_LEN} bytes without NUL characters"),
                ));
            }
            env.insert(key, value.into_inner());
        }
        Ok(env)
    }

    fn restart(&self, raw: Option<RawRestart>) -> Result<RestartSpec, ManifestError> {
        let defaults = RestartSpec::default();
        let Some(raw) = raw else {
            return Ok(defaults);
        };
        let ms = |field: &str, value: Option<Spanned<u64>>, default: u64, min: u64, max: u64| {
            match value {
                None => Ok(default),
                Some(v) if (min..=max).contains(v.get_ref()) => Ok(*v.get_ref()),
                Some(v) => Err(self.invalid(
                    field,
                    &v.span(),
                    format!("must be between {min} and {max}, got {}", v.get_ref()),
                )),
            }
        };
        const HOUR_MS: u64 = 3_600_000;
        let initial_span = raw.backoff_initial_ms.as_ref().map(Spanned::span);
        let spec = RestartSpec {
            policy: raw.policy.unwrap_or(defaults.policy),
            backoff_initial_ms: ms(
                "restart.backoff_initial_ms",
                raw.backoff_initial_ms,
                defaults.backoff_initial_ms,
                10,
                HOUR_MS,
            )?,
            backoff_max_ms: ms(
                "restart.backoff_max_ms",
                raw.backoff_max_ms,
                defaults.backoff_max_ms,
                10,
                HOUR_MS,
            )?,
            backoff_multiplier: match raw.backoff_multiplier {
                None => defaults.backoff_multiplier,
                Some(m) if m.get_ref().is_finite() && (1.0..=10.0).contains(m.get_ref()) => {
                    *m.get_ref()
                }
                Some(m) => {
                    return Err(self.invalid(
                        "restart.backoff_multiplier",
                        &m.span(),
                        format!("must be between 1.0 and 10.0, got {}", m.get_ref()),
                    ));
                }
            },
            reset_after_ms: ms(
                "restart.reset_after_ms",
                raw.reset_after_ms,
                defaults.reset_after_ms,
                1_000,
                24 * HOUR_MS,
            )?,
            max_restarts: raw.max_restarts,
            crashloop_after: match raw.crashloop_after {
                None => defaults.crashloop_after,
                Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref(),
                Some(n) => {
                    return Err(self.invalid(
                        "restart.crashloop_after",
                        &n.span(),
                        format!("must be between 1 and 1000, got {}", n.get_ref()),
                    ));
                }
            },
        };
        if spec.backoff_initial_ms > spec.backoff_max_ms {
            return Err(ManifestError::Invalid {
                field: "restart.backoff_initial_ms".into(),
                message: format!(
                    "({}) must not exceed restart.backoff_max_ms ({})",
                    spec.backoff_initial_ms, spec.backoff_max_ms
                ),
                position: initial_span.map(|s| Position::of_offset(self.text, s.start)),
            });
        }
        Ok(spec)
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
