//! Placement: which node runs each replica of each app.
//!
//! A pure decision over plain data with the clock passed in (`docs/coordinator-apps-api.md`,
//! "Placement"); the store feeds it the apps, the current assignments and the roster after every
//! change and once a second, and persists what comes out. Keeping it free of I/O is what lets the
//! rules below be tested exhaustively:
//!
//! 1. A replica stays while its node is online and still carries the runtime's tag. A replica on
//!    an offline node stays for the grace period (counted from when placement first saw the node
//!    offline, which is the same job that marked it), then is re-placed; a node that left the
//!    roster loses its replicas at once; slots above `replicas` are withdrawn.
//! 2. An unplaced slot goes to the first eligible node in join order: online, carries the tag, no
//!    replica of this app already there, and enough free resources.
//! 3. Free = min(what the heartbeat advertises as free, advertised total − what is assigned).
//! 4. A slot that fits nowhere is pending with a reason a person can act on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tabbify_wire::app::{AppName, Resources, RuntimeKind};
use tabbify_wire::mesh::{NodeResources, PeerId};
use tabbify_wire::{Tag, Timestamp};

/// One replica slot: the app and the replica's index (`0..replicas`).
pub type SlotKey = (AppName, u32);

/// Tolerance for sums of fractional cpus (0.1 + 0.2 must fit in 0.3).
const CPU_EPSILON: f64 = 1e-9;

/// What placement needs to know about one node of the roster.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub peer_id: PeerId,
    pub name: String,
    pub online: bool,
    pub tags: Vec<Tag>,
    /// The figures of the node's last heartbeat; `None` fits nothing.
    pub resources: Option<NodeResources>,
    /// Join order: earlier joins are tried first (ties broken by peer id).
    pub joined_at: Timestamp,
}

/// What placement needs to know about one app.
#[derive(Debug, Clone, PartialEq)]
pub struct AppDemand {
    pub name: AppName,
    pub runtime: RuntimeKind,
    pub replicas: u32,
    pub resources: Resources,
}

/// Where one slot is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub peer_id: PeerId,
    pub assigned_at: Timestamp,
    /// Since when the node has been seen offline; `None` while it is online.
    pub lost_at: Option<Timestamp>,
}

/// Everything the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct PlacementInput<'a> {
    pub apps: &'a [AppDemand],
    pub current: &'a BTreeMap<SlotKey, Placed>,
    pub nodes: &'a [NodeFacts],
    pub now: Timestamp,
    pub node_lost_grace: Duration,
}

/// Why a replica left its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawReason {
    /// The app no longer exists.
    AppDeleted,
    /// The slot is above the app's `replicas`.
    ScaledDown,
    /// The node is no longer in the roster.
    NodeRemoved,
    /// The node stopped advertising the app's runtime tag.
    RuntimeGone,
    /// The node has been offline for longer than the grace period.
    NodeLost,
    /// Another replica of the same app is already on that node.
    SharedNode,
}

impl WithdrawReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawReason::AppDeleted => "app deleted",
            WithdrawReason::ScaledDown => "scaled down",
            WithdrawReason::NodeRemoved => "node removed from the roster",
            WithdrawReason::RuntimeGone => "node no longer offers the runtime",
            WithdrawReason::NodeLost => "node offline for longer than the grace period",
            WithdrawReason::SharedNode => "another replica of the app is on that node",
        }
    }
}

/// One change the plan makes, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementChange {
    Withdrawn {
        slot: SlotKey,
        peer_id: PeerId,
        why: WithdrawReason,
    },
    Placed {
        slot: SlotKey,
        peer_id: PeerId,
    },
}

/// The outcome: where every slot is, and why the others are nowhere.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub placed: BTreeMap<SlotKey, Placed>,
    pub pending: BTreeMap<SlotKey, String>,
    pub changes: Vec<PlacementChange>,
}

/// The mesh tag a node must carry to run `runtime`.
pub fn runtime_tag(runtime: RuntimeKind) -> Tag {
    match runtime {
        RuntimeKind::Wasm => Tag::wasm(),
        RuntimeKind::Docker => Tag::docker(),
        RuntimeKind::Firecracker => Tag::firecracker(),
    }
}

