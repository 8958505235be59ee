//! The test guest's image and how it boots: shared by the VM tests (QEMU started directly,
//! guest.rs) and the libvirt tests (the same guest as a libvirt domain), so both boot the
//! same guest the same way.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The guest's kernel command line: the console on the serial port, no boot chatter, and
/// a panic ends the VM (QEMU runs with `-no-reboot`, libvirt with `on_reboot` destroy)
/// instead of hanging it.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 quiet panic=-1";

/// Guest memory: the initramfs and two agents fit with room to spare.
pub const MEMORY_MIB: u32 = 256;

/// The kernel and initramfs, built once per test process (cached across runs).
pub fn images() -> &'static (PathBuf, PathBuf) {
    static IMAGES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vm/build-guest.sh");
        let output = Command::new("bash")
            .arg(script)
            .output()
            .expect("run tests/vm/build-guest.sh");
        assert!(
            output.status.success(),
            "building the guest failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut paths = stdout.lines().rev().take(2).map(PathBuf::from);
        let initrd = paths.next().expect("initramfs path");
        let kernel = paths.next().expect("kernel path");
        (kernel, initrd)
    })
}
