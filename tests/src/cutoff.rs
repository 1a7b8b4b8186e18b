//! Cutting one agent off the network, and always reconnecting it.
//!
//! An agent started with [`AgentOptions::run_as`](crate::AgentOptions::run_as) is the
//! only process of its uid, so an `iptables` rule matching that uid's packets on the
//! loopback interface (everything RIS talks over in the tests: broker, API) cuts it off
//! from the broker and the API at once — its established connections included, since
//! every packet it sends is dropped — while it keeps running its tasks. Deleting the
//! rule reconnects it. [`CutOff`] deletes the rule when dropped, so a failing test never
//! leaves a machine with a stray rule. Needs root and `iptables`
//! (`scripts/services.sh` installs it).

use std::process::Command;

/// An `OUTPUT` rule dropping every loopback packet sent by one uid, deleted on drop.
#[derive(Debug)]
pub struct CutOff {
    uid: u32,
    active: bool,
}

impl CutOff {
    /// Adds `iptables -A OUTPUT -o lo -m owner --uid-owner <uid> -j DROP`. Panics if
    /// iptables fails.
    pub fn uid(uid: u32) -> CutOff {
        let (ok, output) = iptables("-A", uid);
        assert!(ok, "iptables -A (cut off uid {uid}) failed: {output}");
        CutOff { uid, active: true }
    }

    /// The uid whose packets are dropped.
    pub fn cut_uid(&self) -> u32 {
        self.uid
    }

    /// Deletes the rule (reconnecting the agent). Panics if it cannot be deleted.
    pub fn restore(mut self) {
        let uid = self.uid;
        assert!(self.remove(), "iptables -D (reconnect uid {uid}) failed");
    }

    /// Deletes the rule (every copy of it); `true` once none is left.
    fn remove(&mut self) -> bool {
        if !self.active {
            return true;
        }
        // `-D` deletes one matching rule per call; stop when there is none left.
        for _ in 0..10 {
            let (ok, _) = iptables("-D", self.uid);
            if !ok {
                break;
            }
        }
        let (still, _) = iptables("-C", self.uid);
        self.active = still;
        !still
    }
}

impl Drop for CutOff {
    fn drop(&mut self) {
        if !self.remove() {
            eprintln!(
                "WARNING: could not delete the iptables rule cutting off uid {}; delete it by hand: \
                 iptables -D OUTPUT -o lo -m owner --uid-owner {} -j DROP",
                self.uid, self.uid
            );
        }
    }
}

/// Runs `iptables -w <op> OUTPUT -o lo -m owner --uid-owner <uid> -j DROP`; returns
/// success and the combined output.
fn iptables(op: &str, uid: u32) -> (bool, String) {
    let uid = uid.to_string();
    let args = [
        "-w",
        op,
        "OUTPUT",
        "-o",
        "lo",
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-j",
        "DROP",
    ];
    match Command::new("iptables").args(args).output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run iptables: {e}")),
    }
}
