//! What egress rules reach, judged as a set. NetworkPolicy rules are additive and each
//! `ipBlock` is a range minus its exceptions, so the addresses a list of rules reaches is
//! the union of those differences: checking one CIDR at a time misses ranges that split
//! the internet between them, and IPv4 written as IPv4-mapped IPv6. Every address is
//! placed in one 128-bit space (IPv4 as `::ffff:a.b.c.d`) and the union computed exactly.
//!
//! Refused: a rule without `to` (every address on its ports) unless it is DNS alone,
//! any reach to the node's link-local neighbours or a cloud's metadata and host-agent
//! endpoints ([`HOST_ENDPOINTS_V4`], [`HOST_ENDPOINTS_V6`], IPv4 ones in every notation),
//! all of the IPv6 internet (`2000::/3`),
//! and a peer selecting every pod of every namespace (every other tenant's sandbox and
//! the cluster's own services: lateral movement is a way out too). Warned: a peer
//! selecting labelled pods in every namespace. IPv4 egress to the internet with the
//! host endpoints excepted stays allowed.

use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{Rule, Violation};

/// What a sandbox must never reach: the node's link-local neighbours and every cloud's
/// metadata and host-agent endpoints, which hand out the node's or the pod's
/// credentials. `(first, last, what)` in the 128-bit space; IPv4 entries are also
/// reachable as NAT64 (`64:ff9b::/96`) and IPv4-compatible (`::/96`) addresses, which
/// [`host_endpoints`] adds, and IPv4-mapped ones are the same addresses here.
const HOST_ENDPOINTS_V4: [(Ipv4Addr, u8, &str); 3] = [
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "the link-local range 169.254.0.0/16 (the cloud metadata service 169.254.169.254, the ECS and EKS pod-identity agents 169.254.170.2 and 169.254.170.23)",
    ),
    (
        Ipv4Addr::new(168, 63, 129, 16),
        32,
        "Azure's host endpoint 168.63.129.16 (WireServer)",
    ),
    (
        Ipv4Addr::new(100, 100, 100, 200),
        32,
        "Alibaba Cloud's metadata service 100.100.100.200",
    ),
];

const HOST_ENDPOINTS_V6: [(Ipv6Addr, u8, &str); 4] = [
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        "the IPv6 link-local range fe80::/10",
    ),
    (
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
        128,
        "AWS's IPv6 metadata service fd00:ec2::254",
    ),
    (
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
        128,
        "the EKS pod-identity agent fd00:ec2::23",
    ),
    (
        Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254),
        128,
        "GCE's IPv6 metadata service fd20:ce::254",
    ),
];

/// How to say what to except, in the refusal.
const HOST_ENDPOINTS_EXCEPT: &str = "169.254.0.0/16, 168.63.129.16/32, 100.100.100.200/32, fe80::/10, fd00:ec2::/32, fd20:ce::/32, and their NAT64 forms under 64:ff9b::/96";

/// Every host endpoint as an inclusive range, in every notation that reaches it, with
/// what it is and how it was written.
fn host_endpoints() -> Vec<(u128, u128, String)> {
    let mut out = Vec::new();
    for (v4, len, what) in HOST_ENDPOINTS_V4 {
        let bits = u128::from(u32::from(v4));
        let len = 96 + u32::from(len);
        let (l, h) = prefix_range(mapped(v4), len);
        out.push((l, h, what.to_string()));
        for (prefix, how) in [
            (NAT64_PREFIX, "NAT64 64:ff9b::/96"),
            (0, "IPv4-compatible ::/96"),
        ] {
            let (l, h) = prefix_range(prefix | bits, len);
            out.push((l, h, format!("{what}, written as {how}")));
        }
    }
    for (v6, len, what) in HOST_ENDPOINTS_V6 {
        let (l, h) = prefix_range(u128::from(v6), u32::from(len));
        out.push((l, h, what.to_string()));
    }
    out
}

/// The well-known NAT64 prefix `64:ff9b::/96`: a NAT64 gateway turns these addresses
/// into the IPv4 address of their last 32 bits.
const NAT64_PREFIX: u128 = 0x0064_ff9b_u128 << 96;

/// `2000::/3`: every global unicast IPv6 address.
const IPV6_INTERNET: (u128, u128) = (0x2000 << 112, (0x4000 << 112) - 1);

