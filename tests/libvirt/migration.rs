//! A real live migration between two libvirt daemons, each with a gateway on the same
//! domain name, as a migration's source and target launcher pods have: the source's
//! gateway while the domain runs with a migration job, the target's before the domain
//! exists, while it is paused for the incoming migration, and after it arrived.
//!
//! The guest's agent is stopped (SIGSTOP) during the migration, so that no check reaches
//! it and every answer comes from the domain's state: what KubeVirt's rule is for. A first
//! migration, held back by a bandwidth of 1 MiB/s, is watched in each state and aborted;
//! a second one, at full speed and with the agent running again, completes.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::gateway::{LibvirtGateway, SECOND, SLACK, config, reason};
use crate::session::{LibvirtSession, libvirt_or_skip};

const PROBES: &str = "livenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\nreadinessProbe:\n  exec:\n    command: [\"true\"]\n  timeoutSeconds: 1\n";

/// Waits until `condition` holds, within `limit`, polling every 100 ms.
async fn until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `virsh migrate --live` of `domain` from `source` to `target` (the target's
/// domain XML in `xml`, QEMU's stream over loopback) with `options`.
fn migrate(
    source: &LibvirtSession,
    target: &LibvirtSession,
    domain: &str,
    xml: &std::path::Path,
    options: &[&str],
) -> std::process::Child {
    source
        .command("virsh")
        .args(["-c", &source.uri(), "migrate", "--live"])
        .args(options)
        .arg("--xml")
        .arg(xml)
        .args([domain, &target.uri(), "tcp://127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit, within `limit`; its output.
async fn wait_for(child: &mut std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "virsh migrate did not end within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    std::process::Output {
        status: child.wait().unwrap(),
        stdout,
        stderr,
    }
}

/// Both probes' status and reason, each answered within `timeoutSeconds` + 0.5 s.
async fn probes(gateway: &LibvirtGateway) -> ((u16, String), (u16, String)) {
    let mut answers = Vec::new();
    for path in ["/live", "/ready"] {
        let (status, report, took) = gateway.report(path).await;
        assert!(took <= SECOND + SLACK, "{path} took {took:?}: {report}");
        answers.push((status, reason(&report).to_string()));
    }
    let ready = answers.pop().unwrap();
    (answers.pop().unwrap(), ready)
}

#[tokio::test]
async fn a_live_migration_keeps_both_gateways_liveness_with_the_agent_stopped() {
    let test = "a_live_migration_keeps_both_gateways_liveness_with_the_agent_stopped";
    if !libvirt_or_skip(test) {
        return;
    }
    let mut source = LibvirtSession::start();
    let target = LibvirtSession::start();
    let mut domain = source.start_domain("mig").await;
    let name = domain.name.clone();
    let at_source = LibvirtGateway::start(&source, &config(&source, &name, PROBES), &[]);
    // The target's gateway is one of the same user (both daemons run as vpg-libvirt).
    let at_target = LibvirtGateway::start(&target, &config(&target, &name, PROBES), &[]);
    at_source.await_status("/ready", 200, 10 * SECOND).await;

    // Target: its domain does not exist before the migration.
    let (live, ready) = probes(&at_target).await;
    assert_eq!(live.0, 200, "{live:?}");
    assert!(live.1.starts_with("no such domain; "), "{live:?}");
    assert_eq!(ready, (503, "no such domain".to_string()));

    // The agent stops: on a running domain with no job, that is a failure.
    domain.control.sh("kill -STOP $(cat /run/qga0.pid)").await;
    let (live, _) = probes(&at_source).await;
    assert_eq!(live.0, 503, "{live:?}");

    // The migration, held at 1 MiB/s. The target's XML binds the test's control channel
    // and console elsewhere (the source's QEMU holds them).
    let files = target.guest_files(&name);
    let source_files = source.guest_files(&name);
    let xml = source
        .virsh_ok(&["dumpxml", "--migratable", &name])
        .replace(
            &source_files.control.display().to_string(),
            &files.control.display().to_string(),
        )
        .replace(
            &source_files.console.display().to_string(),
            &files.console.display().to_string(),
        );
    let xml_file = source.dir().join("target.xml");
    std::fs::write(&xml_file, xml).unwrap();
    source.give_to_user(&xml_file);
    let mut migration = migrate(&source, &target, &name, &xml_file, &["--bandwidth", "1"]);
    until("the source's migration job", 30 * SECOND, || {
        source
            .virsh_ok(&["domjobinfo", &name])
            .contains("Unbounded")
    })
    .await;

    // Source: running with a migration job. Both probes pass, naming it, from the first
    // check on (the state is read when the check times out).
    let (live, ready) = probes(&at_source).await;
    assert_eq!(live.0, 200, "{live:?}");
    assert!(live.1.starts_with("domain migrating; "), "{live:?}");
    assert_eq!(ready.0, 200, "{ready:?}");
    assert_eq!(
        at_source
            .metric("probe_gateway_domain_state{state=\"migrating\"}")
            .await,
        1.0
    );

    // Target: the domain exists, paused for the incoming migration: alive, not ready
    // (the guest is not here yet).
    until("the target's domain", 30 * SECOND, || {
        target.virsh(&["domstate", &name]).status.success()
    })
    .await;
    // libvirt 9.0 says "paused (starting up)" for an incoming domain.
    let state = format!("domain {}", target.domstate(&name));
    assert!(state.starts_with("domain paused ("), "{state}");
    let (live, ready) = probes(&at_target).await;
    assert_eq!(live.0, 200, "{live:?}");
    assert!(live.1.starts_with(&format!("{state}; ")), "{live:?}");
    assert_eq!(ready, (503, state.clone()));
    eprintln!("the target's domain during the migration: {state}");

    // The held migration is aborted (QEMU 7.2 keeps the bandwidth it started with): the
    // source runs again with no job, and its gateway judges by the agent again, which is
    // still stopped; the target's domain is gone again.
    source.virsh_ok(&["domjobabort", &name]);
    let aborted = wait_for(&mut migration, 30 * SECOND).await;
    assert!(
        !aborted.status.success(),
        "the held migration was not aborted"
    );
    assert!(source.domstate(&name).starts_with("running"));
    let (live, ready) = probes(&at_source).await;
    assert_eq!((live.0, ready.0), (503, 503), "{live:?} {ready:?}");
    until("the target's domain gone", 30 * SECOND, || {
        !target.virsh(&["domstate", &name]).status.success()
    })
    .await;
    let (live, ready) = probes(&at_target).await;
    assert!(live.1.starts_with("no such domain; "), "{live:?}");
    assert_eq!(ready, (503, "no such domain".to_string()));

    // Then the migration at full speed, with the agent running again.
    domain.control.sh("kill -CONT $(cat /run/qga0.pid)").await;
    let began = Instant::now();
    let mut migration = migrate(&source, &target, &name, &xml_file, &[]);
    let output = wait_for(&mut migration, 120 * SECOND).await;
    let migrated = began.elapsed();
    assert!(
        output.status.success(),
        "virsh migrate: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Target: the guest arrived; its agent answers through the target's daemon.
    assert!(target.domstate(&name).starts_with("running"));
    let live = at_target.await_status("/live", 200, 30 * SECOND).await;
    assert!(live["reason"].is_null(), "{live}");
    let ready = at_target.await_status("/ready", 200, 30 * SECOND).await;
    assert_eq!(ready["result"], "success", "{ready}");
    eprintln!(
        "migration: {:.1} s; the target's probes passing {:.1} s after it ended",
        migrated.as_secs_f64(),
        began.elapsed().as_secs_f64() - migrated.as_secs_f64()
    );
    // Source: the domain left; its pod is about to end. Alive, not ready.
    let (live, ready) = probes(&at_source).await;
    assert_eq!(live.0, 200, "{live:?}");
    assert_eq!(ready.0, 503, "{ready:?}");
    eprintln!("after the migration, the source's gateway: live {live:?}, ready {ready:?}");
}
