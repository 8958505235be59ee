//! The `virt-probe` command lines KubeVirt renders into the compute container's exec
//! probes, read back into the check they run (docs/inject.md, "What the injector reads").
//!
//! virt-controller (`rendercontainer.go`, `template.go`) wraps a VMI's probes so:
//!
//! - exec `[CMD, ARGS...]`: `virt-probe --domainName NS_NAME --timeoutSeconds T --command CMD -- ARGS...`
//! - `guestAgentPing: {}`: `virt-probe --domainName NS_NAME --timeoutSeconds T --guestAgentPing`
//! - an exec command that already starts with `virt-probe` is left as the user wrote it.
//!
//! virt-probe reads its flags with Go's pflag: `--name value` or `--name=value`, flags
//! and plain arguments in any order until `--`, after which everything is an argument. The
//! plain arguments are the command's arguments. This module reads the same grammar, and
//! refuses what virt-probe would refuse or what would not run a check: an unknown flag, a
//! flag without its value, a bad number, an exec line with no `--command`.

use std::fmt;

/// The program KubeVirt's probes run in the compute container.
pub(crate) const VIRT_PROBE: &str = "virt-probe";

/// The check a `virt-probe` line runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VirtProbeCheck {
    GuestAgentPing,
    /// The command and its arguments, as the VMI's exec probe gave them.
    Exec(Vec<String>),
}

/// One `virt-probe` command line, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VirtProbeLine {
    /// `--domainName`: the libvirt domain, `<namespace>_<vmi name>`.
    pub domain: String,
    /// `--timeoutSeconds` (virt-probe's default: 1): the VMI probe's own timeout, which
    /// the pod probe's `timeoutSeconds` exceeds by the 1 s KubeVirt adds.
    pub timeout_seconds: u32,
    pub check: VirtProbeCheck,
}

/// Why a command line is not a `virt-probe` line the gateway can take over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotVirtProbe {
    /// The command is not `virt-probe` at all (another exec probe: left alone).
    OtherProgram,
    /// It is `virt-probe`, but the line does not read: why.
    Unreadable(String),
}

impl fmt::Display for NotVirtProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotVirtProbe::OtherProgram => f.write_str("the command is not virt-probe"),
            NotVirtProbe::Unreadable(why) => f.write_str(why),
        }
    }
}

