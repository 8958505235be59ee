//! The command line: `serve`, `check`, `validate`. Every flag also reads
//! `PROBE_GATEWAY_<FLAG>`; a flag wins over its variable, both win over the config file.
//!
//! Exit codes: 0 success, 1 check failed (or the gateway failed at run time), 2 usage or
//! config error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::time::Instant;

use crate::app::{Application, HookMode};
use crate::config::{
    self, AgentSetting, CheckSettings, GatewayFile, LibvirtUri, LoadError, Overrides, ProbeKind,
    ResolveError, Role, Settings,
};
use crate::kubevirt::HookSetup;
use crate::metrics::Metrics;
use crate::probe::ProbeRunner;
use crate::reload::ConfigSource;
use crate::telemetry::{self, LogFormat};

pub const EXIT_CHECK_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "virt-probe-gateway",
    version,
    about = "Answers kubelet httpGet probes for a KubeVirt VM by running its exec and guest-ping checks through qemu-guest-agent"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /ready, /live and /healthz over HTTP.
    Serve(ServeArgs),
    /// Run one check once and exit 0 (passed) or 1 (failed); 2 if it is not configured.
    Check(CheckArgs),
    /// Validate a config file (or VM manifest) and print a one-line summary.
    Validate(ValidateArgs),
    /// Print the HTTP API's OpenAPI document (JSON).
    Openapi,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file: gateway config, or a KubeVirt VirtualMachine / VirtualMachineInstance manifest (YAML or JSON). Optional with --kubevirt-hook, where the checks come from the VMI.
    #[arg(
        long,
        env = "PROBE_GATEWAY_CONFIG",
        value_name = "FILE",
        required_unless_present = "kubevirt_hook"
    )]
    pub config: Option<PathBuf>,
    /// Run as a KubeVirt hook sidecar: serve KubeVirt's hook gRPC services in --hooks-dir, add a private agent channel to the VM at OnDefineDomain, take the checks from the VMI's probe-gateway.kubevirt.io/probes annotation, and exit 0 at the Shutdown hook.
    #[arg(long, env = "PROBE_GATEWAY_KUBEVIRT_HOOK")]
    pub kubevirt_hook: bool,
    /// The hooks directory, as mounted in this container (hook mode).
    #[arg(long, env = "PROBE_GATEWAY_HOOKS_DIR", value_name = "DIR", default_value = crate::kubevirt::hook::KUBEVIRT_HOOKS_DIR)]
    pub hooks_dir: PathBuf,
    /// This sidecar's container name, which names its directory in the compute container (hook mode; KubeVirt sets CONTAINER_NAME).
    #[arg(long, env = "CONTAINER_NAME", value_name = "NAME", default_value = crate::kubevirt::hook::DEFAULT_CONTAINER_NAME)]
    pub container_name: String,
    /// Address to listen on [default: [::]:8080, or 0.0.0.0:8080 without IPv6].
    #[arg(long, env = "PROBE_GATEWAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The agent: unix:///path or an absolute path, vsock://CID:PORT, hybrid-vsock:///path?port=PORT, or libvirt:DOMAIN.
    #[arg(long, env = "PROBE_GATEWAY_AGENT", value_name = "URI", value_parser = parse_agent)]
    pub agent: Option<AgentSetting>,
    /// The libvirt daemon of a libvirt:DOMAIN agent [default: qemu+unix:///session?socket=/var/run/libvirt/virtqemud-sock].
    #[arg(long, env = "PROBE_GATEWAY_LIBVIRT_URI", value_name = "URI", value_parser = parse_libvirt_uri)]
    pub libvirt_uri: Option<LibvirtUri>,
    #[arg(long, env = "PROBE_GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds to finish in-flight requests after SIGTERM [default: 5].
    #[arg(long, env = "PROBE_GATEWAY_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProbeArg {
    Readiness,
    Liveness,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Which probe to run.
    #[arg(value_enum)]
    pub probe: ProbeArg,
    #[arg(long, env = "PROBE_GATEWAY_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    #[arg(long, env = "PROBE_GATEWAY_AGENT", value_name = "URI", value_parser = parse_agent)]
    pub agent: Option<AgentSetting>,
    /// The libvirt daemon of a libvirt:DOMAIN agent.
    #[arg(long, env = "PROBE_GATEWAY_LIBVIRT_URI", value_name = "URI", value_parser = parse_libvirt_uri)]
    pub libvirt_uri: Option<LibvirtUri>,
    #[arg(long, env = "PROBE_GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    #[arg(long, env = "PROBE_GATEWAY_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

fn parse_agent(text: &str) -> Result<AgentSetting, String> {
    AgentSetting::parse(text)
}

fn parse_libvirt_uri(text: &str) -> Result<LibvirtUri, String> {
    LibvirtUri::parse(text)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(args),
        Command::Validate(args) => validate(args),
        Command::Openapi => {
            print!("{}", crate::http::openapi::document());
            ExitCode::SUCCESS
        }
    }
}

