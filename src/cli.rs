//! The command line: `serve`, `check`, `validate`, `inject`, `openapi`. Every flag also
//! reads `PROBE_GATEWAY_<FLAG>` (`inject`'s, `PROBE_GATEWAY_INJECT_<FLAG>`); a flag wins
//! over its variable, both win over the config file.
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
    self, AgentSetting, CheckSettings, GatewayFile, InjectFile, InjectSettings, LibvirtUri,
    LoadError, Overrides, ProbeKind, ResolveError, Role, Settings,
};
use crate::inject;
use crate::kubevirt::HookSetup;
use crate::kubevirt::hook::HookPlace;
use crate::kubevirt::plugin::PluginSocket;
use crate::metrics::Metrics;
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
    /// Serve /ready, /live, /started and /healthz over HTTP.
    Serve(ServeArgs),
    /// Run one probe's checks once and exit 0 (all passed) or 1 (failed); 2 if it is not configured.
    Check(CheckArgs),
    /// Validate a config file (or VM manifest) and print a one-line summary.
    Validate(ValidateArgs),
    /// Print the HTTP API's OpenAPI document (JSON).
    Openapi,
    /// Serve the mutating admission webhook that puts the gateway into virt-launcher pods (deploy/README.md). Runs the binary virt-probe-gateway-inject installed beside this one: `virt-probe-gateway inject --help` shows its options.
    #[command(disable_help_flag = true)]
    Inject(InjectPassthrough),
}

/// `inject`'s arguments, handed to `virt-probe-gateway-inject` as they are: the webhook is
/// a binary of its own, so that the gateway beside every VM does not carry its HTTPS and
/// Kubernetes types (4 MiB of binary, BENCHMARKS.md).
#[derive(Debug, clap::Args)]
pub struct InjectPassthrough {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<std::ffi::OsString>,
}

/// `virt-probe-gateway-inject`'s command line: [`InjectArgs`].
#[derive(Debug, Parser)]
#[command(
    name = "virt-probe-gateway inject",
    version,
    about = "The mutating admission webhook that puts virt-probe-gateway into virt-launcher pods and points their probes at it"
)]
pub struct InjectCli {
    #[command(flatten)]
    pub args: InjectArgs,
}

