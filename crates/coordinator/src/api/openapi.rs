//! `GET /v1/openapi.json`: an OpenAPI 3.1 description of this API.
//!
//! Body schemas are derived from sample values of the real wire types at run time, so field names
//! and JSON types cannot drift from what the handlers actually send and accept.

use serde::Serialize;
use serde_json::{Map, Value, json};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use tabbify_wire::app::{AppId, AppName, ArtifactDigest, Resources, RuntimeKind};
use tabbify_wire::health::CoordinatorHealth;
use tabbify_wire::mesh::{
    HeartbeatRequest, HeartbeatResponse, NodeResources, Peer, PeerList, RegisterRequest,
    RegisterResponse, RemovedPeer, RemovedPeerList, RosterEvent, RosterEventKind, RosterSnapshot,
};
use tabbify_wire::node_apps::AppState;
use tabbify_wire::placement::{
    AppEndpoints, AppList, AppStatus, AppView, Assignment, AssignmentSet, CreateAppRequest,
    NodeAppsReport, NodeAppsReportAck, ReplicaReport, ReplicaView,
};
use tabbify_wire::token::{
    CreateJoinTokenRequest, CreatedJoinToken, JoinTokenInfo, JoinTokenList, JoinTokenState,
    RevokedJoinToken,
};
use tabbify_wire::{
    Endpoint, ErrorBody, ErrorCode, Ipv6Prefix, PublicKeyB64, SOFTWARE_VERSION, Tag, Timestamp,
};

/// A JSON schema that accepts values shaped like `example` (and shows it as the example).
fn schema_of(example: &Value) -> Value {
    match example {
        Value::Object(fields) => {
            let props: Map<String, Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), schema_of(v)))
                .collect();
            json!({"type": "object", "properties": props})
        }
        Value::Array(items) => match items.first() {
            Some(first) => json!({"type": "array", "items": schema_of(first)}),
            None => json!({"type": "array"}),
        },
        Value::String(_) => json!({"type": "string"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_f64() => json!({"type": "number"}),
        Value::Number(_) => json!({"type": "integer"}),
        Value::Null => json!({}),
    }
}

fn component<T: Serialize>(sample: &T) -> Value {
    let example = serde_json::to_value(sample).unwrap_or(Value::Null);
    let mut schema = schema_of(&example);
    if let Value::Object(map) = &mut schema {
        map.insert("example".into(), example);
    }
    schema
}