fn config_error(error: &dyn std::fmt::Display) -> ExitCode {
    for line in error.to_string().lines() {
        eprintln!("error: {line}");
    }
    ExitCode::from(EXIT_USAGE)
}

/// Reports why settings from `path` (a file, or the command line) cannot be resolved.
fn resolve_error(path: String, error: ResolveError) -> ExitCode {
    match error {
        ResolveError::Invalid(errors) => config_error(&LoadError::Invalid { path, errors }),
        error => config_error(&error),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    telemetry::init(args.log_format);
    let overrides = Overrides {
        listen: args.listen,
        agent: args.agent,
        libvirt_uri: args.libvirt_uri,
        shutdown_grace: args.shutdown_grace.map(Duration::from_secs),
        default_agent: None,
        role: if args.kubevirt_hook {
            Role::HookSidecar
        } else {
            Role::Standalone
        },
    };
    let (file, text) = match &args.config {
        Some(path) => match config::load_text(path) {
            Ok(loaded) => loaded,
            Err(error) => return config_error(&error),
        },
        None => (GatewayFile::empty(), String::new()),
    };
    let hook_mode = args.kubevirt_hook.then(|| {
        let setup = HookSetup {
            hooks_dir: args.hooks_dir.clone(),
            container_name: args.container_name.clone(),
            add_channel: overrides.agent.is_none() && file.agent.is_none(),
            checks_from_vmi: args.config.is_none(),
        };
        HookMode {
            overrides: Overrides {
                default_agent: setup.add_channel.then(|| setup.agent_address()),
                ..overrides.clone()
            },
            setup,
        }
    });
    let overrides = hook_mode
        .as_ref()
        .map_or(overrides, |mode| mode.overrides.clone());
    let shown = args.config.as_ref().map_or_else(
        || "the command line".to_string(),
        |p| p.display().to_string(),
    );
    let reload = args.config.clone().map(|path| {
        (
            ConfigSource {
                path,
                overrides: overrides.clone(),
            },
            text,
        )
    });
    let settings = match Settings::resolve(file, &overrides) {
        Ok(settings) => settings,
        Err(error) => return resolve_error(shown, error),
    };
    actix_web::rt::System::new().block_on(async move {
        // The gateway runs as a task of its own, and the system's own future only awaits
        // it: tokio's LocalSet polls that future whenever any task on the thread wakes,
        // which would run the gateway's main `select!` on every probe.
        let gateway = actix_web::rt::spawn(async move {
            let app = match Application::build(settings, hook_mode, reload) {
                Ok(app) => app,
                Err(error) => return config_error(&error),
            };
            match app.run_until_stopped().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "the gateway failed");
                    ExitCode::from(EXIT_CHECK_FAILED)
                }
            }
        });
        gateway.await.unwrap_or_else(|error| {
            tracing::error!(%error, "the gateway's task failed");
            ExitCode::from(EXIT_CHECK_FAILED)
        })
    })
}

fn check(args: CheckArgs) -> ExitCode {
    telemetry::init(args.log_format);
    let kind = match args.probe {
        ProbeArg::Readiness => ProbeKind::Readiness,
        ProbeArg::Liveness => ProbeKind::Liveness,
    };
    let overrides = Overrides {
        agent: args.agent,
        libvirt_uri: args.libvirt_uri,
        ..Overrides::default()
    };
    let file = match config::load(&args.config) {
        Ok(file) => file,
        Err(error) => return config_error(&error),
    };
    let settings = match CheckSettings::resolve(file, &overrides) {
        Ok(settings) => settings,
        Err(error) => return resolve_error(args.config.display().to_string(), error),
    };
    let Some(spec) = settings.probe(kind).cloned() else {
        eprintln!(
            "error: {}: {} is not configured",
            args.config.display(),
            kind.field()
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_CHECK_FAILED);
        }
    };
    runtime.block_on(async move {
        let metrics = Arc::new(Metrics::new());
        let agent = crate::probe::spawn_agent(&settings, &metrics);
        // No liveness grace: a one-off check tells what it finds.
        let runner = ProbeRunner::new(kind, spec, agent.clone(), None, Duration::ZERO, metrics);
        let started = Instant::now();
        let report = runner.run().await;
        agent.close().await;
        if report.passed() {
            println!("{kind}: ok ({} ms)", started.elapsed().as_millis());
            ExitCode::SUCCESS
        } else {
            eprintln!("{kind}: {}", report.reason_line());
            ExitCode::from(EXIT_CHECK_FAILED)
        }
    })
}

fn validate(args: ValidateArgs) -> ExitCode {
    match config::load(&args.config) {
        Ok(file) => {
            println!("{}: valid: {}", args.config.display(), file.summary());
            ExitCode::SUCCESS
        }
        Err(error) => config_error(&error),
    }
}