fn mapped(v4: Ipv4Addr) -> u128 {
    (0xffff_u128 << 32) | u128::from(u32::from(v4))
}

/// A CIDR as an inclusive range of the 128-bit space; `None` when it is not one.
pub fn range(cidr: &str) -> Option<(u128, u128)> {
    let (addr, len) = cidr.trim().split_once('/')?;
    let len: u32 = len.parse().ok()?;
    let (base, prefix) = if let Ok(v4) = addr.parse::<Ipv4Addr>() {
        if len > 32 {
            return None;
        }
        (mapped(v4), 96 + len)
    } else {
        let v6: Ipv6Addr = addr.parse().ok()?;
        if len > 128 {
            return None;
        }
        (u128::from(v6), len)
    };
    Some(prefix_range(base, prefix))
}

/// The inclusive range of the `len`-bit prefix of `base` (`len` at most 128).
fn prefix_range(base: u128, len: u32) -> (u128, u128) {
    let host_bits = 128 - len.min(128);
    let mask = if host_bits == 128 {
        0
    } else {
        u128::MAX << host_bits
    };
    let start = base & mask;
    (start, start | !mask)
}

/// What an analysis finds: the violations that refuse, and the warnings that do not.
pub type Findings = (Vec<Violation>, Vec<String>);

/// The most CIDRs (ipBlock ranges and their exceptions together) one object's egress
/// may name before it is refused unjudged: far above any real policy, low enough that
/// the worst input is judged in a few milliseconds.
pub const MAX_CIDRS: usize = 10_000;

/// A set of addresses: sorted, disjoint, non-adjacent inclusive ranges. Built in bulk
/// (one sort, one merge) and subtracted in one sweep, so judging n CIDRs costs
/// O(n log n) however they are arranged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Set(Vec<(u128, u128)>);

impl Set {
    /// The union of any ranges.
    pub fn of(mut ranges: Vec<(u128, u128)>) -> Set {
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (l, h) in ranges {
            match merged.last_mut() {
                Some((_, last)) if l <= last.saturating_add(1) => *last = (*last).max(h),
                _ => merged.push((l, h)),
            }
        }
        Set(merged)
    }

    /// The addresses of `self` not in `other`: one sweep over both sorted lists.
    pub fn minus(&self, other: &Set) -> Set {
        let mut out = Vec::with_capacity(self.0.len() + other.0.len());
        let mut cut = other.0.iter().peekable();
        for &(l, h) in &self.0 {
            let mut lo = l;
            // Exceptions wholly below this range can never matter again.
            while cut.next_if(|&&(_, ch)| ch < lo).is_some() {}
            let mut rest = cut.clone();
            let mut left = true;
            while let Some(&&(cl, ch)) = rest.peek() {
                if cl > h {
                    break;
                }
                if cl > lo {
                    out.push((lo, cl - 1));
                }
                if ch >= h {
                    left = false;
                    break;
                }
                lo = ch + 1;
                rest.next();
            }
            if left {
                out.push((lo, h));
            }
        }
        Set(out)
    }

    /// How many addresses of `self` are in `other` (saturating at `u128::MAX`).
    pub fn size_within(&self, other: &Set) -> u128 {
        let size = |s: &Set| {
            s.0.iter().fold(0u128, |n, &(l, h)| {
                n.saturating_add((h - l).saturating_add(1))
            })
        };
        size(self).saturating_sub(size(&self.minus(other)))
    }

    pub fn contains(&self, addr: u128) -> bool {
        // The first range ending at or after addr is the only one that can hold it.
        let i = self.0.partition_point(|&(_, h)| h < addr);
        self.0.get(i).is_some_and(|&(l, _)| l <= addr)
    }

    /// Whether any address of `lo..=hi` is in the set.
    pub fn meets(&self, (lo, hi): (u128, u128)) -> bool {
        let i = self.0.partition_point(|&(_, h)| h < lo);
        self.0.get(i).is_some_and(|&(l, _)| l <= hi)
    }

    /// Whether every address of `lo..=hi` is in the set.
    pub fn covers(&self, (lo, hi): (u128, u128)) -> bool {
        let i = self.0.partition_point(|&(_, h)| h < lo);
        self.0.get(i).is_some_and(|&(l, h)| l <= lo && hi <= h)
    }
}