fn samples() -> Map<String, Value> {
    let now = Timestamp(1_764_000_000_000);
    let mesh = Ipv6Prefix::new(Ipv6Addr::new(0xfd12, 0x3456, 0x789a, 0, 0, 0, 0, 0), 48);
    let ula = Ipv6Addr::new(0xfd12, 0x3456, 0x789a, 1, 0, 0, 0, 1);
    let subnet = Ipv6Prefix::new(ula, 64);
    let key = PublicKeyB64::from_bytes([7; 32]);
    let underlay = IpAddr::from([192, 0, 2, 10]);
    let endpoints = vec![Endpoint::Udp(SocketAddr::new(underlay, 51820))];
    let resources = NodeResources {
        cpus: 4.0,
        memory_mb: 8192,
        cpus_free: 2.5,
        memory_mb_free: 4096,
    };
    let peer = Peer {
        peer_id: "3f2a9c0d1e4b5a67".into(),
        ula,
        subnet,
        display_name: "edge-fra-1".into(),
        tags: vec![Tag::wasm(), Tag::docker()],
        public_key: key.clone(),
        endpoints: endpoints.clone(),
        last_seen: now,
        online: true,
        version: SOFTWARE_VERSION.into(),
        joined_at: Some(now),
        resources: Some(resources),
    };
    let info = JoinTokenInfo {
        id: "0011223344556677".into(),
        description: Some("rack 3".into()),
        created_at: now,
        expires_at: now,
        uses_allowed: Some(1),
        uses: 0,
        tags: Some(vec![Tag::wasm()]),
        state: JoinTokenState::Active,
    };
    let removed = RemovedPeer {
        peer_id: peer.peer_id.clone(),
        public_key: peer.public_key.clone(),
        display_name: peer.display_name.clone(),
        removed_at: now,
        reason: "removed by an operator".into(),
    };
    let mut m = Map::new();
    let mut add = |name: &str, schema: Value| {
        m.insert(name.into(), schema);
    };
    add("RemovedPeer", component(&removed));
    add(
        "RemovedPeerList",
        component(&RemovedPeerList {
            removed_peers: vec![removed.clone()],
        }),
    );
    add(
        "RevokedJoinToken",
        component(&RevokedJoinToken {
            id: info.id.clone(),
            removed_peers: vec![removed],
        }),
    );
    add(
        "ErrorBody",
        component(&ErrorBody::new(
            ErrorCode::TokenExpired,
            "join token 0011223344556677 expired at ...",
        )),
    );
    add(
        "CoordinatorHealth",
        component(&CoordinatorHealth {
            status: "ok".into(),
            version: SOFTWARE_VERSION.into(),
            tls: false,
            open_join: false,
            peers_total: 1,
            peers_online: 1,
            revision: 7,
            mesh_prefix: mesh.to_string(),
        }),
    );
    add(
        "RegisterRequest",
        component(&RegisterRequest {
            public_key: key,
            display_name: "edge-fra-1".into(),
            tags: vec![Tag::wasm()],
            endpoints: endpoints.clone(),
            requested_ula: Some(ula),
            version: SOFTWARE_VERSION.into(),
            peer_credential: None,
            resources: Some(resources),
            csr: Some("-----BEGIN CERTIFICATE REQUEST-----\n...".into()),
        }),
    );
    add(
        "RegisterResponse",
        component(&RegisterResponse {
            peer_id: peer.peer_id.clone(),
            ula,
            subnet,
            mesh_prefix: mesh,
            heartbeat_interval_secs: 5,
            peer_credential: None,
            client_certificate: Some("-----BEGIN CERTIFICATE-----\n...".into()),
            ca_certificate: Some("-----BEGIN CERTIFICATE-----\n...".into()),
            observed_addr: Some(underlay),
            revision: 7,
            signing_key: Some("tbfk_...".into()),
        }),
    );
    add(
        "CreateOperatorTokenRequest",
        component(&tabbify_wire::operator::CreateOperatorTokenRequest {
            scopes: vec![tabbify_wire::operator::Scope::NodeRead],
            ttl_secs: Some(3600),
            subject: Some("alice".into()),
            nodes: Some(vec!["edge-fra-1".into()]),
            tags: Some(vec![Tag::wasm()]),
        }),
    );
    add(
        "CreatedOperatorToken",
        component(&tabbify_wire::operator::CreatedOperatorToken {
            token: "tbfo_<claims>.<signature>".into(),
            id: "5d0c1f2e3a4b5c6d7e8f901a2b3c4d5e".into(),
            subject: "alice".into(),
            scopes: vec![tabbify_wire::operator::Scope::NodeRead],
            issued_at: Timestamp(1_700_000_000_000),
            expires_at: Timestamp(1_700_003_600_000),
            nodes: Some(vec!["edge-fra-1".into()]),
            tags: Some(vec![Tag::wasm()]),
        }),
    );
    add(
        "SigningKeyInfo",
        component(&tabbify_wire::operator::SigningKeyInfo {
            public_key: "tbfk_...".into(),
        }),
    );
    add(
        "HeartbeatRequest",
        component(&HeartbeatRequest {
            tags: vec![Tag::wasm()],
            endpoints,
            version: Some(SOFTWARE_VERSION.into()),
            resources: Some(resources),
        }),
    );
    add(
        "HeartbeatResponse",
        component(&HeartbeatResponse {
            heartbeat_interval_secs: 5,
            revision: 7,
            observed_addr: Some(underlay),
        }),
    );
    add("Peer", component(&peer));
    add(
        "PeerList",
        component(&PeerList {
            peers: vec![peer.clone()],
            revision: 7,
        }),
    );
    add(
        "RosterEvent",
        component(&RosterEvent {
            revision: 8,
            kind: RosterEventKind::Updated,
            peer: peer.clone(),
            at: now,
        }),
    );
    add(
        "RosterSnapshot",
        component(&RosterSnapshot {
            revision: 7,
            peers: vec![peer],
        }),
    );
    add(
        "CreateJoinTokenRequest",
        component(&CreateJoinTokenRequest {
            ttl_secs: Some(86_400),
            uses: Some(1),
            reusable: false,
            tags: Some(vec![Tag::wasm()]),
            description: Some("rack 3".into()),
        }),
    );
    add(
        "CreatedJoinToken",
        component(&CreatedJoinToken {
            token: "tbfj_0011223344556677_...".into(),
            info: info.clone(),
        }),
    );
    add(
        "JoinTokenList",
        component(&JoinTokenList { tokens: vec![info] }),
    );
    add_app_samples(&mut m, now, ula);
    m
}

