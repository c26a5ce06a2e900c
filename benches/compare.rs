//! sandgate beside OPA on the same Rego files, over HTTPS, the way an apiserver calls
//! an admission webhook (issue 6). Both servers get the shipped policies with one
//! setting (`allowedRegistries: [docker.io]`, so a pod can be denied by a policy both
//! evaluate); OPA serves them through `bench/opa/webhook.rego` on its v0 data API.
//! Agreement comes first: every request of every workload is sent to both and the
//! answers (allowed, message, warnings, the patched object) must be identical. Then
//! each case runs sandgate and OPA in turns (A B A B ...), and the pooled results go
//! to BENCHMARKS.md (between the `compare` markers) and `bench/compare.svg`.
//!
//! Run: scripts/bench-vs-opa.sh (builds OPA, then `cargo bench --bench compare`).
//! Two measurements: saturation (each connection sends its next request as soon as the
//! answer arrives: the most a server does, and the throughput ratio), and the DESIGN.md
//! §7 operating point (64 connections offering 5,000 reviews/s in total: the latency a
//! cluster sees at that rate).
//!
//! Env: OPA (the binary; required), SECONDS per run (5), ROUNDS (2), CONNECTIONS
//! ("1,16,64"), RATE of the operating point (5000), MAX_REQUESTS per run (2,000,000),
//! WRITE (1: update the files).

#[allow(dead_code)]
mod loadgen;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use loadgen::versus::{Servers, Workload, requests, root, workloads};
use loadgen::{Load, Report, Target};

