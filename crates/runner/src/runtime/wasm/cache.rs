//! Loading a component: check what the bytes are before handing them to the compiler, and keep
//! compiled code on disk keyed by the component's sha256 and the engine's compatibility hash, so
//! a restarted runner (or another runner of the same app) maps the code instead of recompiling.
//!
//! The cache directory belongs to the node and is trusted: its files are loaded as native code.

use super::super::LoadError;
use crate::app_dir::write_atomic;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use tabbify_wire::runner::CompileCache;
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: [u8; 4] = *b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];
/// Version 0x0d, layer 1: the component binary format.
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// Refuses anything but a component binary, with a reason a person can act on.
pub fn classify_binary(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let path = path.to_path_buf();
    if bytes.len() < 8 || bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm { path });
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[4..8]);
    match version {
        COMPONENT_VERSION => Ok(()),
        CORE_MODULE_VERSION => Err(LoadError::CoreModule { path }),
        found => Err(LoadError::UnknownVersion { path, found }),
    }
}

/// Feeds `Hash` output into sha256, so the engine's hash is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The cache file name for `bytes` compiled by `engine`.
pub fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    let component = hex::encode(Sha256::digest(bytes));
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let engine_hash = hex::encode(&hasher.0.finalize()[..8]);
    format!("{component}-{engine_hash}.cwasm")
}

/// Compiles `bytes`, or loads the compiled code from `cache_dir` when it is there.
pub fn load_component(
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    cache_dir: &Path,
) -> Result<(Component, CompileCache, PathBuf), LoadError> {
    classify_binary(path, bytes)?;
    let cached = cache_dir.join(cache_key(engine, bytes));
    if cached.is_file() {
        // SAFETY: files in the cache directory are written only by runners of this node, from
        // `Component::serialize` of an engine with the same compatibility hash (part of the name).
        // wasmtime still checks the header and refuses an incompatible or damaged file.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => {
                tracing::info!(cache = %cached.display(), "compile cache hit");
                return Ok((component, CompileCache::Hit, cached));
            }
            Err(e) => {
                tracing::warn!(cache = %cached.display(), error = %e, "compile cache entry unusable; recompiling");
                let _ = std::fs::remove_file(&cached);
            }
        }
    }
    let started = std::time::Instant::now();
    let component = Component::new(engine, bytes).map_err(|e| LoadError::Compile {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    })?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis(),
        "compiled component"
    );
    match component.serialize() {
        Ok(code) => {
            let written =
                std::fs::create_dir_all(cache_dir).and_then(|()| write_atomic(&cached, &code));
            match written {
                Ok(()) => tracing::info!(cache = %cached.display(), "compile cache stored"),
                Err(e) => {
                    tracing::warn!(cache = %cached.display(), error = %e, "cannot store compiled code")
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot serialize compiled code"),
    }
    Ok((component, CompileCache::Miss, cached))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_binaries() {
        let p = Path::new("x.wasm");
        assert!(classify_binary(p, b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(matches!(
            classify_binary(p, b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(matches!(
            classify_binary(p, b"\x7fELF\x02\x01\x01\0"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            classify_binary(p, b"\0as"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            classify_binary(p, b"\0asm\x0e\0\x01\0"),
            Err(LoadError::UnknownVersion { .. })
        ));
        let msg = classify_binary(p, b"\0asm\x01\0\0\0")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("core WebAssembly module, not a component"),
            "{msg}"
        );
    }

    #[test]
    fn key_depends_on_bytes_and_engine_settings() {
        let engine = Engine::default();
        let a = cache_key(&engine, b"one");
        assert_eq!(a, cache_key(&engine, b"one"));
        assert_ne!(a, cache_key(&engine, b"two"));
        assert!(a.ends_with(".cwasm"));
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        assert_ne!(a, cache_key(&other, b"one"));
    }
}