/// The apps API's bodies (`docs/coordinator-apps-api.md`).
fn add_app_samples(m: &mut Map<String, Value>, now: Timestamp, ula: Ipv6Addr) {
    let (Ok(name), Ok(digest), Ok(app_id)) = (
        AppName::new("hello"),
        ArtifactDigest::parse(format!("sha256:{}", "ab".repeat(32))),
        AppId::new("hello-1a2b3c4d"),
    ) else {
        return;
    };
    let manifest = "[app]\nname = \"hello\"\nreplicas = 2\n[runtime]\nkind = \"wasm\"\ncomponent = \"hello.wasm\"\n";
    let appsrv = "http://10.0.0.5:9000".to_string();
    let address = SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0xfd12, 0x3456, 0x789a, 1, 0, 0, 0, 2)),
        8080,
    );
    let replica = ReplicaView {
        replica: 0,
        peer_id: Some("3f2a9c0d1e4b5a67".into()),
        node_name: Some("edge-fra-1".into()),
        node_ula: Some(ula),
        node_online: Some(true),
        assigned_at: Some(now),
        pending_reason: None,
        state: Some(AppState::Running),
        version: Some(3),
        address: Some(address),
        url: Some(format!("http://{address}/")),
        error: None,
        reported_at: Some(now),
    };
    let pending = ReplicaView {
        replica: 1,
        peer_id: None,
        node_name: None,
        node_ula: None,
        node_online: None,
        assigned_at: None,
        pending_reason: Some(
            "no online node offers the `wasm` runtime besides the 1 already running a replica"
                .into(),
        ),
        state: None,
        version: None,
        address: None,
        url: None,
        error: None,
        reported_at: None,
    };
    let view = AppView {
        name: name.clone(),
        version: 3,
        runtime: RuntimeKind::Wasm,
        replicas_desired: 2,
        resources: Resources {
            memory_mb: 128,
            cpus: 1.0,
        },
        artifact_digest: Some(digest.clone()),
        appsrv_url: Some(appsrv.clone()),
        status: AppStatus::Pending,
        pending_reason: pending.pending_reason.clone(),
        replicas: vec![replica, pending],
        created_at: now,
        updated_at: now,
        manifest: manifest.into(),
    };
    let mut add = |key: &str, schema: Value| {
        m.insert(key.into(), schema);
    };
    add(
        "CreateAppRequest",
        component(&CreateAppRequest {
            manifest: manifest.into(),
            artifact_digest: Some(digest.clone()),
            appsrv_url: Some(appsrv.clone()),
        }),
    );
    add("AppView", component(&view));
    add(
        "AppList",
        component(&AppList {
            apps: vec![view],
            revision: 42,
        }),
    );
    add(
        "AppEndpoints",
        component(&AppEndpoints {
            app: name.clone(),
            version: 3,
            endpoints: vec![address],
        }),
    );
    add(
        "AssignmentSet",
        component(&AssignmentSet {
            revision: 42,
            peer_id: "3f2a9c0d1e4b5a67".into(),
            assignments: vec![Assignment {
                app: name.clone(),
                replica: 0,
                version: 3,
                runtime: RuntimeKind::Wasm,
                manifest: manifest.into(),
                artifact_digest: Some(digest),
                appsrv_url: Some(appsrv),
                assigned_at: now,
            }],
        }),
    );
    add(
        "NodeAppsReport",
        component(&NodeAppsReport {
            applied_revision: Some(42),
            apps: vec![ReplicaReport {
                app: name,
                version: 3,
                state: AppState::Running,
                address: Some(address),
                app_id: Some(app_id),
                error: None,
            }],
        }),
    );
    add(
        "NodeAppsReportAck",
        component(&NodeAppsReportAck {
            revision: 42,
            accepted: 1,
        }),
    );
}

