//! A microVM's way out, when its manifest asks for one (`[runtime] egress = true`): packets the
//! guest sends beyond the host side of its tap are forwarded and masqueraded behind the node's
//! own addresses, and the replies come back. Without it the tap stays isolated (see [`crate::tap`]).
//!
//! The rules are iptables rules (the `iptables` front end, nft or legacy, that Docker also uses),
//! one set per tap, each tagged with a comment naming the tap so they can be found again:
//! `nat POSTROUTING -s <guest>/32 ! -o <tap> -j MASQUERADE`, and in `filter FORWARD` (first, so a
//! Docker host's DROP policy does not apply) `-i <tap> -j ACCEPT` and
//! `-o <tap> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`. They are removed when the
//! [`Egress`] is dropped; a crashed runner's leftovers are removed before a tap of the same name
//! gets new ones. The node must forward IPv4 at all (`net.ipv4.ip_forward = 1`, as Docker sets
//! it): that global switch is the operator's, never flipped here.

use crate::error::{Result, VmError};
use crate::spec::TapConfig;
use std::process::Command;

/// The iptables rules of one tap; removed on drop.
#[derive(Debug)]
pub struct Egress {
    rules: Vec<Vec<String>>,
}

/// `table`, `chain` and the rule's match and target, tagged with the tap's comment.
fn rules_for(cfg: &TapConfig) -> Vec<Vec<String>> {
    let tag = comment(&cfg.name);
    let guest = format!("{}/32", cfg.guest_addr);
    let tap = cfg.name.clone();
    let rule = |parts: &[&str]| -> Vec<String> {
        let mut r: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        r.extend(["-m", "comment", "--comment", &tag].map(String::from));
        r
    };
    vec![
        rule(&[
            "-t",
            "nat",
            "POSTROUTING",
            "-s",
            &guest,
            "!",
            "-o",
            &tap,
            "-j",
            "MASQUERADE",
        ]),
        rule(&["-t", "filter", "FORWARD", "-i", &tap, "-j", "ACCEPT"]),
        rule(&[
            "-t",
            "filter",
            "FORWARD",
            "-o",
            &tap,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ]),
    ]
}

fn comment(tap: &str) -> String {
    format!("tabbify-egress:{tap}")
}

/// `iptables <-t table> <op> <chain> <rest…>` from a rule of [`rules_for`].
fn iptables(op: &str, rule: &[String]) -> std::io::Result<std::process::Output> {
    // rule = ["-t", table, chain, rest…]
    let (table, chain, rest) = (&rule[1], &rule[2], &rule[3..]);
    let mut cmd = Command::new("iptables");
    cmd.args(["-w", "-t", table, op, chain]);
    if op == "-I" {
        cmd.arg("1");
    }
    cmd.args(rest);
    cmd.output()
}

impl Egress {
    /// Opens the way out for the guest of `cfg` (whose tap exists and is up).
    pub fn open(cfg: &TapConfig) -> Result<Egress> {
        let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .map(|v| v.trim() == "1")
            .unwrap_or(false);
        if !forwarding {
            return Err(VmError::Spec(
                "this app asks for egress, but the node does not forward IPv4 (net.ipv4.ip_forward = 0); enable forwarding on the node or drop `egress`".into(),
            ));
        }
        remove_leftovers(&cfg.name);
        let path = format!("/proc/sys/net/ipv4/conf/{}/forwarding", cfg.name);
        std::fs::write(&path, "1")
            .map_err(|e| VmError::Spec(format!("writing 1 to {path}: {e}")))?;
        let mut egress = Egress { rules: Vec::new() };
        for rule in rules_for(cfg) {
            let op = if rule[2] == "FORWARD" { "-I" } else { "-A" };
            let out = iptables(op, &rule).map_err(|e| VmError::Tool {
                tool: "iptables".into(),
                status: "not run".into(),
                stderr: format!("{e} (egress needs the iptables command)"),
            })?;
            if !out.status.success() {
                return Err(VmError::Tool {
                    tool: "iptables".into(),
                    status: out.status.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            // Dropping `egress` on a later failure removes what was added so far.
            egress.rules.push(rule);
        }
        tracing::info!(tap = %cfg.name, guest = %cfg.guest_addr, "guest egress open");
        Ok(egress)
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        for rule in self.rules.iter().rev() {
            match iptables("-D", rule) {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    tracing::warn!(rule = ?rule, error = %String::from_utf8_lossy(&o.stderr).trim(), "could not remove an egress rule")
                }
                Err(e) => {
                    tracing::warn!(rule = ?rule, error = %e, "could not remove an egress rule")
                }
            }
        }
    }
}

/// Removes rules a crashed runner left for a tap of this name.
fn remove_leftovers(tap: &str) {
    let tag = comment(tap);
    for table in ["nat", "filter"] {
        let Ok(out) = Command::new("iptables")
            .args(["-w", "-t", table, "-S"])
            .output()
        else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if !line.contains(&tag) {
                continue;
            }
            // "-A CHAIN rest…" → "-D CHAIN rest…"; the comment is quoted in -S output.
            let Some(rest) = line.strip_prefix("-A ") else {
                continue;
            };
            let args: Vec<String> = rest
                .split_whitespace()
                .map(|w| w.trim_matches('"').to_string())
                .collect();
            let _ = Command::new("iptables")
                .args(["-w", "-t", table, "-D"])
                .args(&args)
                .output();
        }
    }
}

/// True when rules for `tap` are installed (for tests and diagnostics).
pub fn rules_present(tap: &str) -> bool {
    let tag = comment(tap);
    ["nat", "filter"].iter().any(|table| {
        Command::new("iptables")
            .args(["-w", "-t", table, "-S"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&tag))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_tagged_with_the_tap_and_cover_both_directions() {
        let cfg = TapConfig {
            egress: true,
            ..TapConfig::for_slot(7).unwrap()
        };
        let rules = rules_for(&cfg);
        assert_eq!(rules.len(), 3);
        let text: Vec<String> = rules.iter().map(|r| r.join(" ")).collect();
        assert!(
            text[0].starts_with(&format!(
                "-t nat POSTROUTING -s {}/32 ! -o tbfvm7 -j MASQUERADE",
                cfg.guest_addr
            )),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains("FORWARD -i tbfvm7 -j ACCEPT"),
            "{}",
            text[1]
        );
        assert!(
            text[2]
                .contains("FORWARD -o tbfvm7 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            "{}",
            text[2]
        );
        assert!(
            text.iter()
                .all(|t| t.ends_with("--comment tabbify-egress:tbfvm7"))
        );
    }
}
