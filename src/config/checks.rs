//! Named checks: the `checks` mapping of a gateway config or annotation, which defines each
//! check once under its name, and the probes' `checks` lists, which name the checks a probe
//! is made of.
//!
//! ```yaml
//! checks:
//!   agent: {guestAgentPing: {}}
//!   app: {exec: {command: [systemctl, is-active, app]}, timeoutSeconds: 3}
//! readinessProbe:
//!   checks: [agent, app]
//! livenessProbe:
//!   checks: [agent]
//! ```
//!
//! This module owns the names and the references: a name is a [`CheckName`], written once
//! (YAML and JSON mappings refuse a key written twice), never a probe's own name (a probe
//! in KubeVirt's shape has one check named after it), listed at most once by a probe, and
//! listed by some probe (a definition no probe uses is a mistake, not a spare). What a check
//! holds is read by [`super::probe_fields`], the same way as a probe's handler.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::probe_fields::read_check_definition;
use super::walk::{Errors, FieldPath, describe, expect_mapping};
use super::{CheckName, CheckSpec, ProbeKind};

/// The `checks` mapping as read: every name written, with its check when the definition
/// is valid (an invalid one has its own errors, so a probe listing it is not told the name
/// is unknown as well), and the names the probes have listed so far.
#[derive(Debug, Default)]
pub(super) struct Definitions {
    defined: BTreeMap<String, Option<CheckSpec>>,
    used: BTreeSet<String>,
    /// Where the mapping is, for the errors about it.
    path: FieldPath,
}

impl Definitions {
    /// Reads the `checks` mapping at `path` (`value` is `None` when it is not set).
    pub(super) fn read(value: Option<&Value>, path: FieldPath, errors: &mut Errors) -> Self {
        let mut definitions = Definitions {
            path,
            ..Definitions::default()
        };
        let Some(map) = value.and_then(|value| expect_mapping(value, &definitions.path, errors))
        else {
            return definitions;
        };
        for (key, value) in map {
            let path = definitions.path.field(key);
            let check = match CheckName::parse(key) {
                Ok(name) if ProbeKind::ALL.iter().any(|k| k.as_str() == key) => {
                    errors.add(
                        &path,
                        format!(
                            "{name} is the name of the {name} probe's own check (a probe \
                             written with one handler): give this check another name"
                        ),
                    );
                    None
                }
                Ok(name) => read_check_definition(value, &path, name, errors),
                Err(message) => {
                    errors.add(&path, message);
                    None
                }
            };
            definitions.defined.insert(key.clone(), check);
        }
        definitions
    }

    /// Reads a probe's `checks` list at `path`: the named checks, in the order listed.
    pub(super) fn resolve(
        &mut self,
        value: &Value,
        path: &FieldPath,
        errors: &mut Errors,
    ) -> Option<Vec<CheckSpec>> {
        let Value::Array(items) = value else {
            errors.add(
                path,
                format!(
                    "must be a list of check names defined under {}, e.g. [agent, app] \
                     (found {})",
                    self.shown_path(),
                    describe(value)
                ),
            );
            return None;
        };
        if items.is_empty() {
            errors.add(path, "must list at least one check");
            return None;
        }
        let mut listed = BTreeSet::new();
        let mut checks = Vec::new();
        let mut complete = true;
        for (index, item) in items.iter().enumerate() {
            let item_path = path.index(index);
            let Some(name) = item.as_str() else {
                errors.add(
                    &item_path,
                    format!("must be a check name (found {})", describe(item)),
                );
                complete = false;
                continue;
            };
            if !listed.insert(name) {
                errors.add(&item_path, format!("{name:?} is listed twice"));
                complete = false;
                continue;
            }
            self.used.insert(name.to_string());
            match self.defined.get(name) {
                Some(Some(check)) => checks.push(check.clone()),
                // Invalid: its definition has the errors.
                Some(None) => complete = false,
                None => {
                    errors.add(&item_path, self.unknown_name_message(name));
                    complete = false;
                }
            }
        }
        complete.then_some(checks)
    }

    /// Records an error for each defined check that no probe lists.
    pub(super) fn report_unused(&self, errors: &mut Errors) {
        for name in self.defined.keys() {
            if !self.used.contains(name) {
                errors.add(
                    &self.path.field(name),
                    "defined but no probe lists it: add it to a probe's checks, or remove it",
                );
            }
        }
    }