/// The addresses one ipBlock reaches: its CIDR minus its exceptions. `None` when a CIDR
/// does not parse (the apiserver refuses those; judging on would guess).
pub fn block(b: &IPBlock) -> Option<Set> {
    let whole = Set::of(vec![range(&b.cidr)?]);
    let except = b
        .except
        .iter()
        .flatten()
        .map(|e| range(e))
        .collect::<Option<Vec<_>>>()?;
    Some(whole.minus(&Set::of(except)))
}

/// What a list of rules' peers reach: the union of their ipBlocks, where each part came
/// from (for messages), and the peers that are refused on their own.
struct Reach {
    union: Set,
    origins: Vec<(String, Set)>,
}

/// Walks every peer of every rule (`peers[i]`, `None`: the rule has none), judging the
/// selector peers (`selector_peer`) and gathering the ipBlocks into one set. `side` is
/// `to` or `from`, for the field paths.
fn reach<'a>(
    peers: impl Iterator<Item = &'a [NetworkPolicyPeer]>,
    prefix: &str,
    side: &str,
    rule: Rule,
    violations: &mut Vec<Violation>,
    warnings: &mut Vec<String>,
) -> Reach {
    let mut reached = Vec::new();
    let mut origins: Vec<(String, Set)> = Vec::new();
    for (i, peers) in peers.enumerate() {
        for (j, peer) in peers.iter().enumerate() {
            let field = format!("{prefix}[{i}].{side}[{j}]");
            if let Some(b) = peer.ip_block.as_ref() {
                match block(b) {
                    Some(set) => {
                        reached.extend_from_slice(&set.0);
                        origins.push((field.clone(), set));
                    }
                    None => violations.push(Violation::new(
                        rule,
                        format!("{field}.ipBlock"),
                        format!("{:?} is not a CIDR; it cannot be judged", b.cidr),
                    )),
                }
            }
            selector_peer(peer, &field, rule, side, violations, warnings);
        }
    }
    Reach {
        union: Set::of(reached),
        origins,
    }
}

/// The refusal of a list naming more CIDRs than are judged (`None`: few enough).
fn too_many(named: usize, prefix: &str, rule: Rule) -> Option<Violation> {
    (named > MAX_CIDRS).then(|| {
        Violation::new(
            rule,
            prefix.to_string(),
            format!(
                "names {named} CIDRs (ipBlocks and their exceptions); at most {MAX_CIDRS} are judged, so it is refused: merge them into fewer, wider ranges"
            ),
        )
    })
}

/// How many CIDRs some peers name (ipBlocks and exceptions).
fn cidr_count<'a>(peers: impl Iterator<Item = &'a [NetworkPolicyPeer]>) -> usize {
    peers
        .flatten()
        .filter_map(|p| p.ip_block.as_ref())
        .map(|b| 1 + b.except.as_ref().map_or(0, Vec::len))
        .sum()
}

/// Every rule that lets egress reach what sandbox pods must never reach. `prefix` is
/// the path of the rule list (`spec.networkPolicy.egress`).
pub fn rules(rules: &[NetworkPolicyEgressRule], prefix: &str) -> Findings {
    let mut violations = Vec::new();
    let mut warnings = Vec::new();
    let peers = || rules.iter().map(|r| r.to.as_deref().unwrap_or_default());
    if let Some(v) = too_many(cidr_count(peers()), prefix, Rule::EgressReach) {
        return (vec![v], warnings);
    }
    for (i, rule) in rules.iter().enumerate() {
        // No `to`: every address on the rule's ports, the host endpoints and the
        // internet included. DNS alone is the tolerated case (the article's rule).
        if rule.to.as_ref().is_none_or(|to| to.is_empty()) && !dns_ports_only(rule) {
            violations.push(Violation::new(
                Rule::EgressReach,
                format!("{prefix}[{i}]"),
                "has no `to`, so it reaches every address on its ports (the cloud metadata services and the whole internet included); name its destinations",
            ));
        }
    }
    let Reach { union, origins } = reach(
        peers(),
        prefix,
        "to",
        Rule::EgressReach,
        &mut violations,
        &mut warnings,
    );
    for (lo, hi, what) in host_endpoints() {
        if union.meets((lo, hi)) {
            let field = origins
                .iter()
                .find(|(_, s)| s.meets((lo, hi)))
                .map_or_else(|| prefix.to_string(), |(f, _)| format!("{f}.ipBlock"));
            violations.push(Violation::new(
                Rule::EgressReach,
                field,
                format!(
                    "reaches {what}, where the node's and the pod's credentials are handed out; except it ({HOST_ENDPOINTS_EXCEPT}) or name narrower ranges"
                ),
            ));
        }
    }
    if union.covers(IPV6_INTERNET) {
        violations.push(Violation::new(
            Rule::EgressReach,
            prefix.to_string(),
            "together these ipBlocks reach every IPv6 address of the internet (2000::/3); name the ranges the sandbox needs",
        ));
    }
    (violations, warnings)
}

