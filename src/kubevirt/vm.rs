//! What the gateway knows of the VM it serves as a hook sidecar, and applying the VM's
//! definition: the checks the VMI brings (or the config file's), resolved for the VM
//! (`vsock://vmi:PORT` becomes the VM's own vsock address) and put in force.
//!
//! A standalone gateway knows no VM: resolution refuses `vsock://vmi:PORT` there
//! ([`crate::config::ResolveError::VsockOfVmiNeedsHook`]), so its settings need nothing
//! from here.

use std::sync::Arc;

use crate::config::{AgentSetting, CheckSettings, GatewayFile, Overrides};
use crate::metrics::Metrics;
use crate::probe::{InForce, SwapOutcome};

/// What `/ready` and `/live` say in hook or plugin mode before the definition.
pub(crate) const WAITING_FOR_DEFINITION: &str = "waiting for the VM definition: the checks come from \
    the VMI's probe-gateway.kubevirt.io/probes annotation at KubeVirt's OnDefineDomain hook \
    (or MutateDomain plugin call)";

/// What a hook sidecar knows of its VM, to resolve `vsock://vmi:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VmKnowledge {
    /// Before `OnDefineDomain`.
    AwaitingDefinition,
    /// Defined; the VMI's `status.vsockCID` when it has one.
    Defined { vsock_cid: Option<u32> },
}

/// The check settings to put in force, from the settings as configured (a config file, or
/// the VMI's checks): for a hook sidecar (`vm`), `vsock://vmi:PORT` becomes the VM's own
/// vsock address; a standalone gateway's (`None`) are as configured. Both a definition and
/// a reload go through here, always from the configured form, so a redefinition with
/// another CID moves the checks to it.
pub(crate) fn settings_for_vm(
    mut settings: CheckSettings,
    vm: Option<VmKnowledge>,
) -> Result<CheckSettings, String> {
    let (AgentSetting::VsockOfVmi { .. }, Some(vm)) = (&settings.agent, vm) else {
        return Ok(settings);
    };
    match vm {
        // Resolved at the definition; until then the checks report the agent unreachable.
        VmKnowledge::AwaitingDefinition => {}
        VmKnowledge::Defined {
            vsock_cid: Some(cid),
        } => settings.agent = settings.agent.with_vmi_cid(cid),
        VmKnowledge::Defined { vsock_cid: None } => {
            return Err(format!(
                "agent: {}: the VMI has no status.vsockCID (the VM needs \
                 spec.domain.devices.autoattachVSOCK: true and the VSOCK feature gate)",
                settings.agent
            ));
        }
    }
    Ok(settings)
}

/// Puts what the VM's definition brings in force (see [`InForce::put`]): the VMI's checks
/// (`None` when a config file gave them: `configured`), resolved with `overrides` and for
/// `vm`. The error is what the hook answers KubeVirt.
pub(crate) fn apply_definition(
    in_force: &InForce,
    file: Option<GatewayFile>,
    configured: Option<&CheckSettings>,
    overrides: &Overrides,
    vm: VmKnowledge,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    let (summary, configured) = match (file, configured) {
        (Some(file), _) => {
            let summary = file.summary();
            let settings =
                CheckSettings::resolve(file, overrides).map_err(|error| error.to_string())?;
            (summary, settings)
        }
        (None, Some(configured)) => ("the config's".to_string(), configured.clone()),
        (None, None) => return Ok(()),
    };
    let settings = settings_for_vm(configured, Some(vm))?;
    let agent = settings.agent.to_string();
    match in_force.put(settings, metrics) {
        SwapOutcome::Unchanged => {
            tracing::info!("the VM is defined again with the same checks; kept")
        }
        applied @ SwapOutcome::Applied { .. } => {
            let kept = applied.kept();
            tracing::info!(checks = %summary, %agent, kept, "the VM is defined: its checks are in force")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::AgentAddress;
    use crate::config::Mode;

    fn with_agent(agent: AgentSetting) -> CheckSettings {
        CheckSettings {
            agent,
            libvirt_uri: crate::config::LibvirtUri::default(),
            mode: Mode::OnDemand,
            min_interval: Duration::ZERO,
            liveness_grace: Duration::ZERO,
            expose_output: false,
            output_excerpt_bytes: 1024,
            readiness: None,
            liveness: None,
            startup: None,
        }
    }

    const OF_VMI: AgentSetting = AgentSetting::VsockOfVmi { port: 1024 };

    #[test]
    fn the_vmis_vsock_takes_the_cid_of_the_definition() {
        let vm = VmKnowledge::Defined { vsock_cid: Some(3) };
        let settings = settings_for_vm(with_agent(OF_VMI), Some(vm)).unwrap();
        assert_eq!(
            settings.agent,
            AgentSetting::Address(AgentAddress::Vsock { cid: 3, port: 1024 })
        );
    }

    #[test]
    fn the_vmis_vsock_stays_unresolved_until_the_definition() {
        let vm = Some(VmKnowledge::AwaitingDefinition);
        assert_eq!(
            settings_for_vm(with_agent(OF_VMI), vm).unwrap().agent,
            OF_VMI
        );
    }

    #[test]
    fn a_vmi_without_a_vsock_cid_is_refused_naming_what_it_needs() {
        let vm = VmKnowledge::Defined { vsock_cid: None };
        let error = settings_for_vm(with_agent(OF_VMI), Some(vm)).unwrap_err();
        assert!(
            error.starts_with("agent: vsock://vmi:1024: the VMI has no status.vsockCID"),
            "{error}"
        );
    }

    #[test]
    fn other_addresses_are_as_configured() {
        let unix = AgentSetting::Address(AgentAddress::Unix("/run/agent.sock".into()));
        let vm = Some(VmKnowledge::Defined { vsock_cid: Some(3) });
        assert_eq!(
            settings_for_vm(with_agent(unix.clone()), vm).unwrap().agent,
            unix
        );
        assert_eq!(
            settings_for_vm(with_agent(unix.clone()), None)
                .unwrap()
                .agent,
            unix
        );
    }
}