/// What is already assigned to one node.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    cpus: f64,
    memory_mb: u64,
}

/// Free resources of a node given what is assigned to it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Free {
    cpus: f64,
    memory_mb: u64,
}

impl Free {
    fn of(r: &NodeResources, load: Load) -> Self {
        Self {
            cpus: r.cpus_free.min(r.cpus - load.cpus).max(0.0),
            memory_mb: r
                .memory_mb_free
                .min(r.memory_mb.saturating_sub(load.memory_mb)),
        }
    }

    fn cpus_fit(&self, need: &Resources) -> bool {
        self.cpus + CPU_EPSILON >= need.cpus
    }

    fn memory_fits(&self, need: &Resources) -> bool {
        self.memory_mb >= u64::from(need.memory_mb)
    }
}

/// Decides where every replica runs.
pub fn place(input: &PlacementInput<'_>) -> Plan {
    let nodes: HashMap<&str, &NodeFacts> = input
        .nodes
        .iter()
        .map(|n| (n.peer_id.as_str(), n))
        .collect();
    let apps: HashMap<&AppName, &AppDemand> = input.apps.iter().map(|a| (&a.name, a)).collect();
    let mut join_order: Vec<&NodeFacts> = input.nodes.iter().collect();
    join_order.sort_by(|a, b| (a.joined_at, &a.peer_id).cmp(&(b.joined_at, &b.peer_id)));

    let mut plan = Plan::default();
    // Which nodes already hold a replica of each app.
    let mut holders: HashMap<AppName, BTreeSet<PeerId>> = HashMap::new();
    let mut load: HashMap<PeerId, Load> = HashMap::new();

    // Rule 1: what stays where it is.
    for (slot, placed) in input.current {
        let why = keep_or_withdraw(input, &apps, &nodes, &holders, slot, placed);
        match why {
            Ok(kept) => {
                if let Some(app) = apps.get(&slot.0) {
                    add_load(&mut load, &kept.peer_id, &app.resources);
                }
                holders
                    .entry(slot.0.clone())
                    .or_default()
                    .insert(kept.peer_id.clone());
                plan.placed.insert(slot.clone(), kept);
            }
            Err(why) => plan.changes.push(PlacementChange::Withdrawn {
                slot: slot.clone(),
                peer_id: placed.peer_id.clone(),
                why,
            }),
        }
    }

    // Rules 2 to 4: fill the empty slots, apps by name, slots in order.
    let mut ordered: Vec<&AppDemand> = input.apps.iter().collect();
    ordered.sort_by(|a, b| a.name.cmp(&b.name));
    for app in ordered {
        let tag = runtime_tag(app.runtime);
        for replica in 0..app.replicas {
            let slot = (app.name.clone(), replica);
            if plan.placed.contains_key(&slot) {
                continue;
            }
            let held = holders.entry(app.name.clone()).or_default();
            let chosen = join_order.iter().find(|n| {
                n.online
                    && n.tags.contains(&tag)
                    && !held.contains(&n.peer_id)
                    && n.resources.is_some_and(|r| {
                        let free = Free::of(&r, load_of(&load, &n.peer_id));
                        free.cpus_fit(&app.resources) && free.memory_fits(&app.resources)
                    })
            });
            match chosen {
                Some(node) => {
                    held.insert(node.peer_id.clone());
                    add_load(&mut load, &node.peer_id, &app.resources);
                    plan.placed.insert(
                        slot.clone(),
                        Placed {
                            peer_id: node.peer_id.clone(),
                            assigned_at: input.now,
                            lost_at: None,
                        },
                    );
                    plan.changes.push(PlacementChange::Placed {
                        slot,
                        peer_id: node.peer_id.clone(),
                    });
                }
                None => {
                    let reason = pending_reason(app, &tag, &join_order, held, &load);
                    plan.pending.insert(slot, reason);
                }
            }
        }
    }
    plan
}

