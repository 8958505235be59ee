//! What the two binaries link. The default one (unix, vsock and hook modes) never loads
//! libvirt, whose libraries alone add about 11 MiB of RSS (docker/README.md). The libvirt
//! one (`virt-probe-gateway-libvirt` in the image) imports exactly the libvirt functions
//! listed in tests/api/libvirt-imports.txt. Its read-write connection would permit
//! destroying the domain or reaching QEMU's monitor; the functions the binary can call at
//! all are a reviewed list, and a new one fails this test until the list names it.
//!
//! The libraries are read with `ldd` (glibc's, in every Debian system), the symbols with
//! `nm` (binutils: wherever these tests build, since the Rust toolchain links through
//! `cc`, and Debian's gcc depends on binutils).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::hook::repo;

/// The allow-list, relative to the repository.
const IMPORTS: &str = "tests/api/libvirt-imports.txt";

/// How to regenerate the allow-list, in every failure message.
const UPDATE: &str = "cargo build --release --locked --features libvirt --target-dir target/libvirt \
     && VPG_UPDATE_LIBVIRT_IMPORTS=1 cargo nextest run --test api linkage";

/// Its opening comment, kept when the list is regenerated.
const HEADER: &str = "\
# The libvirt functions virt-probe-gateway-libvirt imports (its undefined dynamic symbols
# that start with `vir`), one a line, sorted. tests/api/linkage.rs compares the binary
# with this list: a new function is a new power over the domain or the daemon, so say why
# in the commit that adds it. Regenerate after building the libvirt binary:
#   VPG_UPDATE_LIBVIRT_IMPORTS=1 cargo nextest run --test api linkage
";

/// The functions and variables BINARY takes from libvirt: its undefined dynamic symbols
/// that start with `vir`, without their version (`virConnectOpen@LIBVIRT_0.0.3`).
fn libvirt_imports(binary: &Path) -> BTreeSet<String> {
    let output = Command::new("nm")
        .args(["--dynamic", "--undefined-only"])
        .arg(binary)
        .output()
        .expect("run nm (binutils)");
    assert!(
        output.status.success(),
        "nm {}: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("nm prints UTF-8")
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(|symbol| symbol.split('@').next().unwrap_or(symbol))
        .filter(|name| name.starts_with("vir"))
        .map(str::to_owned)
        .collect()
}

/// The libvirt release binary scripts/test.sh builds (`VPG_LIBVIRT_GATEWAY` overrides it),
/// or None with a message if it is not built. In CI (`CI=true`) a missing binary fails.
fn libvirt_binary_or_skip(test: &str) -> Option<PathBuf> {
    let binary = std::env::var_os("VPG_LIBVIRT_GATEWAY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/libvirt/release/virt-probe-gateway"));
    if binary.is_file() {
        return Some(binary);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing in CI: scripts/test.sh must build it \
         (cargo build --release --locked --features libvirt --target-dir target/libvirt)",
        binary.display()
    );
    eprintln!(
        "SKIPPED {test}: {} is not built (cargo build --release --locked --features libvirt \
         --target-dir target/libvirt, or set VPG_LIBVIRT_GATEWAY)",
        binary.display()
    );
    None
}

/// The test binaries are the default build only when the tests are built without the
/// feature. The webhook's binary never links libvirt (issue 15).
#[cfg(not(feature = "libvirt"))]
#[test]
fn the_default_binary_and_the_webhooks_do_not_load_libvirt() {
    for binary in [
        env!("CARGO_BIN_EXE_virt-probe-gateway"),
        env!("CARGO_BIN_EXE_virt-probe-gateway-inject"),
    ] {
        assert_no_libvirt(Path::new(binary));
    }
}

#[cfg(not(feature = "libvirt"))]
fn assert_no_libvirt(binary: &Path) {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("run ldd (glibc's libc-bin)");
    assert!(output.status.success(), "ldd: {output:?}");
    let closure = String::from_utf8(output.stdout).expect("ldd prints UTF-8");
    assert!(
        closure.contains("libc.so.6"),
        "ldd found no libc, so it did not read the binary:\n{closure}"
    );
    let libvirt: Vec<&str> = closure
        .lines()
        .filter(|line| line.contains("libvirt"))
        .collect();
    assert!(
        libvirt.is_empty(),
        "{} loads libvirt; only the `libvirt` feature's binary may:\n{}",
        binary.display(),
        libvirt.join("\n")
    );
}

#[test]
fn the_libvirt_binary_imports_exactly_the_allowed_libvirt_functions() {
    let Some(binary) =
        libvirt_binary_or_skip("the_libvirt_binary_imports_exactly_the_allowed_libvirt_functions")
    else {
        return;
    };
    let imported = libvirt_imports(&binary);
    let list = repo().join(IMPORTS);
    if std::env::var_os("VPG_UPDATE_LIBVIRT_IMPORTS").is_some() {
        let names: String = imported.iter().map(|name| format!("{name}\n")).collect();
        std::fs::write(&list, format!("{HEADER}{names}")).expect("write the list");
        eprintln!(
            "wrote {IMPORTS}: {} functions from {}",
            imported.len(),
            binary.display()
        );
        return;
    }
    let text = std::fs::read_to_string(&list).expect("read the list");
    let listed: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(listed, sorted, "{IMPORTS} must be sorted, one name a line");
    let allowed: BTreeSet<String> = listed.into_iter().map(str::to_owned).collect();
    if imported != allowed {
        let mut diff = String::new();
        for name in imported.difference(&allowed) {
            diff.push_str(&format!("+ {name}    (imported, not in the list)\n"));
        }
        for name in allowed.difference(&imported) {
            diff.push_str(&format!("- {name}    (in the list, not imported)\n"));
        }
        panic!(
            "{} imports other libvirt functions than {IMPORTS} allows:\n{diff}\
             If the change is meant (README: what the libvirt connection permits), regenerate \
             the list and commit it with the reason:\n  {UPDATE}\n\
             (A stale binary shows old imports: rebuild it after changing the backend.)",
            binary.display()
        );
    }
}
