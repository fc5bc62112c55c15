//! A tap whose config asks for egress, in a network namespace of the test's own where the test
//! sets the node-wide forwarding switch either way: refused with the reason while the node does
//! not forward IPv4 (and no tap is left), opened with its iptables rules when it does, and the
//! rules go with the tap. (A guest actually getting out is `supervisor/tests/apps_vm.rs`.)
#![allow(clippy::unwrap_used)] // test: a panic is the failure report

use tabbify_testkit::netns::Lan;
use tabbify_testkit::{Capability, require};
use tabbify_vm::tap::interface_exists;
use tabbify_vm::{Tap, TapConfig, TapMode, VmError};

fn set_forwarding(on: bool) {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", if on { "1" } else { "0" }).unwrap();
}

#[test]
fn egress_is_refused_without_forwarding_and_its_rules_go_with_the_tap() {
    require!(Capability::Root);
    require!(Capability::NetNs);
    let lan = Lan::new("vmegress").unwrap();
    let host = lan.add_host("h").unwrap();
    host.in_namespace(|| {
        let cfg = TapConfig {
            egress: true,
            ..TapConfig::for_slot(13).unwrap()
        };

        set_forwarding(false);
        let e = Tap::create(&cfg, TapMode::Descriptor).unwrap_err();
        assert!(matches!(e, VmError::Spec(_)), "{e}");
        assert!(e.to_string().contains("net.ipv4.ip_forward = 0"), "{e}");
        assert!(!interface_exists(&cfg.name), "the refused tap is removed");
        assert!(!tabbify_vm::egress::rules_present(&cfg.name));

        set_forwarding(true);
        let tap = Tap::create(&cfg, TapMode::Descriptor).unwrap();
        assert!(tabbify_vm::egress::rules_present(&cfg.name));
        drop(tap);
        assert!(!tabbify_vm::egress::rules_present(&cfg.name));
        assert!(!interface_exists(&cfg.name));
    })
    .unwrap();
}