/// IPv4 ranges that are not the internet: this network, private, shared (carrier NAT),
/// loopback, link-local, and multicast with the reserved space above it.
const IPV4_NOT_INTERNET: [&str; 8] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/3",
];

/// The most public sources an ingress rule list may let in: a /8 of IPv4, a /32 of
/// IPv6 (an ISP's allocation). Beyond that anyone can find an address inside, so an
/// outside relay could connect back, and it is the internet at large however it is
/// split or excepted.
const MAX_PUBLIC_V4_SOURCES: u128 = 1 << 24;
const MAX_PUBLIC_V6_SOURCES: u128 = 1 << 96;

/// Every public IPv4 address.
fn ipv4_internet() -> Set {
    let all = Set::of(vec![mapped_range(Ipv4Addr::UNSPECIFIED, 0)]);
    let not = IPV4_NOT_INTERNET.iter().filter_map(|c| range(c)).collect();
    all.minus(&Set::of(not))
}

fn mapped_range(v4: Ipv4Addr, len: u32) -> (u128, u128) {
    prefix_range(mapped(v4), 96 + len)
}

/// Every ingress rule that lets anyone connect to a sandbox, judged as a set like
/// egress: a rule without `from` (every source), ipBlocks that together take in more
/// of the public internet than [`MAX_PUBLIC_V4_SOURCES`] or [`MAX_PUBLIC_V6_SOURCES`]
/// however they are split (an outside relay would get a two-way channel into the
/// sandbox), and a peer selecting every pod of every namespace. Narrow sources, inside
/// or outside the cluster, stay allowed.
pub fn ingress_rules(rules: &[NetworkPolicyIngressRule], prefix: &str) -> Findings {
    let mut violations = Vec::new();
    let mut warnings = Vec::new();
    let peers = || rules.iter().map(|r| r.from.as_deref().unwrap_or_default());
    if let Some(v) = too_many(cidr_count(peers()), prefix, Rule::IngressReach) {
        return (vec![v], warnings);
    }
    for (i, rule) in rules.iter().enumerate() {
        if rule.from.as_ref().is_none_or(|from| from.is_empty()) {
            violations.push(Violation::new(
                Rule::IngressReach,
                format!("{prefix}[{i}]"),
                "has no `from`, so every address (the whole internet included) may connect to the sandbox on its ports; name the sources",
            ));
        }
    }
    let Reach { union, .. } = reach(
        peers(),
        prefix,
        "from",
        Rule::IngressReach,
        &mut violations,
        &mut warnings,
    );
    let public_v4 = union.size_within(&ipv4_internet());
    if public_v4 > MAX_PUBLIC_V4_SOURCES {
        violations.push(Violation::new(
            Rule::IngressReach,
            prefix.to_string(),
            format!(
                "together these ipBlocks let {public_v4} public IPv4 addresses connect to the sandbox (more than a /8's {MAX_PUBLIC_V4_SOURCES}): that is the internet at large, a two-way channel for anything outside; name the sources it needs"
            ),
        ));
    }
    let public_v6 = union.size_within(&Set::of(vec![IPV6_INTERNET]));
    if public_v6 > MAX_PUBLIC_V6_SOURCES {
        violations.push(Violation::new(
            Rule::IngressReach,
            prefix.to_string(),
            "together these ipBlocks let more of the IPv6 internet (2000::/3) connect to the sandbox than a /32: that is the internet at large; name the sources it needs",
        ));
    }
    (violations, warnings)
}