/// Reads `argv` (the exec probe's `command`, program first).
pub(crate) fn read(argv: &[String]) -> Result<VirtProbeLine, NotVirtProbe> {
    let Some((program, args)) = argv.split_first() else {
        return Err(NotVirtProbe::OtherProgram);
    };
    if program != VIRT_PROBE {
        return Err(NotVirtProbe::OtherProgram);
    }
    let unreadable = |why: String| NotVirtProbe::Unreadable(why);
    let mut domain = None;
    let mut timeout = None;
    let mut command = None;
    let mut ping = false;
    let mut plain = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            plain.extend(rest.by_ref().cloned());
            break;
        }
        let Some(flag) = arg.strip_prefix("--") else {
            if arg.len() > 1 && arg.starts_with('-') {
                return Err(unreadable(format!("virt-probe has no short flag {arg:?}")));
            }
            plain.push(arg.clone());
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        let mut value = |name: &str| -> Result<String, NotVirtProbe> {
            match &inline {
                Some(value) => Ok(value.clone()),
                None => rest
                    .next()
                    .cloned()
                    .ok_or_else(|| unreadable(format!("--{name} has no value"))),
            }
        };
        match name {
            "domainName" => domain = Some(value(name)?),
            "timeoutSeconds" => {
                let text = value(name)?;
                let seconds: i32 = text.parse().map_err(|_| {
                    unreadable(format!("--timeoutSeconds {text:?} is not an integer"))
                })?;
                let seconds = u32::try_from(seconds)
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| {
                        unreadable(format!("--timeoutSeconds {seconds} is not at least 1"))
                    })?;
                timeout = Some(seconds);
            }
            "command" => command = Some(value(name)?),
            "guestAgentPing" => {
                ping = match inline.as_deref() {
                    None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
                    Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
                    Some(other) => {
                        return Err(unreadable(format!(
                            "--guestAgentPing={other:?} is not a boolean"
                        )));
                    }
                };
            }
            // virt-probe's own plumbing (its launcher socket, a memory profile): they do
            // not change what is checked in the guest.
            "socket" | "memProfile" => {
                value(name)?;
            }
            other => {
                return Err(unreadable(format!("virt-probe has no flag --{other}")));
            }
        }
    }
    let domain = domain
        .filter(|d| !d.is_empty())
        .ok_or_else(|| unreadable("no --domainName".to_string()))?;
    let check = if ping {
        VirtProbeCheck::GuestAgentPing
    } else {
        match command.filter(|c| !c.is_empty()) {
            Some(command) => {
                let mut words = vec![command];
                words.extend(plain);
                VirtProbeCheck::Exec(words)
            }
            None => {
                return Err(unreadable(
                    "neither --command nor --guestAgentPing: virt-probe would run nothing"
                        .to_string(),
                ));
            }
        }
    };
    Ok(VirtProbeLine {
        domain,
        timeout_seconds: timeout.unwrap_or(1),
        check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_string()).collect()
    }

    fn exec(words: &[&str]) -> VirtProbeCheck {
        VirtProbeCheck::Exec(argv(words))
    }

    /// KubeVirt's own rendering test (`rendercontainer_test.go`, "should wrap the liveness
    /// exec probe command inside virt-probe while preserving the original command"), the
    /// VMI of that test having no namespace or name and `dummyProbe()`'s timeout 3.
    #[test]
    fn kubevirts_golden_exec_line_reads_as_its_command() {
        let line = argv(&[
            "virt-probe",
            "--domainName",
            "_",
            "--timeoutSeconds",
            "3",
            "--command",
            "dummy-cli",
            "--",
        ]);
        assert_eq!(
            read(&line),
            Ok(VirtProbeLine {
                domain: "_".into(),
                timeout_seconds: 3,
                check: exec(&["dummy-cli"]),
            })
        );
    }

    /// KubeVirt's "should avoid wrapping the liveness exec probe a second time": a command
    /// the user wrote starting with virt-probe is left as it is, and this one names no
    /// domain and no command, so virt-probe would check nothing: not taken over.
    #[test]
    fn kubevirts_golden_pre_wrapped_line_without_a_domain_or_command_does_not_read() {
        let line = argv(&["virt-probe", "--", "dummy-cli"]);
        assert_eq!(
            read(&line),
            Err(NotVirtProbe::Unreadable("no --domainName".into()))
        );
        let line = argv(&["virt-probe", "--domainName", "ns_vm", "--", "dummy-cli"]);
        assert_eq!(
            read(&line),
            Err(NotVirtProbe::Unreadable(
                "neither --command nor --guestAgentPing: virt-probe would run nothing".into()
            ))
        );
    }

    /// `wrapGuestAgentPingWithVirtProbe` (template.go; KubeVirt has no unit test of it).
    #[test]
    fn a_guest_agent_ping_line_reads_as_a_ping() {
        let line = argv(&[
            "virt-probe",
            "--domainName",
            "default_testvmi",
            "--timeoutSeconds",
            "1",
            "--guestAgentPing",
        ]);
        assert_eq!(
            read(&line),
            Ok(VirtProbeLine {
                domain: "default_testvmi".into(),
                timeout_seconds: 1,
                check: VirtProbeCheck::GuestAgentPing,
            })
        );
    }

    /// KubeVirt's probe docs' example (`docs/probes.md`) as rendered: arguments after `--`
    /// are the command's, kept as separate words (spaces and quotes included).
    #[test]
    fn arguments_after_the_separator_are_the_commands() {
        let line = argv(&[
            "virt-probe",
            "--domainName",
            "default_readiness-probe",
            "--timeoutSeconds",
            "5",
            "--command",
            "sh",
            "--",
            "-c",
            "test -f '/tmp/my file' && echo \"ok\"",
        ]);
        let read = read(&line).unwrap();
        assert_eq!(read.timeout_seconds, 5);
        assert_eq!(
            read.check,
            exec(&["sh", "-c", "test -f '/tmp/my file' && echo \"ok\""])
        );
    }

    #[test]
    fn pflag_forms_read_alike() {
        let line = argv(&[
            "virt-probe",
            "--command=cat",
            "/etc/hostname",
            "--timeoutSeconds=2",
            "--domainName=ns_vm",
            "--guestAgentPing=false",
        ]);
        assert_eq!(
            read(&line),
            Ok(VirtProbeLine {
                domain: "ns_vm".into(),
                timeout_seconds: 2,
                check: exec(&["cat", "/etc/hostname"]),
            })
        );
        // No --timeoutSeconds: virt-probe's default, 1.
        let line = argv(&["virt-probe", "--domainName", "ns_vm", "--guestAgentPing"]);
        assert_eq!(read(&line).unwrap().timeout_seconds, 1);
    }

    #[test]
    fn lines_that_would_not_run_a_check_do_not_read() {
        let cases: [(&[&str], &str); 7] = [
            (
                &[
                    "virt-probe",
                    "--domainName",
                    "a_b",
                    "--bogus",
                    "1",
                    "--guestAgentPing",
                ],
                "virt-probe has no flag --bogus",
            ),
            (
                &["virt-probe", "--domainName", "a_b", "--timeoutSeconds"],
                "--timeoutSeconds has no value",
            ),
            (
                &[
                    "virt-probe",
                    "--domainName",
                    "a_b",
                    "--timeoutSeconds",
                    "x",
                    "--guestAgentPing",
                ],
                "--timeoutSeconds \"x\" is not an integer",
            ),
            (
                &[
                    "virt-probe",
                    "--domainName",
                    "a_b",
                    "--timeoutSeconds",
                    "0",
                    "--guestAgentPing",
                ],
                "--timeoutSeconds 0 is not at least 1",
            ),
            (
                &["virt-probe", "--timeoutSeconds", "1", "--guestAgentPing"],
                "no --domainName",
            ),
            (
                &[
                    "virt-probe",
                    "--domainName",
                    "a_b",
                    "-v",
                    "--guestAgentPing",
                ],
                "virt-probe has no short flag \"-v\"",
            ),
            (
                &[
                    "virt-probe",
                    "--domainName",
                    "a_b",
                    "--guestAgentPing=maybe",
                ],
                "--guestAgentPing=\"maybe\" is not a boolean",
            ),
        ];
        for (line, why) in cases {
            assert_eq!(
                read(&argv(line)),
                Err(NotVirtProbe::Unreadable(why.to_string())),
                "{line:?}"
            );
        }
    }

    #[test]
    fn another_program_is_not_virt_probe() {
        assert_eq!(
            read(&argv(&["cat", "/tmp/x"])),
            Err(NotVirtProbe::OtherProgram)
        );
        assert_eq!(read(&[]), Err(NotVirtProbe::OtherProgram));
        // Only the bare name KubeVirt renders: a path is another program.
        assert_eq!(
            read(&argv(&["/usr/bin/virt-probe", "--guestAgentPing"])),
            Err(NotVirtProbe::OtherProgram)
        );
    }
}