fn version_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem} GiB, Linux {}; load average at start {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

#[derive(Default)]
struct Cell {
    runs: Vec<Report>,
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let opa = PathBuf::from(
        std::env::var("OPA").expect("OPA=path to the opa binary (scripts/bench-vs-opa.sh sets it)"),
    );
    let seconds: u64 = loadgen::env_or("SECONDS", 5);
    let rounds: usize = loadgen::env_or("ROUNDS", 2);
    let max_requests: u64 = loadgen::env_or("MAX_REQUESTS", 2_000_000);
    let write: u8 = loadgen::env_or("WRITE", 1);
    let rate: f64 = loadgen::env_or("RATE", 5000.0);
    let conns: Vec<usize> = std::env::var("CONNECTIONS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();

    let servers = Servers::start(std::path::Path::new(env!("CARGO_BIN_EXE_sandgate")), &opa);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    // Agreement first: speed only counts where the answers are the same.
    let workloads = workloads();
    for w in &workloads {
        for (hook, review) in &w.calls {
            let a = rt.block_on(servers.agree(hook, review));
            println!(
                "agree: {} /{hook}: allowed={} warnings={} patched={}",
                w.name,
                a["allowed"],
                a["warnings"].as_array().map_or(0, |v| v.len()),
                a["object"] != review["request"]["object"]
            );
        }
    }
    assert!(
        workloads.iter().any(|w| rt
            .block_on(servers.agree("validate", &w.calls[w.calls.len() - 1].1))["allowed"]
            == false),
        "the denied workload is denied"
    );
    let targets = [
        (
            "sandgate",
            Target {
                addr: &servers.sandgate_addr,
                tls: &servers.tls,
                pid: servers.sandgate.id(),
            },
        ),
        (
            "OPA",
            Target {
                addr: &servers.opa_addr,
                tls: &servers.tls,
                pid: servers.opa.id(),
            },
        ),
    ];

    // Measure in turns: for each case, sandgate then OPA, ROUNDS times.
    let mut cells: Vec<Vec<[Cell; 2]>> = workloads
        .iter()
        .map(|_| conns.iter().map(|_| Default::default()).collect())
        .collect();
    for (ci, &n) in conns.iter().enumerate() {
        for (wi, w) in workloads.iter().enumerate() {
            for round in 0..rounds {
                for (si, (name, target)) in targets.iter().enumerate() {
                    let reqs = requests(w, si == 1);
                    let load = Load {
                        connections: n,
                        duration: Duration::from_secs(seconds),
                        max_requests,
                        rate: None,
                    };
                    let r = loadgen::run(&rt, target, &reqs, &load);
                    progress(name, w.name, &format!("{n:>2} conns"), round, &r);
                    cells[wi][ci][si].runs.push(r);
                }
            }
        }
    }
    // The operating point: 64 connections at a fixed total rate, in turns again.
    let mut op: Vec<[Cell; 2]> = workloads.iter().map(|_| Default::default()).collect();
    for (wi, w) in workloads.iter().enumerate() {
        for round in 0..rounds {
            for (si, (name, target)) in targets.iter().enumerate() {
                let load = Load {
                    connections: 64,
                    duration: Duration::from_secs(seconds),
                    max_requests,
                    rate: Some(rate),
                };
                let r = loadgen::run(&rt, target, &requests(w, si == 1), &load);
                progress(name, w.name, &format!("64 conns at {rate:.0}/s"), round, &r);
                op[wi][si].runs.push(r);
            }
        }
    }
    drop(servers);

    let versions = format!(
        "sandgate {} (regorus 0.14, {}), OPA {} ({})",
        env!("CARGO_PKG_VERSION"),
        version_line("rustc", &["--version"]),
        version_line(opa.to_str().unwrap_or("opa"), &["version"]).trim_start_matches("Version: "),
        version_line("go", &["version"]),
    );
    let run = Run {
        seconds,
        rounds,
        rate,
        machine: machine(),
        versions,
    };
    let md = report(&workloads, &conns, &cells, &op, &run);
    println!("\n{md}");
    if write == 1 {
        let svg = plot(&workloads, &conns, &cells);
        let svg_path = root().join("bench/compare.svg");
        std::fs::write(&svg_path, svg).expect("write the plot");
        let bench_md = root().join("BENCHMARKS.md");
        let old = std::fs::read_to_string(&bench_md).unwrap_or_default();
        let (begin, end) = ("<!-- compare:begin -->", "<!-- compare:end -->");
        let new = match (old.find(begin), old.find(end)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{begin}\n{md}{}", &old[..b], &old[e..])
            }
            _ => format!("{old}\n{begin}\n{md}{end}\n"),
        };
        std::fs::write(&bench_md, new).expect("write BENCHMARKS.md");
        println!("wrote {} and {}", bench_md.display(), svg_path.display());
    }
}

/// One line per run, as it finishes.
fn progress(server: &str, workload: &str, case: &str, round: usize, r: &Report) {
    println!(
        "{server:<9} {workload:<8} {case} round {}: {:>7.0} reviews/s p50 {:.2} ms p99 {:.2} ms errors {} RSS {:.1} MiB",
        round + 1,
        r.throughput(),
        r.quantile_ms(0.5),
        r.quantile_ms(0.99),
        r.errors,
        r.rss_peak_kib as f64 / 1024.0
    );
    let _ = std::io::stdout().flush();
}

/// How the measurements were taken, for the report's header.
struct Run {
    seconds: u64,
    rounds: usize,
    rate: f64,
    machine: String,
    versions: String,
}

fn lat(r: &Report) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} ms",
        r.quantile_ms(0.5),
        r.quantile_ms(0.9),
        r.quantile_ms(0.99)
    )
}

fn rss(r: &Report) -> String {
    format!(
        "{:.1} ({:.1}) MiB",
        r.rss_peak_kib as f64 / 1024.0,
        r.rss_end_kib as f64 / 1024.0
    )
}

fn lat_max(r: &Report) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} / {:.1} ms",
        r.quantile_ms(0.5),
        r.quantile_ms(0.9),
        r.quantile_ms(0.99),
        r.max_ms()
    )
}