/// Ports that are all DNS (53, no range): the one rule without `to` that is tolerated.
fn dns_ports_only(rule: &NetworkPolicyEgressRule) -> bool {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let ports = rule.ports.as_deref().unwrap_or_default();
    !ports.is_empty()
        && ports.iter().all(|p| {
            p.end_port.is_none()
                && (matches!(&p.port, Some(IntOrString::Int(53)))
                    || matches!(&p.port, Some(IntOrString::String(s)) if s == "53"))
        })
}

/// Every namespace carries this label (the apiserver sets it to the namespace's name).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Whether a selector selects everything (or everything but a few it names), however
/// it is spelled: `{}`, `Exists` on a label every object has (`always`), and
/// requirements that only exclude (`NotIn`, `DoesNotExist`). Only a positive requirement
/// (`matchLabels`, `In`, `Exists` on another label) narrows it to objects somebody
/// chose; an operator the apiserver does not know is taken as narrowing (it refuses it).
pub fn selects_all(selector: &LabelSelector, always: &[&str]) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|e| match e.operator.as_str() {
                "NotIn" | "DoesNotExist" => true,
                "Exists" => always.contains(&e.key.as_str()),
                _ => false,
            })
}

/// Peers that select pods by namespace: every namespace and every pod is the whole
/// cluster (denied: lateral movement is a way out too); every namespace with a pod
/// selector reaches those pods of every tenant (warned).
fn selector_peer(
    peer: &NetworkPolicyPeer,
    field: &str,
    rule: Rule,
    side: &str,
    violations: &mut Vec<Violation>,
    warnings: &mut Vec<String>,
) {
    let Some(ns) = peer.namespace_selector.as_ref() else {
        return;
    };
    if !selects_all(ns, &[NAMESPACE_NAME_LABEL]) {
        return;
    }
    let every_pod = peer
        .pod_selector
        .as_ref()
        .is_none_or(|p| selects_all(p, &[]));
    let (reaches, reach) = if side == "to" {
        (
            "selects every pod of every namespace (other tenants' sandboxes and the cluster's own services)",
            "reaches",
        )
    } else {
        (
            "lets every pod of every namespace (other tenants' sandboxes included) connect",
            "lets in",
        )
    };
    if every_pod {
        violations.push(Violation::new(
            rule,
            format!("{field}.namespaceSelector"),
            format!("{reaches}; select the namespaces the sandbox needs"),
        ));
    } else {
        warnings.push(format!(
            "{field}: namespaceSelector {{}} {reach} the selected pods in every namespace, other tenants' included"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(v: serde_json::Value) -> Vec<NetworkPolicyEgressRule> {
        serde_json::from_value(v).unwrap()
    }

    fn reasons(v: serde_json::Value) -> Vec<String> {
        rules(&egress(v), "spec.egress")
            .0
            .into_iter()
            .map(|v| v.message)
            .collect()
    }

    fn set(ranges: &[(u128, u128)]) -> Set {
        Set::of(ranges.to_vec())
    }

    #[test]
    fn sets_merge_and_subtract_exactly() {
        assert_eq!(
            set(&[(5, 9), (0, 3), (4, 4), (20, 30)]),
            set(&[(0, 9), (20, 30)])
        );
        let whole = set(&[(0, 100)]);
        // Cuts at the edges, inside, overlapping each other, and beyond the range.
        let cut = set(&[(0, 0), (10, 20), (15, 25), (50, 50), (100, 200)]);
        assert_eq!(whole.minus(&cut), Set(vec![(1, 9), (26, 49), (51, 99)]));
        assert_eq!(whole.minus(&set(&[(0, 100)])), Set(vec![]));
        assert_eq!(whole.minus(&Set::default()), whole);
        // One cut spanning several ranges.
        let parts = set(&[(0, 5), (10, 15), (20, 25)]);
        assert_eq!(parts.minus(&set(&[(3, 22)])), Set(vec![(0, 2), (23, 25)]));
        assert!(parts.contains(12) && !parts.contains(7) && !parts.contains(26));
        assert!(parts.covers((10, 15)) && !parts.covers((4, 11)));
        // The ends of the space.
        let all = set(&[(0, u128::MAX)]);
        assert_eq!(
            all.minus(&set(&[(0, 0), (u128::MAX, u128::MAX)])),
            Set(vec![(1, u128::MAX - 1)])
        );
    }

    #[test]
    fn thousands_of_cidrs_are_judged_and_too_many_refused() {
        // The input that took seconds when the set was re-sorted on every insert: one
        // block with thousands of exceptions, and thousands of small blocks.
        let except: Vec<String> = (0..9_000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let r = reasons(
            serde_json::json!([{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": except}}]}]),
        );
        assert!(r.is_empty(), "{r:?}");
        let blocks: Vec<serde_json::Value> = (0..9_000)
            .map(|i| serde_json::json!({"ipBlock": {"cidr": format!("11.{}.{}.0/24", i / 256, i % 256)}}))
            .collect();
        let r = reasons(serde_json::json!([{"to": blocks}]));
        assert!(r.is_empty(), "{r:?}");
        // Still exact: the metadata service among them is found.
        let mut blocks = blocks;
        blocks.push(serde_json::json!({"ipBlock": {"cidr": "169.254.169.254/32"}}));
        let r = reasons(serde_json::json!([{"to": blocks}]));
        assert!(r.iter().any(|m| m.contains("169.254.169.254")), "{r:?}");
        // Over the bound: refused with the count, not judged.
        let over: Vec<serde_json::Value> = (0..=MAX_CIDRS)
            .map(|i| serde_json::json!({"ipBlock": {"cidr": format!("12.{}.{}.0/24", i / 256 % 256, i % 256)}}))
            .collect();
        let r = reasons(serde_json::json!([{"to": over}]));
        assert!(r.len() == 1 && r[0].contains("at most 10000"), "{r:?}");
    }

    #[test]
    fn ranges_cover_what_they_say() {
        assert_eq!(
            range("0.0.0.0/0"),
            Some((0xffff_u128 << 32, (0xffff_u128 << 32) | 0xffff_ffff))
        );
        assert_eq!(range("::/0"), Some((0, u128::MAX)));
        assert_eq!(range("10.1.2.3/32").map(|(l, h)| h - l), Some(0));
        assert!(range("10.0.0.0/33").is_none() && range("nonsense").is_none());
    }

    /// The exceptions that keep every host endpoint out of IPv4 (and IPv4-mapped) reach.
    const V4_EXCEPT: [&str; 3] = ["169.254.0.0/16", "168.63.129.16/32", "100.100.100.200/32"];

    #[test]
    fn host_endpoints_are_unreachable_in_every_notation() {
        for (cidr, shown) in [
            ("169.254.0.0/16", "169.254.169.254"),
            ("169.254.170.23/32", "169.254.0.0/16"),
            ("169.254.1.1/32", "link-local"),
            ("0.0.0.0/0", "169.254.169.254"),
            ("::ffff:0:0/96", "169.254.169.254"),
            ("::ffff:169.254.169.254/128", "169.254.169.254"),
            ("168.63.129.16/32", "Azure"),
            ("168.63.0.0/16", "Azure"),
            ("100.64.0.0/10", "Alibaba"),
            ("::ffff:100.100.100.200/128", "Alibaba"),
            ("64:ff9b::a9fe:a9fe/128", "NAT64"),
            ("64:ff9b::/96", "NAT64"),
            ("::a9fe:a9fe/128", "IPv4-compatible"),
            ("::/96", "IPv4-compatible"),
            ("fe80::1/128", "fe80::/10"),
            ("fd00::/8", "fd00:ec2::254"),
            ("fd00:ec2::23/128", "pod-identity"),
            ("fd20:ce::/32", "fd20:ce::254"),
            ("::/0", "fe80::/10"),
        ] {
            let r = reasons(serde_json::json!([{"to": [{"ipBlock": {"cidr": cidr}}]}]));
            assert!(r.iter().any(|m| m.contains(shown)), "{cidr}: {r:?}");
        }
        // Excepted, in the same notation or the other: allowed.
        let mapped: Vec<String> = V4_EXCEPT
            .iter()
            .filter_map(|c| {
                let (a, l) = c.split_once('/')?;
                Some(format!("::ffff:{a}/{}", 96 + l.parse::<u32>().ok()?))
            })
            .collect();
        let nat64 = [
            "64:ff9b::a9fe:0/112",
            "64:ff9b::a83f:8110/128",
            "64:ff9b::6464:64c8/128",
        ];
        for (cidr, except) in [
            ("0.0.0.0/0", V4_EXCEPT.map(String::from).to_vec()),
            ("::ffff:0:0/96", V4_EXCEPT.map(String::from).to_vec()),
            ("0.0.0.0/0", mapped),
            ("64:ff9b::/96", nat64.map(String::from).to_vec()),
            ("fd00:ec2::/32", vec!["fd00:ec2::/112".to_string()]),
        ] {
            let r = reasons(
                serde_json::json!([{"to": [{"ipBlock": {"cidr": cidr, "except": except}}]}]),
            );
            assert!(r.is_empty(), "{cidr} except {except:?}: {r:?}");
        }
        // Only the link-local range excepted: the other clouds' endpoints still reached.
        let r = reasons(
            serde_json::json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]}]),
        );
        assert!(
            r.len() == 2
                && r.iter().any(|m| m.contains("Azure"))
                && r.iter().any(|m| m.contains("Alibaba")),
            "{r:?}"
        );
        // Narrow ranges beside the endpoints stay allowed.
        for cidr in [
            "169.253.255.255/32",
            "169.255.0.0/16",
            "168.63.129.17/32",
            "100.100.100.201/32",
            "fec0::/10",
            "fd00:ec2::24/128",
        ] {
            let r = reasons(serde_json::json!([{"to": [{"ipBlock": {"cidr": cidr}}]}]));
            assert!(r.is_empty(), "{cidr}: {r:?}");
        }
        // An exception in one peer does not cover another peer's reach.
        let r = reasons(serde_json::json!([{"to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": V4_EXCEPT}},
            {"ipBlock": {"cidr": "169.254.169.0/24"}}
        ]}]));
        assert!(r.iter().any(|m| m.contains("169.254.169.254")), "{r:?}");
    }

    #[test]
    fn the_ipv6_internet_split_between_rules_is_still_the_internet() {
        let r = reasons(serde_json::json!([
            {"to": [{"ipBlock": {"cidr": "2000::/4"}}], "ports": [{"port": 443}]},
            {"to": [{"ipBlock": {"cidr": "3000::/4"}}]}
        ]));
        assert!(r.iter().any(|m| m.contains("every IPv6")), "{r:?}");
        let narrow = reasons(serde_json::json!([{"to": [{"ipBlock": {"cidr": "2001:db8::/32"}}]}]));
        assert!(narrow.is_empty(), "{narrow:?}");
        // IPv4 split in halves with the host endpoints excepted stays allowed.
        let halves = reasons(serde_json::json!([{"to": [
            {"ipBlock": {"cidr": "0.0.0.0/1", "except": ["100.100.100.200/32"]}},
            {"ipBlock": {"cidr": "128.0.0.0/1", "except": ["169.254.0.0/16", "168.63.129.16/32"]}}
        ]}]));
        assert!(halves.is_empty(), "{halves:?}");
    }

    #[test]
    fn a_rule_without_to_reaches_everything_except_dns_alone() {
        for egress in [
            serde_json::json!([{"ports": [{"port": 443}]}]),
            serde_json::json!([{}]),
            serde_json::json!([{"ports": [{"port": 53, "endPort": 80}]}]),
            serde_json::json!([{"ports": [{"port": 53}, {"port": 80}]}]),
        ] {
            let r = reasons(egress.clone());
            assert!(r.iter().any(|m| m.contains("no `to`")), "{egress}: {r:?}");
        }
        // The article's rule: DNS with no `to` (the policies warn about it).
        let r = reasons(
            serde_json::json!([{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]),
        );
        assert!(r.is_empty(), "{r:?}");
    }

    fn ingress_reasons(v: serde_json::Value) -> Vec<String> {
        let rules: Vec<NetworkPolicyIngressRule> = serde_json::from_value(v).unwrap();
        ingress_rules(&rules, "spec.ingress")
            .0
            .into_iter()
            .map(|v| v.message)
            .collect()
    }

    #[test]
    fn ingress_from_everywhere_is_refused_however_it_is_split() {
        for (ingress, shown) in [
            (serde_json::json!([{}]), "no `from`"),
            (
                serde_json::json!([{"ports": [{"port": 8888}]}]),
                "no `from`",
            ),
            (
                serde_json::json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
                "public IPv4",
            ),
            (
                serde_json::json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/1"}}]}]),
                "public IPv4",
            ),
            // Every address but one is the internet too.
            (
                serde_json::json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["8.8.8.8/32"]}}]}]),
                "public IPv4",
            ),
            (
                serde_json::json!([
                    {"from": [{"ipBlock": {"cidr": "0.0.0.0/1"}}]},
                    {"from": [{"ipBlock": {"cidr": "128.0.0.0/1"}}], "ports": [{"port": 22}]}
                ]),
                "public IPv4",
            ),
            // The private ranges excepted: still every public address.
            (
                serde_json::json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}]}]),
                "public IPv4",
            ),
            (
                serde_json::json!([{"from": [{"ipBlock": {"cidr": "::ffff:0:0/96"}}]}]),
                "public IPv4",
            ),
            (
                serde_json::json!([{"from": [{"ipBlock": {"cidr": "2000::/4"}}, {"ipBlock": {"cidr": "3000::/4"}}]}]),
                "IPv6 internet",
            ),
            (
                serde_json::json!([{"from": [{"namespaceSelector": {}}]}]),
                "every pod of every namespace",
            ),
        ] {
            let r = ingress_reasons(ingress.clone());
            assert!(r.iter().any(|m| m.contains(shown)), "{ingress}: {r:?}");
        }
        // Narrow sources pass: a range outside the cluster, one namespace, private space.
        for ingress in [
            serde_json::json!([{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]),
            serde_json::json!([{"from": [{"ipBlock": {"cidr": "11.0.0.0/8"}}]}]),
            serde_json::json!([{"from": [{"ipBlock": {"cidr": "2001:db8::/32"}}]}]),
            serde_json::json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/3", "160.0.0.0/4", "176.0.0.0/5", "184.0.0.0/6", "188.0.0.0/7", "190.0.0.0/8"]}}]}]),
            serde_json::json!([{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}, {"ipBlock": {"cidr": "192.168.0.0/16"}}]}]),
            serde_json::json!([{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]),
            serde_json::json!([]),
        ] {
            let r = ingress_reasons(ingress.clone());
            assert!(r.is_empty(), "{ingress}: {r:?}");
        }
    }

    #[test]
    fn every_pod_of_every_namespace_is_refused_and_labelled_pods_warned() {
        let (v, w) = rules(
            &egress(serde_json::json!([{"to": [{"namespaceSelector": {}}]}])),
            "spec.egress",
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(w.is_empty());
        let (v, w) = rules(
            &egress(
                serde_json::json!([{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "proxy"}}}]}]),
            ),
            "spec.egress",
        );
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(w.len(), 1);
        let (v, w) = rules(
            &egress(
                serde_json::json!([{"to": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]),
            ),
            "spec.egress",
        );
        assert!(v.is_empty() && w.is_empty());
    }

    #[test]
    fn every_namespace_however_it_is_spelled() {
        let expr = |key: &str, op: &str, values: &[&str]| serde_json::json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]});
        let no_values = |key: &str, op: &str| serde_json::json!({"matchExpressions": [{"key": key, "operator": op}]});
        for every in [
            serde_json::json!({}),
            serde_json::json!({"matchLabels": {}}),
            no_values("kubernetes.io/metadata.name", "Exists"),
            expr("kubernetes.io/metadata.name", "NotIn", &["kube-system"]),
            no_values("no-namespace-has-this", "DoesNotExist"),
            expr("team", "NotIn", &["nobody"]),
        ] {
            let (v, _) = rules(
                &egress(serde_json::json!([{"to": [{"namespaceSelector": every.clone()}]}])),
                "spec.egress",
            );
            assert_eq!(v.len(), 1, "{every}: {v:?}");
            // With a pod selector that only excludes: still every pod.
            let (v, _) = rules(
                &egress(
                    serde_json::json!([{"to": [{"namespaceSelector": every.clone(),
                    "podSelector": expr("app", "NotIn", &["db"])}]}]),
                ),
                "spec.egress",
            );
            assert_eq!(v.len(), 1, "{every} with an excluding pod selector: {v:?}");
        }
        // Narrowed by a positive requirement: the namespaces somebody chose.
        for chosen in [
            expr("kubernetes.io/metadata.name", "In", &["tools"]),
            no_values("team", "Exists"),
            serde_json::json!({"matchLabels": {"team": "a"}}),
        ] {
            let (v, w) = rules(
                &egress(serde_json::json!([{"to": [{"namespaceSelector": chosen.clone()}]}])),
                "spec.egress",
            );
            assert!(v.is_empty() && w.is_empty(), "{chosen}: {v:?} {w:?}");
        }
    }
}
