//! Named checks: `GET /ready` made of five named checks against one, side by side in one
//! run, for guest pings and for exec `true`: latency, and the CPU per probe of the gateway
//! and of the agent (its own threads; an exec's process in the guest is not counted).
//!
//! Four gateways, each with an agent of its own (a listening agent serves one client at a
//! time), are measured in interleaved rounds, so that a neighbour's burst on the shared
//! machine lands in one round of all four rather than in one gateway's figure.

use std::fmt::Write as _;
use std::path::Path;

use crate::agent::QemuGa;
use crate::gateway::{Gateway, cpu_ns};
use crate::http;
use crate::stats::{Samples, us};

/// One probe set up: `count` checks of `handler` in the readiness probe.
struct Setup {
    handler: &'static str,
    count: usize,
    agent: QemuGa,
    gateway: Gateway,
}

/// What one setup measured over the rounds.
pub(crate) struct Row {
    handler: &'static str,
    count: usize,
    latency: Samples,
    /// Per round, ns per probe.
    gateway_cpu: Vec<f64>,
    agent_cpu: Vec<f64>,
}

/// The readiness probe made of `count` named checks of `handler`.
fn config(handler: &str, count: usize) -> String {
    let check = match handler {
        "guestAgentPing" => "guestAgentPing: {}",
        _ => "exec: {command: [\"true\"]}",
    };
    let names: Vec<String> = (0..count).map(|i| format!("c{i}")).collect();
    let mut text = String::from("checks:\n");
    for name in &names {
        let _ = writeln!(text, "  {name}: {{{check}, timeoutSeconds: 5}}");
    }
    let _ = writeln!(text, "readinessProbe:\n  checks: [{}]", names.join(", "));
    text
}

/// `probes` new-connection `GET /ready` per setup for pings and `execs` for exec, in
/// `rounds` interleaved rounds.
pub(crate) fn run(binary: &Path, probes: usize, execs: usize, rounds: usize) -> Vec<Row> {
    let setups: Vec<Setup> = [
        ("guestAgentPing", 1),
        ("guestAgentPing", 5),
        ("exec", 1),
        ("exec", 5),
    ]
    .into_iter()
    .map(|(handler, count)| {
        let agent = QemuGa::start();
        let gateway = Gateway::start(binary, &config(handler, count), &agent.socket(), None);
        Setup {
            handler,
            count,
            agent,
            gateway,
        }
    })
    .collect();
    let mut rows: Vec<Row> = setups
        .iter()
        .map(|setup| Row {
            handler: setup.handler,
            count: setup.count,
            latency: Samples::default(),
            gateway_cpu: Vec::new(),
            agent_cpu: Vec::new(),
        })
        .collect();
    let ready = |setup: &Setup| {
        assert_eq!(
            http::get_once(setup.gateway.address, "/ready").expect("GET /ready"),
            200
        );
    };
    // Warm-up: connections, page cache, the agent's first commands.
    for setup in &setups {
        for _ in 0..20 {
            ready(setup);
        }
    }
    let rounds = rounds.max(1);
    for _ in 0..rounds {
        for (setup, row) in setups.iter().zip(rows.iter_mut()) {
            let count = match setup.handler {
                "guestAgentPing" => probes,
                _ => execs,
            } / rounds;
            let count = count.max(1);
            let gateway_before = setup.gateway.cpu_ns();
            let agent_before = cpu_ns(setup.agent.pid());
            row.latency.extend(crate::timed(0, count, || ready(setup)));
            row.gateway_cpu
                .push((setup.gateway.cpu_ns() - gateway_before) as f64 / count as f64);
            row.agent_cpu
                .push((cpu_ns(setup.agent.pid()) - agent_before) as f64 / count as f64);
        }
    }
    rows
}

fn median(values: &[f64]) -> f64 {
    crate::spread(values).0
}

/// The table for BENCHMARKS.md.
pub(crate) fn tables(report: &mut String, rows: &[Row]) {
    crate::table(
        report,
        "Named checks: `GET /ready` of five checks against one",
        &[
            "Checks",
            "p50",
            "p99",
            "p50 ÷ one check's",
            "gateway CPU per probe",
            "÷ one check's",
            "agent CPU per probe",
            "÷ one check's",
        ],
        1,
    );
    for row in rows {
        let one = rows
            .iter()
            .find(|other| other.handler == row.handler && other.count == 1)
            .unwrap_or(row);
        let (gateway, agent) = (median(&row.gateway_cpu), median(&row.agent_cpu));
        let _ = writeln!(
            report,
            "| {} × {} | {} | {} | {:.2}× | {:.1} µs | {:.2}× | {:.1} µs | {:.2}× |",
            row.count,
            match row.handler {
                "guestAgentPing" => "`guestAgentPing`",
                _ => "exec `true`",
            },
            us(row.latency.p50()),
            us(row.latency.p99()),
            row.latency.p50().as_secs_f64() / one.latency.p50().as_secs_f64().max(1e-9),
            gateway / 1e3,
            gateway / median(&one.gateway_cpu).max(1.0),
            agent / 1e3,
            agent / median(&one.agent_cpu).max(1.0),
        );
    }
    let _ = writeln!(
        report,
        "\nEach probe is a new connection, as kubelet's; the checks of a probe run together. \
         CPU figures are medians over interleaved rounds; the agent's are its own threads \
         (an exec's process in the guest is not counted)."
    );
}