    fn unknown_name_message(&self, name: &str) -> String {
        if self.defined.is_empty() {
            format!(
                "no check named {name:?}: define it under {}",
                self.shown_path()
            )
        } else {
            let known: Vec<&str> = self.defined.keys().map(String::as_str).collect();
            format!(
                "no check named {name:?} under {} (defined: {})",
                self.shown_path(),
                known.join(", ")
            )
        }
    }

    fn shown_path(&self) -> String {
        self.path.to_string()
    }
}

/// The value of the `checks` field in `map`, if the document has one.
pub(super) fn definitions_value(map: &Map<String, Value>) -> Option<&Value> {
    super::walk::set_value(map, "checks")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::test_support::{errors_of, single_error};
    use crate::config::{CheckName, Handler, parse_document};

    const THREE_CHECKS: &str = r#"
checks:
  agent:
    guestAgentPing: {}
  app:
    exec: {command: [systemctl, is-active, app]}
    timeoutSeconds: 3
  disk:
    exec: {command: [test, -w, /var/lib/app]}
readinessProbe:
  checks: [agent, app, disk]
  periodSeconds: 5
livenessProbe:
  checks: [agent]
startupProbe:
  checks: [app]
  failureThreshold: 30
"#;

    #[test]
    fn probes_take_the_checks_they_list_in_their_order_with_each_checks_timeout() {
        let file = parse_document(THREE_CHECKS).unwrap();
        let readiness = file.readiness.unwrap();
        let names: Vec<&str> = readiness.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["agent", "app", "disk"]);
        assert_eq!(readiness.period_seconds, 5);
        assert_eq!(readiness.checks[0].handler, Handler::GuestAgentPing);
        assert_eq!(readiness.checks[1].timeout, Duration::from_secs(3));
        assert_eq!(readiness.checks[2].timeout, Duration::from_secs(1));
        assert_eq!(readiness.longest_timeout(), Duration::from_secs(3));
        let liveness = file.liveness.unwrap();
        assert_eq!(liveness.checks, readiness.checks[..1]);
        let startup = file.startup.unwrap();
        assert_eq!(startup.checks, readiness.checks[1..2]);
        assert_eq!(startup.failure_threshold, 30);
    }

    #[test]
    fn the_shipped_named_checks_example_is_the_readmes_and_parses() {
        let example = include_str!("../../examples/named-checks.yaml");
        let file = parse_document(example).unwrap();
        let names = |spec: Option<crate::config::ProbeSpec>| -> Vec<String> {
            spec.unwrap()
                .checks
                .iter()
                .map(|c| c.name.to_string())
                .collect()
        };
        assert_eq!(names(file.readiness), ["agent", "app", "disk"]);
        assert_eq!(names(file.liveness), ["agent"]);
        assert_eq!(names(file.startup), ["app"]);
        let readme = include_str!("../../README.md");
        let body: String = example
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let without_comments: String = readme
            .lines()
            .map(|line| line.split("  #").next().unwrap_or(line).trim_end())
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(
            without_comments.contains(&body),
            "README.md shows examples/named-checks.yaml (less comments)"
        );
    }

    #[test]
    fn a_probe_with_one_handler_has_one_check_named_after_the_probe() {
        let file = parse_document("readinessProbe:\n  guestAgentPing: {}\n").unwrap();
        let checks = file.readiness.unwrap().checks;
        assert_eq!(checks.len(), 1);
        assert_eq!(
            checks[0].name,
            CheckName::of_probe(super::ProbeKind::Readiness)
        );
        assert_eq!(checks[0].name.as_str(), "readiness");
    }

    #[test]
    fn check_names_are_dns_labels() {
        for good in ["a", "app", "app-2", "0day", &"x".repeat(63)] {
            assert!(CheckName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "App",
            "app_2",
            "-app",
            "app-",
            "a.b",
            "a/b",
            "ä",
            &"x".repeat(64),
        ] {
            let error = CheckName::parse(bad).unwrap_err();
            assert!(error.contains("is not a check name"), "{bad}: {error}");
        }
        let error = single_error(
            "checks:\n  Disk_Space: {guestAgentPing: {}}\nreadinessProbe:\n  checks: [Disk_Space]\n",
        );
        assert_eq!(
            error,
            "checks.Disk_Space: \"Disk_Space\" is not a check name: use lower-case letters, \
             digits and '-', starting and ending with a letter or digit, at most 63 characters"
        );
    }

    #[test]
    fn a_name_written_twice_is_refused() {
        let errors = errors_of(
            "checks:\n  app: {guestAgentPing: {}}\n  app: {guestAgentPing: {}}\nreadinessProbe:\n  checks: [app]\n",
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("duplicate"), "{}", errors[0]);
    }

    #[test]
    fn a_probes_own_name_is_not_a_check_name() {
        let error = single_error(
            "checks:\n  liveness: {guestAgentPing: {}}\nreadinessProbe:\n  checks: [liveness]\n",
        );
        assert!(
            error.starts_with(
                "checks.liveness: liveness is the name of the liveness probe's own check"
            ),
            "{error}"
        );
    }

    #[test]
    fn every_listed_name_must_be_defined_and_listed_once() {
        let errors = errors_of(
            "checks:\n  app: {guestAgentPing: {}}\nreadinessProbe:\n  checks: [app, db, app]\n",
        );
        assert_eq!(
            errors,
            [
                "readinessProbe.checks[1]: no check named \"db\" under checks (defined: app)",
                "readinessProbe.checks[2]: \"app\" is listed twice",
            ]
        );
        let error = single_error("readinessProbe:\n  checks: [db]\n");
        assert_eq!(
            error,
            "readinessProbe.checks[0]: no check named \"db\": define it under checks"
        );
    }

    #[test]
    fn every_defined_name_must_be_used() {
        let error = single_error(
            "checks:\n  app: {guestAgentPing: {}}\n  spare: {guestAgentPing: {}}\nreadinessProbe:\n  checks: [app]\n",
        );
        assert_eq!(
            error,
            "checks.spare: defined but no probe lists it: add it to a probe's checks, or remove it"
        );
    }

    #[test]
    fn a_probe_has_either_checks_or_a_handler_and_no_timeout_of_its_own_with_checks() {
        let errors = errors_of(
            "checks:\n  app: {guestAgentPing: {}}\nreadinessProbe:\n  checks: [app]\n  exec: {command: [\"true\"]}\n  timeoutSeconds: 5\n",
        );
        assert_eq!(
            errors,
            [
                "readinessProbe: set either checks or one handler (exec, guestAgentPing), not both",
                "readinessProbe.timeoutSeconds: a probe with checks has no timeout of its own: \
                 each check has its timeoutSeconds, under checks.<name>",
            ]
        );
    }

    #[test]
    fn a_check_holds_a_handler_and_a_timeout_and_the_schedule_is_the_probes() {
        let errors = errors_of(
            "checks:\n  app:\n    exec: {command: [\"true\"]}\n    periodSeconds: 5\n    bogus: 1\n  none: {timeoutSeconds: 2}\nreadinessProbe:\n  checks: [app, none]\n",
        );
        assert_eq!(
            errors,
            [
                "checks.app.bogus: unknown field; expected one of exec, guestAgentPing, timeoutSeconds",
                "checks.app.periodSeconds: belongs to the probe that lists this check, not to the check",
                "checks.none: exactly one of exec, guestAgentPing must be set (found 0)",
            ]
        );
    }

    #[test]
    fn an_empty_or_malformed_list_is_refused() {
        let error = single_error("checks: {}\nreadinessProbe:\n  checks: []\n");
        assert_eq!(error, "readinessProbe.checks: must list at least one check");
        let errors =
            errors_of("checks:\n  app: {guestAgentPing: {}}\nreadinessProbe:\n  checks: app\n");
        assert!(
            errors[0].starts_with(
                "readinessProbe.checks: must be a list of check names defined under checks"
            ),
            "{errors:#?}"
        );
    }

    #[test]
    fn the_startup_probe_takes_a_success_threshold_of_1_only() {
        let error = single_error(
            "livenessProbe:\n  guestAgentPing: {}\nstartupProbe:\n  guestAgentPing: {}\n  successThreshold: 2\n",
        );
        assert_eq!(
            error,
            "startupProbe.successThreshold: must be 1 for startupProbe"
        );
    }

    #[test]
    fn a_startup_probe_alone_holds_back_nothing() {
        let error = single_error("startupProbe:\n  guestAgentPing: {}\n");
        assert_eq!(
            error,
            "no probe configured: set readinessProbe and/or livenessProbe (a startupProbe only \
             holds them back until it passes)"
        );
    }
}
