//! A classroom box behind a school uplink, built inside the test's private network
//! namespace: the box (the agent) gets a network namespace of its own, joined to the
//! test's by a veth pair, and the box's side of the pair can be rate-limited with
//! `tc tbf` (this kernel has no `netem`). Janus, mosquitto and the subscribers stay in
//! the test's namespace and listen on the host side's address.
//!
//! ```text
//!  test namespace                               box namespace
//!  Janus, mosquitto, subscribers ── ubNh ═══ ubNb ── roomcast   (egress: tbf)
//!                                10.78.N.1    10.78.N.2
//! ```
//!
//! Within one namespace traffic between two local addresses goes through `lo`, so the
//! box must be in its own namespace for the shaping to mean anything. Everything is
//! removed when the value is dropped (the box namespace ends with its holder process,
//! and its veth end with it).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct BoxNet {
    holder: Child,
    pub host_if: String,
    pub box_if: String,
    /// The test namespace's end: where services listen for the box.
    pub host_addr: String,
    pub box_addr: String,
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl BoxNet {
    /// A new box namespace and its link. Needs the test's private namespace (root in it).
    pub fn create() -> Self {
        super::require_netns();
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 200 + (std::process::id() % 50);
        let n = n % 250;
        let (host_if, box_if) = (format!("ub{n}h"), format!("ub{n}b"));
        let (host_addr, box_addr) = (format!("10.78.{n}.1"), format!("10.78.{n}.2"));
        let holder = Command::new("unshare")
            .args(["-n", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the box namespace's holder (unshare -n)");
        let pid = holder.id().to_string();
        // The holder needs a moment to be in its namespace.
        let own = std::fs::read_link("/proc/self/ns/net").expect("our netns");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()
            .as_ref()
            == Some(&own)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the box namespace did not appear"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let net = Self {
            holder,
            host_if,
            box_if,
            host_addr,
            box_addr,
        };
        run(
            "ip",
            &[
                "link",
                "add",
                &net.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &net.box_if,
            ],
        );
        run("ip", &["link", "set", &net.box_if, "netns", &pid]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.host_addr),
                "dev",
                &net.host_if,
            ],
        );
        run("ip", &["link", "set", &net.host_if, "up"]);
        net.in_box("ip", &["link", "set", "lo", "up"]);
        net.in_box(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.box_addr),
                "dev",
                &net.box_if,
            ],
        );
        net.in_box("ip", &["link", "set", &net.box_if, "up"]);
        // Everything of the test's namespace (its other addresses too) through the link.
        net.in_box("ip", &["route", "add", "default", "via", &net.host_addr]);
        net
    }

    /// The PID whose network namespace is the box's (for `nsenter -t`).
    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// Runs `program` in the box's namespace; panics when it fails.
    pub fn in_box(&self, program: &str, args: &[&str]) -> String {
        let pid = self.pid().to_string();
        let mut all = vec!["-t", &pid, "-n", "--", program];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }

    /// Limits the box's uplink (its egress) to `kbit` kbit/s, as a school's would be:
    /// a token bucket with a 32 kbit burst and at most 100 ms of queue.
    pub fn limit_uplink(&self, kbit: u32) {
        let rate = format!("{kbit}kbit");
        self.in_box(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &self.box_if,
                "root",
                "tbf",
                "rate",
                &rate,
                "burst",
                "32kbit",
                "latency",
                "100ms",
            ],
        );
    }

    /// A school firewall: every UDP packet the box sends is dropped (nftables on its
    /// output; TCP, and so the WebSocket, MQTT and TURN over TCP, still pass).
    pub fn block_udp(&self) {
        self.in_box("nft", &["add", "table", "inet", "school"]);
        self.in_box(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "school",
                "out",
                "{ type filter hook output priority 0; }",
            ],
        );
        self.in_box(
            "nft",
            &[
                "add", "rule", "inet", "school", "out", "meta", "l4proto", "udp", "drop",
            ],
        );
    }

    /// Wi-Fi that loses `percent` % of what the box sends, at random (nftables).
    pub fn lose_randomly(&self, percent: u32) {
        self.in_box("nft", &["add", "table", "inet", "wifi"]);
        self.in_box(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "wifi",
                "out",
                "{ type filter hook output priority 0; }",
            ],
        );
        let below = percent.to_string();
        self.in_box(
            "nft",
            &[
                "add", "rule", "inet", "wifi", "out", "meta", "l4proto", "udp", "numgen", "random",
                "mod", "100", "<", &below, "drop",
            ],
        );
    }

    /// The box's address changes as after a new DHCP lease: the old one goes, another
    /// one of the same link comes, the default route with it.
    pub fn change_address(&mut self) {
        let old = format!("{}/24", self.box_addr);
        let new_addr = match self.box_addr.rsplit_once('.') {
            Some((net, last)) => format!("{net}.{}", last.parse::<u8>().unwrap_or(2) + 1),
            None => panic!("not an IPv4 address: {}", self.box_addr),
        };
        self.in_box("ip", &["addr", "del", &old, "dev", &self.box_if]);
        self.in_box(
            "ip",
            &[
                "addr",
                "add",
                &format!("{new_addr}/24"),
                "dev",
                &self.box_if,
            ],
        );
        self.in_box(
            "ip",
            &["route", "replace", "default", "via", &self.host_addr],
        );
        self.box_addr = new_addr;
    }

    /// Bytes the box has sent over its link.
    pub fn egress_bytes(&self) -> u64 {
        let text = self.in_box("ip", &["-j", "-s", "link", "show", "dev", &self.box_if]);
        let json: serde_json::Value = serde_json::from_str(&text).expect("ip -j output");
        json[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .expect("tx bytes in ip -s output")
    }

    /// Packets the uplink's token bucket dropped.
    pub fn uplink_drops(&self) -> u64 {
        let text = self.in_box("tc", &["-s", "-j", "qdisc", "show", "dev", &self.box_if]);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        json.as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| q["drops"].as_u64())
            .sum()
    }
}

impl Drop for BoxNet {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // The box end went with the namespace; its peer goes with it. Make sure.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}