fn body(name: &str) -> Value {
    json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}})
}

fn ok(name: &str, what: &str) -> Value {
    let mut r = body(name);
    r["description"] = json!(what);
    r
}

fn err(what: &str) -> Value {
    let mut r = body("ErrorBody");
    r["description"] = json!(what);
    r
}

/// The whole document.
pub fn document() -> Value {
    let admin = json!([{"admin": []}]);
    let peer_cred = json!([{"peer_credential": []}]);
    // A new key needs a join token; a known key proves itself with `peer_credential` in the body
    // (and `--open-join` needs nothing), hence the empty alternative.
    let join = json!([{"join_token": []}, {}]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tabbify coordinator",
            "version": SOFTWARE_VERSION,
            "description": "Roster, addresses, join tokens, liveness and the roster watch stream of a Tabbify mesh; apps, their placement, each node's assignment stream and state reports."
        },
        "paths": {
            "/health": {"get": {"summary": "Liveness and roster counts", "responses": {"200": ok("CoordinatorHealth", "healthy")}}},
            "/metrics": {"get": {"summary": "Prometheus / OpenMetrics text", "responses": {"200": {"description": "metrics", "content": {"application/openmetrics-text": {}}}}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/v1/mesh/register": {"post": {
                "summary": "Join the mesh (new key: join token) or re-register (known key: peer_credential in the body)",
                "security": join,
                "requestBody": body("RegisterRequest"),
                "responses": {
                    "200": ok("RegisterResponse", "registered"),
                    "400": err("bad body, or requested ULA outside the mesh prefix / in the coordinator's subnet"),
                    "401": err("token_missing / token_unknown / token_expired / token_used_up / token_revoked"),
                    "403": err("tag_not_allowed by the join token; peer_removed: the key belongs to a removed peer (tcli peers readmit)"),
                    "409": err("conflict: key registered, credential missing or wrong; address_unavailable"),
                    "413": err("body over 1 MiB")
                }
            }},
            "/v1/mesh/heartbeat": {"post": {
                "summary": "Refresh last_seen; empty tags/endpoints and absent version/resources mean unchanged",
                "security": peer_cred,
                "requestBody": body("HeartbeatRequest"),
                "responses": {
                    "200": ok("HeartbeatResponse", "recorded"),
                    "400": err("bad body"),
                    "401": err("no bearer credential"),
                    "403": err("tag_not_allowed"),
                    "404": err("unknown_peer: register again")
                }
            }},
            "/v1/mesh/peers": {"get": {
                "summary": "The roster, ordered by address",
                "parameters": [{"name": "tag", "in": "query", "required": false, "schema": {"type": "string"}}],
                "responses": {"200": ok("PeerList", "roster"), "400": err("bad tag")}
            }},
            "/v1/mesh/peers/{id}": {
                "get": {"summary": "One peer", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                        "responses": {"200": ok("Peer", "the peer"), "404": err("not_found")}},
                "delete": {"summary": "Remove a peer now and free its address (admin)", "security": admin,
                           "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                           "responses": {"204": {"description": "removed"}, "401": err("unauthorized"), "404": err("not_found")}}
            },
            "/v1/mesh/watch": {"get": {
                "summary": "Server-sent events: `id: <revision>`, `event: snapshot|joined|updated|offline|removed`, `data: RosterSnapshot|RosterEvent`",
                "parameters": [
                    {"name": "since", "in": "query", "required": false, "schema": {"type": "integer"}},
                    {"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer"}}
                ],
                "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/RosterSnapshot"}, {"$ref": "#/components/schemas/RosterEvent"}]}}}},
                    "400": err("since is not a revision"),
                    "429": err("too_many_streams: the caller (peer, admin or address) or the coordinator holds as many watch streams as allowed")}
            }},
            "/v1/admin/removed-peers": {"get": {
                "summary": "Removed peers whose keys are refused at registration until re-admitted", "security": admin,
                "responses": {"200": ok("RemovedPeerList", "removed peers"), "401": err("unauthorized")}
            }},
            "/v1/admin/removed-peers/{which}/readmit": {"post": {
                "summary": "Let a removed peer's key register again (with a join token, as a new peer); `which` is its peer id or public key (percent-encoded)",
                "security": admin,
                "parameters": [{"name": "which", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok("RemovedPeer", "re-admitted"), "401": err("unauthorized"), "404": err("not_found")}
            }},
            "/v1/mesh/signing-key": {"get": {
                "summary": "The public key that signs operator tokens (nodes pin it at join; the appsrv verifies uploads with it)",
                "responses": {"200": ok("SigningKeyInfo", "the key")}
            }},
            "/v1/admin/server-certificates": {"post": {
                "summary": "Issue a mesh-CA server certificate for another service of the mesh (the appsrv) from its CSR, for the names listed (90 days by default, at most a year)",
                "security": admin,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": false, "required": ["csr", "names"],
                    "properties": {"csr": {"type": "string"}, "names": {"type": "array", "minItems": 1, "maxItems": 32, "items": {"type": "string"}}, "ttl_secs": {"type": "integer", "minimum": 60, "maximum": 31536000}}
                }}}},
                "responses": {"201": {"description": "issued", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["certificate_chain", "ca", "serial", "not_after"],
                    "properties": {"certificate_chain": {"type": "string"}, "ca": {"type": "string"}, "serial": {"type": "string"}, "not_after": {"type": "string", "format": "date-time"}}
                }}}}, "400": err("bad CSR, name or ttl; or --insecure-no-mtls (no CA)"), "401": err("unauthorized")}
            }},
            "/v1/admin/operator-tokens": {"post": {
                "summary": "Mint an operator token for nodes' control APIs (node:read, node:write), appsrv uploads (artifacts:write) or roster reads (mesh:read); shown once, never stored",
                "security": admin, "requestBody": body("CreateOperatorTokenRequest"),
                "responses": {"201": ok("CreatedOperatorToken", "minted"), "400": err("no scope, unknown scope, ttl out of range, bad node name or tag"), "401": err("unauthorized")}
            }},
            "/v1/admin/join-tokens": {
                "post": {"summary": "Create a join token (the secret is shown once)", "security": admin, "requestBody": body("CreateJoinTokenRequest"),
                         "responses": {"201": ok("CreatedJoinToken", "created"), "400": err("bad request"), "401": err("unauthorized")}},
                "get": {"summary": "List join tokens", "security": admin,
                        "responses": {"200": ok("JoinTokenList", "tokens"), "401": err("unauthorized")}}
            },
            "/v1/apps": {
                "post": {"summary": "Create an app (201, Location) or update the one with its name (200; the version goes up when the manifest or the artifact changed); answers the app after placement",
                         "security": admin, "requestBody": body("CreateAppRequest"),
                         "responses": {"200": ok("AppView", "updated"), "201": ok("AppView", "created"),
                                       "400": err("bad JSON, unknown field, manifest error (field, line, column), bad or disagreeing digest, wasm app without an artifact, artifact without an appsrv, bad appsrv_url"),
                                       "401": err("unauthorized"), "413": err("body over 1 MiB")}},
                "get": {"summary": "Every app with its replicas, by name", "security": admin,
                        "responses": {"200": ok("AppList", "apps"), "401": err("unauthorized")}}
            },
            "/v1/apps/{name}": {
                "get": {"summary": "One app: where each replica runs and what its node reported", "security": admin,
                        "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                        "responses": {"200": ok("AppView", "the app"), "400": err("bad app name"), "401": err("unauthorized"), "404": err("not_found")}},
                "delete": {"summary": "Delete an app; its replicas are withdrawn from their nodes", "security": admin,
                           "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                           "responses": {"204": {"description": "deleted"}, "400": err("bad app name"), "401": err("unauthorized"), "404": err("not_found")}}
            },
            "/v1/apps/{name}/endpoints": {"get": {
                "summary": "Addresses of the replicas reported running on online nodes (for an ingress)",
                "security": [{"admin": []}, {"peer_credential": []}],
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok("AppEndpoints", "endpoints"), "400": err("bad app name"), "401": err("unauthorized"), "404": err("not_found")}
            }},
            "/v1/nodes/self/assignments": {"get": {
                "summary": "The calling node's complete assignment set", "security": peer_cred,
                "responses": {"200": ok("AssignmentSet", "assignments"), "401": err("no bearer credential"), "404": err("unknown_peer: register again")}
            }},
            "/v1/nodes/self/assignments/watch": {"get": {
                "summary": "Server-sent events: `id: <revision>`, `event: assignments`, `data: AssignmentSet` (the complete set each time; the first at once unless `since` is the current revision); keep-alive comments every 15 s",
                "security": peer_cred,
                "parameters": [
                    {"name": "since", "in": "query", "required": false, "schema": {"type": "integer"}},
                    {"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer"}}
                ],
                "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/AssignmentSet"}}}},
                              "400": err("since is not a revision"), "401": err("no bearer credential"), "404": err("unknown_peer: register again"),
                              "429": err("too_many_streams")}
            }},
            "/v1/nodes/self/apps/state": {"post": {
                "summary": "Report the state of every assignment-driven app on the calling node", "security": peer_cred,
                "requestBody": body("NodeAppsReport"),
                "responses": {"200": ok("NodeAppsReportAck", "recorded"), "400": err("bad body, or a replica address that is not an app address of the node (outside its /64, its own ULA, not the app's [http] port): nothing is stored"), "401": err("no bearer credential"),
                              "404": err("unknown_peer: register again"), "413": err("body over 1 MiB")}
            }},
            "/v1/admin/join-tokens/{id}": {"delete": {
                "summary": "Revoke a join token; with cascade=true also remove every peer it admitted (their keys are refused until re-admitted)", "security": admin,
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                               {"name": "cascade", "in": "query", "required": false, "schema": {"type": "boolean"}}],
                "responses": {"200": ok("RevokedJoinToken", "revoked, with the peers removed (cascade)"), "204": {"description": "revoked"}, "400": err("bad query"), "401": err("unauthorized"), "404": err("not_found")}
            }}
        },
        "components": {
            "schemas": samples(),
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer", "description": "tbfa_... from <data-dir>/admin-token"},
                "join_token": {"type": "http", "scheme": "bearer", "description": "tbfj_<id>_<secret>"},
                "peer_credential": {"type": "http", "scheme": "bearer", "description": "tbfp_<peer id>_<secret> from register"}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves_and_schemas_follow_the_wire() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        let peer = &schemas["Peer"]["properties"];
        for field in [
            "peer_id",
            "ula",
            "subnet",
            "display_name",
            "tags",
            "public_key",
            "endpoints",
            "last_seen",
            "online",
            "version",
        ] {
            assert!(peer.get(field).is_some(), "Peer.{field}");
        }
        assert_eq!(peer["tags"]["type"], "array");
        assert_eq!(peer["online"]["type"], "boolean");
        for path in [
            "/v1/apps",
            "/v1/apps/{name}",
            "/v1/apps/{name}/endpoints",
            "/v1/nodes/self/assignments",
            "/v1/nodes/self/assignments/watch",
            "/v1/nodes/self/apps/state",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
        let view = &schemas["AppView"]["properties"];
        for field in ["name", "version", "status", "replicas", "manifest"] {
            assert!(view.get(field).is_some(), "AppView.{field}");
        }
        assert!(
            schemas["AssignmentSet"]["properties"]["assignments"]["items"]["properties"]
                .get("artifact_digest")
                .is_some()
        );
        // Flattened token info shows up at the top level, as on the wire.
        assert!(
            schemas["CreatedJoinToken"]["properties"]
                .get("expires_at")
                .is_some()
        );
    }
}