/// Rule 1 for one current assignment: the placement it keeps, or why it goes.
fn keep_or_withdraw(
    input: &PlacementInput<'_>,
    apps: &HashMap<&AppName, &AppDemand>,
    nodes: &HashMap<&str, &NodeFacts>,
    holders: &HashMap<AppName, BTreeSet<PeerId>>,
    slot: &SlotKey,
    placed: &Placed,
) -> Result<Placed, WithdrawReason> {
    let app = apps.get(&slot.0).ok_or(WithdrawReason::AppDeleted)?;
    if slot.1 >= app.replicas {
        return Err(WithdrawReason::ScaledDown);
    }
    let node = nodes
        .get(placed.peer_id.as_str())
        .ok_or(WithdrawReason::NodeRemoved)?;
    if !node.tags.contains(&runtime_tag(app.runtime)) {
        return Err(WithdrawReason::RuntimeGone);
    }
    if holders
        .get(&slot.0)
        .is_some_and(|h| h.contains(&placed.peer_id))
    {
        return Err(WithdrawReason::SharedNode);
    }
    if node.online {
        return Ok(Placed {
            lost_at: None,
            ..placed.clone()
        });
    }
    let lost_at = placed.lost_at.unwrap_or(input.now);
    let lost_for = input.now.unix_ms().saturating_sub(lost_at.unix_ms());
    let grace = u64::try_from(input.node_lost_grace.as_millis()).unwrap_or(u64::MAX);
    if lost_for >= grace {
        return Err(WithdrawReason::NodeLost);
    }
    Ok(Placed {
        lost_at: Some(lost_at),
        ..placed.clone()
    })
}

fn load_of(load: &HashMap<PeerId, Load>, peer: &str) -> Load {
    load.get(peer).copied().unwrap_or_default()
}

fn add_load(load: &mut HashMap<PeerId, Load>, peer: &str, r: &Resources) {
    let l = load.entry(peer.to_string()).or_default();
    l.cpus += r.cpus;
    l.memory_mb += u64::from(r.memory_mb);
}

/// Why no node takes a slot of `app`, naming the closest miss.
fn pending_reason(
    app: &AppDemand,
    tag: &Tag,
    join_order: &[&NodeFacts],
    held: &BTreeSet<PeerId>,
    load: &HashMap<PeerId, Load>,
) -> String {
    let online: Vec<&NodeFacts> = join_order.iter().copied().filter(|n| n.online).collect();
    if online.is_empty() {
        return "no node is online".into();
    }
    let with_runtime: Vec<&NodeFacts> = online
        .into_iter()
        .filter(|n| n.tags.contains(tag))
        .collect();
    if with_runtime.is_empty() {
        return format!("no online node offers the `{}` runtime", app.runtime);
    }
    let holding = with_runtime
        .iter()
        .filter(|n| held.contains(&n.peer_id))
        .count();
    let candidates: Vec<&NodeFacts> = with_runtime
        .into_iter()
        .filter(|n| !held.contains(&n.peer_id))
        .collect();
    if candidates.is_empty() {
        return format!(
            "no online node offers the `{}` runtime besides the {holding} already running a replica",
            app.runtime
        );
    }
    let measured: Vec<(&NodeFacts, Free)> = candidates
        .iter()
        .filter_map(|n| {
            n.resources
                .map(|r| (*n, Free::of(&r, load_of(load, &n.peer_id))))
        })
        .collect();
    let need = &app.resources;
    // The best candidate fits the most dimensions, then has the most memory, then cpus, and
    // comes first in join order.
    let best = measured.iter().max_by(|(a_node, a), (b_node, b)| {
        let score = |f: &Free| u8::from(f.cpus_fit(need)) + u8::from(f.memory_fits(need));
        score(a)
            .cmp(&score(b))
            .then(a.memory_mb.cmp(&b.memory_mb))
            .then(a.cpus.total_cmp(&b.cpus))
            .then((b_node.joined_at, &b_node.peer_id).cmp(&(a_node.joined_at, &a_node.peer_id)))
    });
    let Some((node, free)) = best else {
        return format!(
            "no online node with the `{}` runtime advertises its resources (cpus, memory_mb) in \
             its heartbeats",
            app.runtime
        );
    };
    let short = match (free.cpus_fit(need), free.memory_fits(need)) {
        (true, false) => "memory",
        (false, true) => "cpus",
        _ => "cpus and memory",
    };
    format!(
        "not enough free {short} on any online node with the `{}` runtime: a replica needs {} \
         cpus and {} MB; the best candidate, {} ({}), has {} cpus and {} MB free",
        app.runtime,
        cpus(need.cpus),
        need.memory_mb,
        node.name,
        node.peer_id,
        cpus(free.cpus),
        free.memory_mb
    )
}

