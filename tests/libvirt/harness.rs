//! The harness's own checks, through `virsh` only: the daemon's user, a domain answering
//! through libvirt, a daemon restart reattaching it, nothing left behind, and the agent
//! errors of session.rs's table as virsh shows them.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::host::alive;
use crate::session::{LibvirtSession, libvirt_or_skip, session_with_domain};

const PING: &str = r#"{"execute":"guest-ping"}"#;
const PONG: &str = r#"{"return":{}}"#;

/// The `Uid:`/`Gid:`/`Groups:` line of /proc/PID/status, without its label.
fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line[field.len() + 1..].trim().to_string()
}

#[test]
fn the_session_daemon_runs_as_the_unprivileged_user() {
    if !libvirt_or_skip("the_session_daemon_runs_as_the_unprivileged_user") {
        return;
    }
    let libvirt = LibvirtSession::start();
    let user = libvirt.user();
    assert_ne!(user.uid, 0);

    let socket = std::fs::metadata(libvirt.socket()).unwrap();
    assert!(socket.file_type().is_socket());
    assert_eq!((socket.uid(), socket.gid()), (user.uid, user.gid));
    let socket_dir = std::fs::metadata(libvirt.socket().parent().unwrap()).unwrap();
    assert_eq!(socket_dir.uid(), user.uid);
    assert_eq!(socket_dir.permissions().mode() & 0o777, 0o700);

    // Real, effective, saved and filesystem ids all the user's; no supplementary group.
    let daemon = libvirt.daemon_pid();
    let ids = |id: u32| [id; 4].map(|id| id.to_string()).join("\t");
    assert_eq!(status_field(daemon, "Uid"), ids(user.uid));
    assert_eq!(status_field(daemon, "Gid"), ids(user.gid));
    assert_eq!(status_field(daemon, "Groups"), "");

    // What the test runs through the harness runs as the user, with the session's HOME.
    let id = libvirt
        .command("sh")
        .args(["-c", "id -u; id -G; echo $HOME"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&id.stdout),
        format!(
            "{}\n{}\n{}/home\n",
            user.uid,
            user.gid,
            libvirt.dir().display()
        )
    );
    assert!(libvirt.virsh(&["list"]).status.success());
    let gateway = libvirt.reachable_copy(Path::new(env!("CARGO_BIN_EXE_virt-probe-gateway")));
    let version = libvirt.command(gateway).arg("--version").output().unwrap();
    assert!(version.status.success(), "{version:?}");

    // Another unprivileged user is refused by the 0700 directory (root would pass it).
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let refused = Command::new("virsh")
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .env("LC_ALL", "C")
        .args(["-c", &libvirt.uri(), "list"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
}

#[tokio::test]
async fn a_defined_domain_answers_guest_ping_through_libvirt() {
    let Some((libvirt, mut domain)) = session_with_domain(
        "a_defined_domain_answers_guest_ping_through_libvirt",
        "ping",
    )
    .await
    else {
        return;
    };
    assert_eq!(libvirt.domstate(&domain.name), "running (booted)");
    assert_eq!(
        libvirt.agent_command(&domain.name, PING, None),
        Ok(PONG.to_string())
    );
    // The agent channel is libvirt's own: a socket it chose and is connected to.
    let xml = libvirt.virsh_ok(&["dumpxml", &domain.name]);
    let channel = format!(
        "{}/config/libvirt/qemu/channel/target/",
        libvirt.dir().display()
    );
    assert!(xml.contains(&channel), "{xml}");
    assert!(
        xml.contains("name='org.qemu.guest_agent.0' state='connected'"),
        "{xml}"
    );
    assert!(
        domain
            .control
            .call("guest-ping", serde_json::Value::Null)
            .await
            .is_ok()
    );
    assert!(domain.ready_after < Duration::from_secs(60));
}

#[tokio::test]
async fn a_killed_daemon_restarted_reattaches_the_running_domain() {
    let Some((mut libvirt, domain)) = session_with_domain(
        "a_killed_daemon_restarted_reattaches_the_running_domain",
        "reattach",
    )
    .await
    else {
        return;
    };
    let daemon = libvirt.daemon_pid();

    libvirt.kill_daemon();
    assert!(!alive(daemon));
    assert!(alive(domain.qemu_pid), "QEMU ended with the daemon");
    let down = libvirt.virsh(&["domstate", &domain.name]);
    assert!(!down.status.success());
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("Connection refused"), "{stderr}");

    let restarted = Instant::now();
    libvirt.restart_daemon();
    assert_ne!(libvirt.daemon_pid(), daemon);
    assert_eq!(libvirt.qemu_pid(&domain.name), domain.qemu_pid);
    assert!(
        libvirt.domstate(&domain.name).starts_with("running"),
        "{}",
        libvirt.domstate(&domain.name)
    );
    // The restarted daemon reconnects to the agent's channel by itself.
    let deadline = restarted + Duration::from_secs(30);
    loop {
        match libvirt.agent_command(&domain.name, PING, Some(1)) {
            Ok(reply) if reply == PONG => break,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "restart to guest-ping answering again: {:.2} s",
        restarted.elapsed().as_secs_f64()
    );
    assert!(alive(domain.qemu_pid));
}

#[tokio::test]
async fn drop_ends_qemu_and_the_daemon() {
    let Some((libvirt, domain)) =
        session_with_domain("drop_ends_qemu_and_the_daemon", "drop").await
    else {
        return;
    };
    let (daemon, qemu, dir) = (
        libvirt.daemon_pid(),
        domain.qemu_pid,
        libvirt.dir().to_path_buf(),
    );
    drop(domain);
    drop(libvirt);
    assert!(!alive(daemon), "libvirtd {daemon} still runs");
    assert!(!alive(qemu), "QEMU {qemu} still runs");
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[tokio::test]
async fn drop_ends_qemu_left_running_by_a_killed_daemon() {
    let Some((mut libvirt, domain)) =
        session_with_domain("drop_ends_qemu_left_running_by_a_killed_daemon", "orphan").await
    else {
        return;
    };
    libvirt.kill_daemon();
    assert!(alive(domain.qemu_pid));
    let qemu = domain.qemu_pid;
    drop(domain);
    drop(libvirt);
    assert!(!alive(qemu), "QEMU {qemu} still runs");
}

/// session.rs's table as `virsh` shows it (messages and timings; the codes need the
/// `virt` crate), one domain through every case.
#[tokio::test]
async fn agent_command_errors_read_as_the_table_says() {
    let Some((libvirt, mut domain)) =
        session_with_domain("agent_command_errors_read_as_the_table_says", "errors").await
    else {
        return;
    };
    let name = domain.name.clone();
    let agent = |command: &str, timeout: Option<u32>| {
        let started = Instant::now();
        let reply = libvirt.agent_command(&name, command, timeout);
        (reply, started.elapsed())
    };

    let (reply, _) = agent(r#"{"execute":"nope"}"#, None);
    assert_eq!(
        reply,
        Err("internal error: unable to execute QEMU agent command 'nope': The command nope has not been found".to_string())
    );
    let (reply, _) = agent(
        r#"{"execute":"guest-exec","arguments":{"path":"/does/not/exist"}}"#,
        None,
    );
    assert_eq!(
        reply,
        Err("internal error: unable to execute QEMU agent command 'guest-exec': Guest agent command failed, error was 'Failed to execute child process “/does/not/exist” (No such file or directory)'".to_string())
    );

    // The agent stopped: the first command waits its own timeout, the next ones
    // libvirt's 5 s guest-sync whatever theirs.
    domain.control.sh("kill -STOP $(cat /run/qga0.pid)").await;
    let unresponsive =
        Err("Guest agent is not responding: Guest agent not available for now".to_string());
    let (first, first_took) = agent(PING, Some(1));
    let (second, second_took) = agent(PING, Some(5));
    let (third, third_took) = agent(PING, Some(1));
    domain.control.sh("kill -CONT $(cat /run/qga0.pid)").await;
    let (after, after_took) = agent(PING, Some(1));
    eprintln!(
        "agent stopped: timeout 1 took {first_took:.2?}, then timeout 5 {second_took:.2?}, then timeout 1 {third_took:.2?}; after SIGCONT {after_took:.2?}"
    );
    assert_eq!(
        (&first, &second, &third),
        (&unresponsive, &unresponsive, &unresponsive)
    );
    assert!(first_took < Duration::from_millis(2500), "{first_took:?}");
    for took in [second_took, third_took] {
        assert!(
            (Duration::from_millis(4500)..Duration::from_millis(7000)).contains(&took),
            "{took:?}"
        );
    }
    assert_eq!(after, Ok(PONG.to_string()));

    libvirt.virsh_ok(&["suspend", &name]);
    assert_eq!(libvirt.domstate(&name), "paused (user)");
    let not_running = Err("Requested operation is not valid: domain is not running".to_string());
    assert_eq!(libvirt.agent_command(&name, PING, Some(1)), not_running);
    libvirt.virsh_ok(&["resume", &name]);
    assert_eq!(libvirt.domstate(&name), "running (unpaused)");
    assert_eq!(
        libvirt.agent_command(&name, PING, Some(1)),
        Ok(PONG.to_string())
    );

    libvirt.virsh_ok(&["destroy", &name]);
    assert_eq!(libvirt.domstate(&name), "shut off (destroyed)");
    assert_eq!(libvirt.agent_command(&name, PING, Some(1)), not_running);
    libvirt.virsh_ok(&["undefine", &name]);
    assert_eq!(
        libvirt.agent_command(&name, PING, Some(1)),
        Err(format!("failed to get domain '{name}'"))
    );
}
