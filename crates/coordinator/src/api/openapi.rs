//! `GET /v1/openapi.json`: an OpenAPI 3.1 description of this API.
//!
//! Body schemas are derived from sample values of the real wire types at run time, so field names
//! and JSON types cannot drift from what the handlers actually send and accept.

use serde::Serialize;
use serde_json::{Map, Value, json};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use tabbify_wire::health::CoordinatorHealth;
use tabbify_wire::mesh::{
    HeartbeatRequest, HeartbeatResponse, NodeResources, Peer, PeerList, RegisterRequest,
    RegisterResponse, RosterEvent, RosterEventKind, RosterSnapshot,
};
use tabbify_wire::token::{
    CreateJoinTokenRequest, CreatedJoinToken, JoinTokenInfo, JoinTokenList, JoinTokenState,
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
    let mut m = Map::new();
    let mut add = |name: &str, schema: Value| {
        m.insert(name.into(), schema);
    };
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
            peer_credential: Some("tbfp_3f2a9c0d1e4b5a67_...".into()),
            resources: Some(resources),
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
            peer_credential: "tbfp_3f2a9c0d1e4b5a67_...".into(),
            observed_addr: Some(underlay),
            revision: 7,
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
    m
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
            "description": "Roster, addresses, join tokens, liveness and the roster watch stream of a Tabbify mesh."
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
                    "403": err("tag_not_allowed by the join token"),
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
                    "400": err("since is not a revision")}
            }},
            "/v1/admin/join-tokens": {
                "post": {"summary": "Create a join token (the secret is shown once)", "security": admin, "requestBody": body("CreateJoinTokenRequest"),
                         "responses": {"201": ok("CreatedJoinToken", "created"), "400": err("bad request"), "401": err("unauthorized")}},
                "get": {"summary": "List join tokens", "security": admin,
                        "responses": {"200": ok("JoinTokenList", "tokens"), "401": err("unauthorized")}}
            },
            "/v1/admin/join-tokens/{id}": {"delete": {
                "summary": "Revoke a join token", "security": admin,
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"204": {"description": "revoked"}, "401": err("unauthorized"), "404": err("not_found")}
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
        // Flattened token info shows up at the top level, as on the wire.
        assert!(
            schemas["CreatedJoinToken"]["properties"]
                .get("expires_at")
                .is_some()
        );
    }
}