/// The webhook's binary, beside this one.
pub const INJECT_BINARY: &str = "virt-probe-gateway-inject";

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file: gateway config, or a KubeVirt VirtualMachine / VirtualMachineInstance manifest (YAML or JSON). Optional with --kubevirt-hook, where the checks come from the VMI.
    #[arg(
        long,
        env = "PROBE_GATEWAY_CONFIG",
        value_name = "FILE",
        required_unless_present_any = ["kubevirt_hook", "kubevirt_plugin", "config_text"]
    )]
    pub config: Option<PathBuf>,
    /// The config itself (YAML or JSON) instead of a file: how the admission webhook gives an injected gateway its checks. Not reloaded.
    #[arg(
        long,
        env = "PROBE_GATEWAY_CONFIG_TEXT",
        value_name = "TEXT",
        conflicts_with = "config"
    )]
    pub config_text: Option<String>,
    /// Run as a KubeVirt hook sidecar: serve KubeVirt's hook gRPC services in --hooks-dir, add a private agent channel to the VM at OnDefineDomain, take the checks from the VMI's probe-gateway.kubevirt.io/probes annotation, and exit 0 at the Shutdown hook.
    #[arg(long, env = "PROBE_GATEWAY_KUBEVIRT_HOOK")]
    pub kubevirt_hook: bool,
    /// Run as a KubeVirt 1.9 plugin sidecar (the Plugins feature gate): serve DomainHookService/MutateDomain on --plugin-socket, add the private agent channel beside it at each definition, take the checks from the VMI (or --config/--config-text). The guest must run a second qemu-ga on org.qemu.guest_agent.1.
    #[arg(
        long,
        env = "PROBE_GATEWAY_KUBEVIRT_PLUGIN",
        conflicts_with = "kubevirt_hook"
    )]
    pub kubevirt_plugin: bool,
    /// The plugin's socket, as the Plugin resource names it and this container mounts it: under /var/run/kubevirt-plugin/<plugin>/, ending in .sock (plugin mode).
    #[arg(long, env = "PROBE_GATEWAY_PLUGIN_SOCKET", value_name = "PATH", default_value = crate::kubevirt::plugin::DEFAULT_PLUGIN_SOCKET)]
    pub plugin_socket: PathBuf,
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
    /// The pod's annotations as a downward API volume writes them (a fieldRef to metadata.annotations), followed live: probe-gateway.kubevirt.io/maintenance or kubevirt.io/pause-guest-agent-probes there pauses the probes for maintenance. The injector sets it.
    #[arg(long, env = "PROBE_GATEWAY_POD_ANNOTATIONS", value_name = "FILE")]
    pub pod_annotations: Option<PathBuf>,
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
    Startup,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Which probe to run.
    #[arg(value_enum)]
    pub probe: ProbeArg,
    #[arg(
        long,
        env = "PROBE_GATEWAY_CONFIG",
        value_name = "FILE",
        required_unless_present = "config_text"
    )]
    pub config: Option<PathBuf>,
    /// The config itself (YAML or JSON): in an injected gateway's container, its own (`kubectl exec ... check liveness`).
    #[arg(
        long,
        env = "PROBE_GATEWAY_CONFIG_TEXT",
        value_name = "TEXT",
        conflicts_with = "config"
    )]
    pub config_text: Option<String>,
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

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// HTTPS address of the webhook (`POST /mutate`).
    #[arg(
        long,
        env = "PROBE_GATEWAY_INJECT_LISTEN",
        value_name = "ADDR",
        default_value = "[::]:8443"
    )]
    pub listen: SocketAddr,
    /// Plain HTTP address of /healthz and /metrics.
    #[arg(
        long,
        env = "PROBE_GATEWAY_INJECT_METRICS_LISTEN",
        value_name = "ADDR",
        default_value = "[::]:8081"
    )]
    pub metrics_listen: SocketAddr,
    /// The serving certificate (PEM, the chain leaf first); read again when it changes.
    #[arg(long, env = "PROBE_GATEWAY_INJECT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long, env = "PROBE_GATEWAY_INJECT_TLS_KEY", value_name = "FILE")]
    pub tls_key: PathBuf,
    /// Settings file (YAML or JSON): image, port, minIntervalSeconds, resources, imagePullSecrets, decisionAnnotation, optOutAnnotation. Flags win over it.
    #[arg(long, env = "PROBE_GATEWAY_INJECT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The gateway image to inject, by digest: REPOSITORY@sha256:HEX.
    #[arg(long, env = "PROBE_GATEWAY_INJECT_IMAGE", value_name = "IMAGE")]
    pub image: Option<String>,
    /// The gateway's port in launcher pods [default: 8190].
    #[arg(long, env = "PROBE_GATEWAY_INJECT_PORT", value_name = "PORT")]
    pub port: Option<u16>,
    /// minIntervalSeconds of injected gateways: the age under which a result is answered again rather than a command run in the guest [default: 1].
    #[arg(
        long,
        env = "PROBE_GATEWAY_INJECT_MIN_INTERVAL_SECONDS",
        value_name = "SECONDS"
    )]
    pub min_interval_seconds: Option<u32>,
    /// An image pull secret to add to launcher pods (repeat, or comma-separated).
    #[arg(
        long = "image-pull-secret",
        env = "PROBE_GATEWAY_INJECT_IMAGE_PULL_SECRETS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub image_pull_secrets: Vec<String>,
    /// The annotation carrying the decision from VMI to pod [default: probe-gateway.kubevirt.io/decision].
    #[arg(
        long,
        env = "PROBE_GATEWAY_INJECT_DECISION_ANNOTATION",
        value_name = "KEY"
    )]
    pub decision_annotation: Option<String>,
    /// The annotation with which a VM or VMI opts out, value "false" [default: probe-gateway.kubevirt.io/inject].
    #[arg(
        long,
        env = "PROBE_GATEWAY_INJECT_OPT_OUT_ANNOTATION",
        value_name = "KEY"
    )]
    pub opt_out_annotation: Option<String>,
    /// The annotation with which a VM or VMI chooses its road, "libvirt" or "plugin", over its namespace's [default: probe-gateway.kubevirt.io/road].
    #[arg(long, env = "PROBE_GATEWAY_INJECT_ROAD_ANNOTATION", value_name = "KEY")]
    pub road_annotation: Option<String>,
    /// The gateway container's CPU request, over the settings file's [default: 5m].
    #[arg(
        long,
        env = "PROBE_GATEWAY_INJECT_REQUESTS_CPU",
        value_name = "QUANTITY"
    )]
    pub requests_cpu: Option<String>,
    /// Its memory request [default: 32Mi].
    #[arg(
        long,
        env = "PROBE_GATEWAY_INJECT_REQUESTS_MEMORY",
        value_name = "QUANTITY"
    )]
    pub requests_memory: Option<String>,
    /// Its CPU limit [default: 100m]; with dedicated CPUs or Guaranteed QoS, the request too.
    #[arg(long, env = "PROBE_GATEWAY_INJECT_LIMITS_CPU", value_name = "QUANTITY")]
    pub limits_cpu: Option<String>,
    /// Its memory limit [default: 64Mi]; with dedicated CPUs or Guaranteed QoS, the request too.
    #[arg(
        long,
        env = "PROBE_GATEWAY_INJECT_LIMITS_MEMORY",
        value_name = "QUANTITY"
    )]
    pub limits_memory: Option<String>,
    #[arg(long, env = "PROBE_GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds to finish in-flight reviews after SIGTERM [default: 5].
    #[arg(
        long,
        env = "PROBE_GATEWAY_INJECT_SHUTDOWN_GRACE",
        value_name = "SECONDS"
    )]
    pub shutdown_grace: Option<u64>,
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
        Command::Inject(passthrough) => run_injector_beside(passthrough.args),
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
        role: if args.kubevirt_hook || args.kubevirt_plugin {
            Role::HookSidecar
        } else {
            Role::Standalone
        },
    };
    let (file, text) = match (&args.config, &args.config_text) {
        (Some(path), _) => match config::load_text(path) {
            Ok(loaded) => loaded,
            Err(error) => return config_error(&error),
        },
        (None, Some(text)) => match config::load_from_text(text) {
            Ok(file) => (file, String::new()),
            Err(error) => return config_error(&error),
        },
        (None, None) => (GatewayFile::empty(), String::new()),
    };
    let place = if args.kubevirt_plugin {
        match PluginSocket::parse(&args.plugin_socket) {
            Ok(socket) => Some(HookPlace::Plugin(socket)),
            Err(why) => {
                eprintln!("error: --plugin-socket: {why}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    } else {
        args.kubevirt_hook.then(|| HookPlace::Sidecar {
            hooks_dir: args.hooks_dir.clone(),
            container_name: args.container_name.clone(),
        })
    };
    let hook_mode = place.map(|place| {
        let setup = HookSetup {
            place,
            add_channel: overrides.agent.is_none() && file.agent.is_none(),
            checks_from_vmi: args.config.is_none() && args.config_text.is_none(),
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
    let shown = match (&args.config, &args.config_text) {
        (Some(path), _) => path.display().to_string(),
        (None, Some(_)) => config::CONFIG_TEXT_SOURCE.to_string(),
        (None, None) => "the command line".to_string(),
    };
    let pod_annotations = args.pod_annotations.clone();
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
            let app = match Application::build(settings, hook_mode, reload, pod_annotations) {
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
        ProbeArg::Startup => ProbeKind::Startup,
    };
    let overrides = Overrides {
        agent: args.agent,
        libvirt_uri: args.libvirt_uri,
        ..Overrides::default()
    };
    let (loaded, shown) = match (&args.config, &args.config_text) {
        (Some(path), _) => (config::load(path), path.display().to_string()),
        (None, Some(text)) => (
            config::load_from_text(text),
            config::CONFIG_TEXT_SOURCE.to_string(),
        ),
        (None, None) => {
            eprintln!("error: give --config FILE or --config-text TEXT");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let file = match loaded {
        Ok(file) => file,
        Err(error) => return config_error(&error),
    };
    let settings = match CheckSettings::resolve(file, &overrides) {
        Ok(settings) => settings,
        Err(error) => return resolve_error(shown, error),
    };
    let Some(spec) = settings.probe(kind).cloned() else {
        eprintln!("error: {shown}: {} is not configured", kind.field());
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
        let started = Instant::now();
        let report = crate::probe::run_once(kind, &spec, &agent, &metrics).await;
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

/// Replaces this process with `virt-probe-gateway-inject ARGS` from this binary's
/// directory (the image installs both in /usr/local/bin).
fn run_injector_beside(args: Vec<std::ffi::OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    let binary = match std::env::current_exe() {
        Ok(this) => this.with_file_name(INJECT_BINARY),
        Err(error) => {
            eprintln!("error: cannot find this binary's directory: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let error = std::process::Command::new(&binary).args(args).exec();
    eprintln!(
        "error: cannot run {}: {error} (`virt-probe-gateway inject` runs the webhook's binary, \
         installed beside this one)",
        binary.display()
    );
    ExitCode::from(EXIT_USAGE)
}

/// Runs `virt-probe-gateway-inject` (`virt-probe-gateway inject`): the webhook until SIGTERM.
pub fn run_inject(args: InjectArgs) -> ExitCode {
    telemetry::init(args.log_format);
    let file = match &args.config {
        Some(path) => {
            let read = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
                path: path.display().to_string(),
                source,
            });
            match read.and_then(|text| {
                config::parse_inject_file(&text).map_err(|errors| LoadError::Invalid {
                    path: path.display().to_string(),
                    errors,
                })
            }) {
                Ok(file) => file,
                Err(error) => return config_error(&error),
            }
        }
        None => InjectFile::default(),
    };
    let flags = match inject_flags(&args) {
        Ok(flags) => flags,
        Err(errors) => {
            for error in errors {
                eprintln!("error: {error}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let settings = match InjectSettings::resolve(file, flags) {
        Ok(settings) => settings,
        Err(errors) => {
            let source = args
                .config
                .as_ref()
                .map_or_else(|| "the command line".into(), |p| p.display().to_string());
            return config_error(&LoadError::Invalid {
                path: source,
                errors,
            });
        }
    };
    let files = inject::CertificateFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certificate = match inject::ReloadingCertificate::load(files, provider) {
        Ok(certificate) => Arc::new(certificate),
        Err(error) => return config_error(&error),
    };
    let listen = inject::Listen {
        webhook: args.listen,
        metrics: args.metrics_listen,
        shutdown_grace: Duration::from_secs(args.shutdown_grace.unwrap_or(5)),
    };
    tracing::info!(
        image = settings.image.as_str(),
        port = settings.port,
        decision_annotation = %settings.decision_annotation,
        "injecting"
    );
    actix_web::rt::System::new().block_on(async move {
        let webhook = actix_web::rt::spawn(inject::run(settings, listen, certificate));
        match webhook.await {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(inject::InjectError::Bind(error))) => config_error(&error),
            Ok(Err(error)) => {
                tracing::error!(%error, "the webhook failed");
                ExitCode::from(EXIT_CHECK_FAILED)
            }
            Err(error) => {
                tracing::error!(%error, "the webhook's task failed");
                ExitCode::from(EXIT_CHECK_FAILED)
            }
        }
    })
}

/// The settings the command line gives, each checked; every bad flag is reported.
fn inject_flags(args: &InjectArgs) -> Result<InjectFile, Vec<String>> {
    let mut errors = Vec::new();
    let image = match args.image.as_deref().map(config::ImageByDigest::parse) {
        Some(Ok(image)) => Some(image),
        Some(Err(why)) => {
            errors.push(format!("--image: {why}"));
            None
        }
        None => None,
    };
    let mut keep = |flag: &str, read: Result<String, String>| {
        read.map_err(|why| errors.push(format!("{flag}: {why}")))
            .ok()
    };
    let decision_annotation = args
        .decision_annotation
        .as_deref()
        .and_then(|text| keep("--decision-annotation", config::annotation_key(text)));
    let opt_out_annotation = args
        .opt_out_annotation
        .as_deref()
        .and_then(|text| keep("--opt-out-annotation", config::annotation_key(text)));
    let road_annotation = args
        .road_annotation
        .as_deref()
        .and_then(|text| keep("--road-annotation", config::annotation_key(text)));
    let mut secrets = Vec::new();
    for name in &args.image_pull_secrets {
        if let Some(name) = keep("--image-pull-secret", config::object_name(name)) {
            secrets.push(name);
        }
    }
    let mut quantity = |flag: &str, text: &Option<String>| {
        text.as_deref().and_then(|text| {
            config::Quantity::parse(text)
                .map_err(|why| errors.push(format!("{flag}: {why}")))
                .ok()
        })
    };
    let resource_flags = config::ResourceFlags {
        requests_cpu: quantity("--requests-cpu", &args.requests_cpu),
        requests_memory: quantity("--requests-memory", &args.requests_memory),
        limits_cpu: quantity("--limits-cpu", &args.limits_cpu),
        limits_memory: quantity("--limits-memory", &args.limits_memory),
    };
    if args.port == Some(0) {
        errors.push("--port: must be at least 1".to_string());
    }
    if args.min_interval_seconds.is_some_and(|s| s > 3600) {
        errors.push("--min-interval-seconds: must be at most 3600".to_string());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(InjectFile {
        image,
        port: args.port,
        min_interval_seconds: args.min_interval_seconds,
        resources: None,
        image_pull_secrets: (!args.image_pull_secrets.is_empty()).then_some(secrets),
        decision_annotation,
        opt_out_annotation,
        road_annotation,
        resource_flags,
    })
}