fn report(
    workloads: &[Workload],
    conns: &[usize],
    cells: &[Vec<[Cell; 2]>],
    op: &[[Cell; 2]],
    run: &Run,
) -> String {
    let Run {
        seconds,
        rounds,
        rate,
        ref machine,
        ref versions,
    } = *run;
    let date = version_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = version_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let mut md = String::new();
    md.push_str(&format!(
        "Generated by `scripts/bench-vs-opa.sh` on {date}: {rounds} rounds of {seconds} s per \
         case and server, sandgate and OPA in turns, at commit {commit}. Machine: {machine}. \
         Versions: {versions}.\n\n"
    ));
    md.push_str("### Saturation: each connection sends as soon as it has its answer\n\n");
    md.push_str("| workload | conns | sandgate reviews/s | OPA reviews/s | **ratio** | sandgate p50 / p90 / p99 / max | OPA p50 / p90 / p99 / max | errors s / O | RSS peak (end) s / O |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let mut verdicts = Vec::new();
    for (wi, w) in workloads.iter().enumerate() {
        for (ci, &n) in conns.iter().enumerate() {
            let [s, o] = &cells[wi][ci];
            let (ps, po) = (Report::pooled(&s.runs), Report::pooled(&o.runs));
            let spread = |c: &Cell| {
                c.runs
                    .iter()
                    .map(|r| format!("{:.0}", r.throughput()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let ratio = ps.throughput() / po.throughput().max(1e-9);
            md.push_str(&format!(
                "| {} | {n} | {:.0} ({}) | {:.0} ({}) | **{ratio:.2}×** | {} | {} | {} / {} | {} / {} |\n",
                w.label,
                ps.throughput(),
                spread(s),
                po.throughput(),
                spread(o),
                lat_max(&ps),
                lat_max(&po),
                ps.errors,
                po.errors,
                rss(&ps),
                rss(&po),
            ));
            if n == 64 {
                verdicts.push(format!(
                    "- {}: sandgate serves {ratio:.2}× OPA's throughput at 64 connections (≥ 2×: {}); saturated, its p99 is {:.2} ms.",
                    w.label,
                    if ratio >= 2.0 { "**met**" } else { "**not met**" },
                    ps.quantile_ms(0.99),
                ));
            }
        }
    }
    md.push_str(
        "\nreviews/s counts webhook calls (a pod admission is two: mutate, then validate); \
         the figures in brackets are the single rounds. Latency is per call, client side, \
         pooled over the rounds. RSS is the server's resident set: the peak sampled every 50 ms during a run (and at its end).\n\n",
    );
    md.push_str(&format!(
        "### DESIGN §7 operating point: 64 connections offering {rate:.0} reviews/s in total\n\n\
         Requests leave on a fixed schedule; latency counts from when a request was due.\n\n\
         | workload | sandgate reviews/s | OPA reviews/s | sandgate p50 / p90 / p99 | OPA p50 / p90 / p99 | max s / O | errors s / O | RSS peak (end) s / O |\n\
         |---|---|---|---|---|---|---|---|\n"
    ));
    for (wi, w) in workloads.iter().enumerate() {
        let [s, o] = &op[wi];
        let (ps, po) = (Report::pooled(&s.runs), Report::pooled(&o.runs));
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {} | {} | {:.1} / {:.1} ms | {} / {} | {} / {} |\n",
            w.label,
            ps.throughput(),
            po.throughput(),
            lat(&ps),
            lat(&po),
            ps.max_ms(),
            po.max_ms(),
            ps.errors,
            po.errors,
            rss(&ps),
            rss(&po),
        ));
        let met = ps.throughput() >= rate * 0.98
            && ps.quantile_ms(0.99) < 5.0
            && ps.errors == 0
            && ps.rss_peak_kib < 64 * 1024;
        verdicts.push(format!(
            "- {}: DESIGN §7 at 64 connections and {rate:.0}/s (p99 < 5 ms, 0 errors, < 64 MiB) {}.",
            w.label,
            if met { "**met**" } else { "**not met**" },
        ));
    }
    md.push('\n');
    md.push_str(&verdicts.join("\n"));
    md.push_str("\n\n![latency percentiles against concurrency](bench/compare.svg)\n\n");
    md
}

/// Latency percentiles against concurrency, one panel per workload, log scale.
fn plot(workloads: &[Workload], conns: &[usize], cells: &[Vec<[Cell; 2]>]) -> String {
    let (pw, ph, left, top, gap) = (300.0, 260.0, 70.0, 60.0, 80.0);
    let width = left + workloads.len() as f64 * (pw + gap);
    let height = top + ph + 90.0;
    let mut all: Vec<f64> = Vec::new();
    let series: Vec<Vec<[[f64; 3]; 2]>> = cells
        .iter()
        .map(|row| {
            row.iter()
                .map(|pair| {
                    let q = |c: &Cell| {
                        let p = Report::pooled(&c.runs);
                        [p.quantile_ms(0.5), p.quantile_ms(0.9), p.quantile_ms(0.99)]
                    };
                    [q(&pair[0]), q(&pair[1])]
                })
                .collect()
        })
        .collect();
    for row in &series {
        for pair in row {
            for s in pair {
                all.extend(s.iter().copied().filter(|v| *v > 0.0));
            }
        }
    }
    let lo = all.iter().copied().fold(f64::MAX, f64::min).max(0.001);
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (ylo, yhi) = (lo.log10().floor(), hi.log10().ceil());
    let y = |v: f64| top + ph - (v.max(10f64.powf(ylo)).log10() - ylo) / (yhi - ylo) * ph;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"14\">Latency per webhook call at saturation (each connection sends when answered), log scale: sandgate and OPA on the same policies</text>\n"
    );
    let colours = ["#1f6fb4", "#e0701b"];
    let dashes = ["", "6 3", "2 3"];
    for (wi, w) in workloads.iter().enumerate() {
        let x0 = left + wi as f64 * (pw + gap);
        let x = |ci: usize| x0 + 20.0 + ci as f64 * (pw - 40.0) / (conns.len().max(2) - 1) as f64;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\n<rect x=\"{x0}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>\n",
            x0 + pw / 2.0,
            top - 12.0,
            w.name
        ));
        let mut e = ylo;
        while e <= yhi {
            let v = 10f64.powf(e);
            let label = if e >= 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.*}", (-e) as usize)
            };
            svg.push_str(&format!(
                "<line x1=\"{x0}\" x2=\"{}\" y1=\"{yy}\" y2=\"{yy}\" stroke=\"#ddd\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label} ms</text>\n",
                x0 + pw,
                x0 - 4.0,
                y(v) + 4.0,
                yy = y(v)
            ));
            e += 1.0;
        }
        for (ci, n) in conns.iter().enumerate() {
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{n}</text>\n",
                x(ci),
                top + ph + 16.0
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">connections</text>\n",
            x0 + pw / 2.0,
            top + ph + 32.0
        ));
        for si in 0..2 {
            for (qi, dash) in dashes.iter().enumerate() {
                let points: Vec<String> = (0..conns.len())
                    .map(|ci| format!("{:.1},{:.1}", x(ci), y(series[wi][ci][si][qi])))
                    .collect();
                svg.push_str(&format!(
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>\n",
                    points.join(" "),
                    colours[si]
                ));
            }
        }
    }
    // Legend.
    let ly = top + ph + 58.0;
    let mut lx = left;
    for (si, name) in ["sandgate", "OPA"].iter().enumerate() {
        for (qi, q) in ["p50", "p90", "p99"].iter().enumerate() {
            svg.push_str(&format!(
                "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\"/><text x=\"{}\" y=\"{}\">{name} {q}</text>\n",
                lx + 30.0,
                colours[si],
                dashes[qi],
                lx + 35.0,
                ly + 4.0
            ));
            lx += 130.0;
        }
    }
    svg.push_str("</svg>\n");
    svg
}