/// Cpus for people: at most two decimals, no trailing zeros.
fn cpus(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1000;
    const NOW: Timestamp = Timestamp(1_000_000);
    const GRACE: Duration = Duration::from_secs(30);

    fn name(s: &str) -> AppName {
        AppName::new(s).unwrap()
    }

    fn node(id: &str, joined: u64, tags: &[&str], cpus: f64, mem: u64) -> NodeFacts {
        NodeFacts {
            peer_id: id.into(),
            name: format!("node-{id}"),
            online: true,
            tags: tags.iter().map(|t| Tag::new(*t).unwrap()).collect(),
            resources: Some(NodeResources {
                cpus,
                memory_mb: mem,
                cpus_free: cpus,
                memory_mb_free: mem,
            }),
            joined_at: Timestamp(joined),
        }
    }

    fn wasm_node(id: &str, joined: u64) -> NodeFacts {
        node(id, joined, &["wasm"], 4.0, 4096)
    }

    fn app(n: &str, runtime: RuntimeKind, replicas: u32) -> AppDemand {
        AppDemand {
            name: name(n),
            runtime,
            replicas,
            resources: Resources {
                memory_mb: 128,
                cpus: 1.0,
            },
        }
    }

    fn at(peer: &str, assigned: u64) -> Placed {
        Placed {
            peer_id: peer.into(),
            assigned_at: Timestamp(assigned),
            lost_at: None,
        }
    }

    fn run(
        apps: &[AppDemand],
        current: &BTreeMap<SlotKey, Placed>,
        nodes: &[NodeFacts],
        now: Timestamp,
    ) -> Plan {
        place(&PlacementInput {
            apps,
            current,
            nodes,
            now,
            node_lost_grace: GRACE,
        })
    }

    fn where_is<'a>(plan: &'a Plan, app: &str, replica: u32) -> Option<&'a str> {
        plan.placed
            .get(&(name(app), replica))
            .map(|p| p.peer_id.as_str())
    }

    fn reason<'a>(plan: &'a Plan, app: &str, replica: u32) -> &'a str {
        plan.pending
            .get(&(name(app), replica))
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{app}/{replica} is not pending: {plan:?}"))
    }

    #[test]
    fn replicas_go_to_distinct_nodes_in_join_order() {
        // Listed out of join order on purpose.
        let nodes = [wasm_node("c", 30), wasm_node("a", 10), wasm_node("b", 20)];
        let plan = run(
            &[app("web", RuntimeKind::Wasm, 2)],
            &BTreeMap::new(),
            &nodes,
            NOW,
        );
        assert_eq!(where_is(&plan, "web", 0), Some("a"));
        assert_eq!(where_is(&plan, "web", 1), Some("b"));
        assert!(plan.pending.is_empty());
        assert_eq!(plan.placed[&(name("web"), 0)].assigned_at, NOW);
        assert_eq!(plan.changes.len(), 2);
    }

    #[test]
    fn join_ties_are_broken_by_peer_id() {
        let nodes = [wasm_node("zz", 10), wasm_node("aa", 10)];
        let plan = run(
            &[app("web", RuntimeKind::Wasm, 1)],
            &BTreeMap::new(),
            &nodes,
            NOW,
        );
        assert_eq!(where_is(&plan, "web", 0), Some("aa"));
    }

    #[test]
    fn different_apps_share_the_first_node_while_it_fits() {
        let nodes = [wasm_node("a", 10), wasm_node("b", 20)];
        let apps = [
            app("one", RuntimeKind::Wasm, 1),
            app("two", RuntimeKind::Wasm, 1),
        ];
        let plan = run(&apps, &BTreeMap::new(), &nodes, NOW);
        assert_eq!(where_is(&plan, "one", 0), Some("a"));
        assert_eq!(where_is(&plan, "two", 0), Some("a"));
    }

    #[test]
    fn the_runtime_tag_decides_which_nodes_qualify() {
        let nodes = [
            wasm_node("a", 10),
            node("d", 20, &["wasm", "docker"], 4.0, 4096),
        ];
        let apps = [
            app("box", RuntimeKind::Docker, 2),
            app("vm", RuntimeKind::Firecracker, 1),
        ];
        let plan = run(&apps, &BTreeMap::new(), &nodes, NOW);
        assert_eq!(where_is(&plan, "box", 0), Some("d"));
        assert_eq!(
            reason(&plan, "box", 1),
            "no online node offers the `docker` runtime besides the 1 already running a replica"
        );
        assert_eq!(
            reason(&plan, "vm", 0),
            "no online node offers the `firecracker` runtime"
        );
    }

    #[test]
    fn no_online_node_at_all() {
        let mut off = wasm_node("a", 10);
        off.online = false;
        let plan = run(
            &[app("web", RuntimeKind::Wasm, 1)],
            &BTreeMap::new(),
            &[off],
            NOW,
        );
        assert_eq!(reason(&plan, "web", 0), "no node is online");
        let plan = run(
            &[app("web", RuntimeKind::Wasm, 1)],
            &BTreeMap::new(),
            &[],
            NOW,
        );
        assert_eq!(reason(&plan, "web", 0), "no node is online");
    }

    #[test]
    fn fewer_eligible_nodes_than_replicas() {
        let nodes = [wasm_node("a", 10), wasm_node("b", 20)];
        let plan = run(
            &[app("web", RuntimeKind::Wasm, 3)],
            &BTreeMap::new(),
            &nodes,
            NOW,
        );
        assert_eq!(where_is(&plan, "web", 0), Some("a"));
        assert_eq!(where_is(&plan, "web", 1), Some("b"));
        assert_eq!(
            reason(&plan, "web", 2),
            "no online node offers the `wasm` runtime besides the 2 already running a replica"
        );
    }

    #[test]
    fn a_node_without_resources_fits_nothing() {
        let mut quiet = wasm_node("a", 10);
        quiet.resources = None;
        let plan = run(
            &[app("web", RuntimeKind::Wasm, 1)],
            &BTreeMap::new(),
            &[quiet.clone()],
            NOW,
        );
        assert!(
            reason(&plan, "web", 0).contains("advertises its resources"),
            "{plan:?}"
        );
        // A node that advertises comes next even though it joined later.
        let plan = run(
            &[app("web", RuntimeKind::Wasm, 1)],
            &BTreeMap::new(),
            &[quiet, wasm_node("b", 20)],
            NOW,
        );
        assert_eq!(where_is(&plan, "web", 0), Some("b"));
    }

    #[test]
    fn free_is_the_smaller_of_heartbeat_and_total_minus_assigned() {
        // 1024 MB total, the heartbeat says 1024 free; two 512 MB apps fill it.
        let mut n = node("a", 10, &["wasm"], 8.0, 1024);
        let mut big = app("big", RuntimeKind::Wasm, 1);
        big.resources.memory_mb = 512;
        let mut big2 = big.clone();
        big2.name = name("big2");
        let mut big3 = big.clone();
        big3.name = name("big3");
        let plan = run(
            &[big.clone(), big2, big3.clone()],
            &BTreeMap::new(),
            std::slice::from_ref(&n),
            NOW,
        );
        assert_eq!(where_is(&plan, "big", 0), Some("a"));
        assert_eq!(where_is(&plan, "big2", 0), Some("a"));
        assert_eq!(
            reason(&plan, "big3", 0),
            "not enough free memory on any online node with the `wasm` runtime: a replica needs \
             1 cpus and 512 MB; the best candidate, node-a (a), has 6 cpus and 0 MB free"
        );
        // The heartbeat reports less free than total-minus-assigned: the heartbeat wins.
        n.resources.as_mut().unwrap().memory_mb_free = 500;
        let plan = run(
            std::slice::from_ref(&big),
            &BTreeMap::new(),
            std::slice::from_ref(&n),
            NOW,
        );
        assert!(reason(&plan, "big", 0).contains("has 8 cpus and 500 MB free"));
        // Replicas kept from before count as assigned.
        let mut current = BTreeMap::new();
        current.insert((name("big"), 0), at("a", 5));
        n.resources.as_mut().unwrap().memory_mb_free = 1024;
        let mut only = big3;
        only.resources.memory_mb = 600;
        let plan = run(&[big, only], &current, std::slice::from_ref(&n), NOW);
        assert_eq!(plan.placed[&(name("big"), 0)], at("a", 5));
        assert!(reason(&plan, "big3", 0).contains("has 7 cpus and 512 MB free"));
    }

    #[test]
    fn cpus_are_checked_with_fractions() {
        let n = node("a", 10, &["wasm"], 0.3, 4096);
        let mut small = app("s1", RuntimeKind::Wasm, 1);
        small.resources.cpus = 0.1;
        let mut medium = app("s2", RuntimeKind::Wasm, 1);
        medium.resources.cpus = 0.2;
        let mut more = app("s3", RuntimeKind::Wasm, 1);
        more.resources.cpus = 0.05;
        let plan = run(&[small, medium, more], &BTreeMap::new(), &[n], NOW);
        assert_eq!(where_is(&plan, "s1", 0), Some("a"));
        assert_eq!(where_is(&plan, "s2", 0), Some("a"), "0.1 + 0.2 fits in 0.3");
        assert_eq!(
            reason(&plan, "s3", 0),
            "not enough free cpus on any online node with the `wasm` runtime: a replica needs \
             0.05 cpus and 128 MB; the best candidate, node-a (a), has 0 cpus and 3840 MB free"
        );
    }

    #[test]
    fn the_best_candidate_is_the_closest_miss() {
        // b fits memory but not cpus; c fits neither. b is named even though c joined first.
        let nodes = [
            node("c", 5, &["wasm"], 0.5, 64),
            node("b", 10, &["wasm"], 0.5, 4096),
        ];
        let plan = run(
            &[app("web", RuntimeKind::Wasm, 1)],
            &BTreeMap::new(),
            &nodes,
            NOW,
        );
        let why = reason(&plan, "web", 0);
        assert!(why.starts_with("not enough free cpus "), "{why}");
        assert!(
            why.contains("node-b (b), has 0.5 cpus and 4096 MB free"),
            "{why}"
        );
        let nodes = [node("c", 5, &["wasm"], 0.5, 64)];
        let why = run(
            &[app("web", RuntimeKind::Wasm, 1)],
            &BTreeMap::new(),
            &nodes,
            NOW,
        )
        .pending[&(name("web"), 0)]
            .clone();
        assert!(why.starts_with("not enough free cpus and memory "), "{why}");
    }

    #[test]
    fn a_replica_stays_on_its_online_node() {
        // The node joined last and is now short of memory: the replica still stays.
        let mut n = wasm_node("late", 99);
        n.resources.as_mut().unwrap().memory_mb_free = 0;
        let nodes = [wasm_node("early", 1), n];
        let mut current = BTreeMap::new();
        current.insert((name("web"), 0), at("late", 7));
        let plan = run(&[app("web", RuntimeKind::Wasm, 1)], &current, &nodes, NOW);
        assert_eq!(plan.placed[&(name("web"), 0)], at("late", 7));
        assert!(plan.changes.is_empty());
    }

    #[test]
    fn a_node_that_drops_the_runtime_tag_loses_the_replica() {
        let nodes = [
            wasm_node("a", 1),
            node("d", 2, &["wasm", "docker"], 4.0, 4096),
        ];
        let mut current = BTreeMap::new();
        current.insert((name("box"), 0), at("a", 7));
        let plan = run(&[app("box", RuntimeKind::Docker, 1)], &current, &nodes, NOW);
        assert_eq!(where_is(&plan, "box", 0), Some("d"));
        assert_eq!(
            plan.changes[0],
            PlacementChange::Withdrawn {
                slot: (name("box"), 0),
                peer_id: "a".into(),
                why: WithdrawReason::RuntimeGone
            }
        );
    }

    #[test]
    fn an_offline_node_keeps_its_replica_for_the_grace_then_loses_it() {
        let mut a = wasm_node("a", 1);
        a.online = false;
        let nodes = [a.clone(), wasm_node("b", 2)];
        let apps = [app("web", RuntimeKind::Wasm, 1)];
        let mut current = BTreeMap::new();
        current.insert((name("web"), 0), at("a", 7));

        // First seen offline: kept, and the moment is recorded.
        let plan = run(&apps, &current, &nodes, NOW);
        let kept = &plan.placed[&(name("web"), 0)];
        assert_eq!((kept.peer_id.as_str(), kept.lost_at), ("a", Some(NOW)));
        assert!(plan.changes.is_empty());

        // Still within the grace.
        let later = Timestamp(NOW.0 + 30 * SEC - 1);
        let plan2 = run(&apps, &plan.placed, &nodes, later);
        assert_eq!(
            plan2.placed, plan.placed,
            "the recorded moment does not move"
        );

        // Grace over: re-placed on the next eligible node.
        let over = Timestamp(NOW.0 + 30 * SEC);
        let plan3 = run(&apps, &plan.placed, &nodes, over);
        assert_eq!(plan3.placed[&(name("web"), 0)], at("b", over.0));
        assert_eq!(
            plan3.changes[0],
            PlacementChange::Withdrawn {
                slot: (name("web"), 0),
                peer_id: "a".into(),
                why: WithdrawReason::NodeLost
            }
        );

        // Back online within the grace: kept, and no longer counted as lost.
        let mut back = plan.placed.clone();
        let plan4 = run(&apps, &back, &[wasm_node("a", 1), wasm_node("b", 2)], later);
        assert_eq!(plan4.placed[&(name("web"), 0)], at("a", 7));
        // ...so a later loss starts the grace again.
        back = plan4.placed;
        let plan5 = run(&apps, &back, &nodes, over);
        assert_eq!(plan5.placed[&(name("web"), 0)].lost_at, Some(over));
    }

    #[test]
    fn a_lost_replica_with_nowhere_to_go_is_pending() {
        let mut a = wasm_node("a", 1);
        a.online = false;
        let mut current = BTreeMap::new();
        current.insert(
            (name("web"), 0),
            Placed {
                lost_at: Some(Timestamp(0)),
                ..at("a", 7)
            },
        );
        let plan = run(&[app("web", RuntimeKind::Wasm, 1)], &current, &[a], NOW);
        assert!(plan.placed.is_empty());
        assert_eq!(reason(&plan, "web", 0), "no node is online");
    }

    #[test]
    fn zero_grace_replaces_at_once() {
        let mut a = wasm_node("a", 1);
        a.online = false;
        let mut current = BTreeMap::new();
        current.insert((name("web"), 0), at("a", 7));
        let plan = place(&PlacementInput {
            apps: &[app("web", RuntimeKind::Wasm, 1)],
            current: &current,
            nodes: &[a, wasm_node("b", 2)],
            now: NOW,
            node_lost_grace: Duration::ZERO,
        });
        assert_eq!(where_is(&plan, "web", 0), Some("b"));
    }

    #[test]
    fn a_removed_node_loses_its_replicas_at_once() {
        let mut current = BTreeMap::new();
        current.insert((name("web"), 0), at("gone", 7));
        let plan = run(
            &[app("web", RuntimeKind::Wasm, 1)],
            &current,
            &[wasm_node("b", 2)],
            NOW,
        );
        assert_eq!(where_is(&plan, "web", 0), Some("b"));
        assert!(matches!(
            plan.changes[0],
            PlacementChange::Withdrawn {
                why: WithdrawReason::NodeRemoved,
                ..
            }
        ));
    }

    #[test]
    fn scaling_down_withdraws_the_top_slots_and_deleting_withdraws_all() {
        let nodes = [wasm_node("a", 1), wasm_node("b", 2), wasm_node("c", 3)];
        let mut current = BTreeMap::new();
        current.insert((name("web"), 0), at("a", 7));
        current.insert((name("web"), 1), at("b", 7));
        current.insert((name("web"), 2), at("c", 7));
        current.insert((name("old"), 0), at("a", 7));
        let plan = run(&[app("web", RuntimeKind::Wasm, 1)], &current, &nodes, NOW);
        assert_eq!(plan.placed.len(), 1);
        assert_eq!(where_is(&plan, "web", 0), Some("a"));
        let whys: Vec<WithdrawReason> = plan
            .changes
            .iter()
            .map(|c| match c {
                PlacementChange::Withdrawn { why, .. } => *why,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            whys,
            vec![
                WithdrawReason::AppDeleted,
                WithdrawReason::ScaledDown,
                WithdrawReason::ScaledDown
            ]
        );
    }

    #[test]
    fn scaling_up_adds_slots_without_moving_the_others() {
        let nodes = [wasm_node("a", 1), wasm_node("b", 2), wasm_node("c", 3)];
        let mut current = BTreeMap::new();
        current.insert((name("web"), 0), at("b", 7));
        let plan = run(&[app("web", RuntimeKind::Wasm, 3)], &current, &nodes, NOW);
        assert_eq!(plan.placed[&(name("web"), 0)], at("b", 7));
        assert_eq!(where_is(&plan, "web", 1), Some("a"));
        assert_eq!(where_is(&plan, "web", 2), Some("c"));
    }

    #[test]
    fn two_replicas_of_one_app_on_one_node_are_split() {
        let nodes = [wasm_node("a", 1), wasm_node("b", 2)];
        let mut current = BTreeMap::new();
        current.insert((name("web"), 0), at("a", 7));
        current.insert((name("web"), 1), at("a", 7));
        let plan = run(&[app("web", RuntimeKind::Wasm, 2)], &current, &nodes, NOW);
        assert_eq!(where_is(&plan, "web", 0), Some("a"));
        assert_eq!(where_is(&plan, "web", 1), Some("b"));
        assert!(matches!(
            plan.changes[0],
            PlacementChange::Withdrawn {
                why: WithdrawReason::SharedNode,
                ..
            }
        ));
    }

    #[test]
    fn a_replica_kept_on_an_offline_node_still_blocks_that_node_only() {
        // web/0 is on the offline a (in grace); web/1 must not go to a, and goes to b.
        let mut a = wasm_node("a", 1);
        a.online = false;
        let nodes = [a, wasm_node("b", 2)];
        let mut current = BTreeMap::new();
        current.insert((name("web"), 0), at("a", 7));
        let plan = run(&[app("web", RuntimeKind::Wasm, 2)], &current, &nodes, NOW);
        assert_eq!(where_is(&plan, "web", 0), Some("a"));
        assert_eq!(where_is(&plan, "web", 1), Some("b"));
    }

    #[test]
    fn the_same_input_gives_the_same_plan() {
        let nodes = [wasm_node("a", 1), wasm_node("b", 2)];
        let apps = [
            app("x", RuntimeKind::Wasm, 2),
            app("y", RuntimeKind::Wasm, 1),
        ];
        let first = run(&apps, &BTreeMap::new(), &nodes, NOW);
        let again = run(&apps, &first.placed, &nodes, Timestamp(NOW.0 + SEC));
        assert_eq!(again.placed, first.placed, "a stable plan does not churn");
        assert!(again.changes.is_empty());
    }

    #[test]
    fn cpus_print_briefly() {
        assert_eq!(cpus(1.0), "1");
        assert_eq!(cpus(0.5), "0.5");
        assert_eq!(cpus(0.25), "0.25");
        assert_eq!(cpus(0.333), "0.33");
        assert_eq!(cpus(0.0), "0");
    }
}
