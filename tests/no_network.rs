//! advscan never touches the network (issue 7, "Patient data"): scans are
//! patient data, and a tool that may open a connection cannot be run on them
//! in a hospital.
//!
//! - A full attack (CT DICOM, every report, `--save-adversarial`) under
//!   `strace -f -e trace=network` makes no network system call at all: no
//!   socket of any family. AF_UNIX counts too: advscan needs no IPC, and an
//!   AF_UNIX socket from glibc would mean a name-service lookup (nscd), which
//!   nothing in a run should make. strace is required when `CI` is set; without
//!   it, the test is skipped loudly. A control run of a socket-opening helper
//!   shows the trace and its parsing see sockets when there are some.
//! - The same attack succeeds inside a user + network namespace with no
//!   interface (`unshare -rn`) and gives the same per-sample results as outside
//!   (skipped loudly where unprivileged namespaces are not allowed, which is
//!   common in containers).
//! - `Cargo.lock` holds no HTTP, TLS, RPC, DNS, telemetry or async-network crate
//!   ([`DENIED`]): nothing in the dependency tree can phone home.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODEL: &str = "models/ct_nodule_cnn.onnx";

/// Three synthetic CT slices (two classes) in `dir/data`.
fn ct_data(dir: &Path) -> PathBuf {
    use advscan::io::dicom_write::{CtSliceSpec, write_ct_slice};
    let data = dir.join("data");
    for (class, nodule, seeds) in [("normal", false, &[31u64, 32][..]), ("nodule", true, &[33][..])] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for &seed in seeds {
            let spec = CtSliceSpec::ct(64, advscan::synthetic::ct_slice(64, seed, nodule), seed);
            write_ct_slice(&data.join(class).join(format!("slice_{seed}.dcm")), &spec).unwrap();
        }
    }
    data
}

/// The arguments of a full attack of `data` into `out`.
fn attack_args(data: &Path, out: &Path) -> Vec<String> {
    [
        "attack",
        "--model",
        MODEL,
        "--data",
        data.to_str().unwrap(),
        "--attack",
        "fgsm,pgd",
        "--eps",
        "5HU,20HU",
        "--steps",
        "3",
        "--min-eps",
        "--save-adversarial",
        "3",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn run(program: &str, args: &[String]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn results(out: &Path) -> Value {
    let bytes = std::fs::read(out.join("results.json")).expect("results.json written");
    serde_json::from_slice(&bytes).expect("results.json is JSON")
}

/// `v` without its wall-clock fields (`seconds`), which differ between any two runs.
fn without_timing(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| k.as_str() != "seconds").map(|(k, v)| (k.clone(), without_timing(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_timing).collect()),
        other => other.clone(),
    }
}

/// Checks that a full run wrote its reports and every saved file.
fn assert_complete(o: &Output, out: &Path) {
    assert_eq!(o.status.code(), Some(0), "expected the attack to succeed: {}", text(&o.stderr));
    for f in ["results.json", "report.html", "summary.md", "junit.xml"] {
        assert!(out.join(f).is_file(), "expected {f} in {}", out.display());
    }
    let saved = std::fs::read_dir(out.join("adversarial")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(saved, 3, "expected 3 saved adversarial files (--save-adversarial 3)");
}

/// A tool the test needs: present, or (without `CI`) a loud skip.
fn have(tool: &str, args: &[&str]) -> bool {
    let ok = Command::new(tool).args(args).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "expected {tool} to work since CI is set (.ci/run installs it)");
        eprintln!("\n!!!!!!!! SKIPPING the network check: {tool} is not available or not allowed here !!!!!!!!\n");
    }
    ok
}

/// The system calls of an strace log written with `-e trace=network`: every
/// line but signals (`---`), exits (`+++`) and strace's own notes is one.
fn network_calls(log: &str) -> Vec<String> {
    log.lines()
        .map(|l| l.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start())
        .filter(|l| !l.is_empty() && !l.starts_with("---") && !l.starts_with("+++") && !l.starts_with("strace:"))
        .map(String::from)
        .collect()
}

/// Runs `program args` under `strace -f -e trace=network`; returns its output and the calls seen.
fn traced(tmp: &Path, name: &str, program: &str, args: &[String]) -> (Output, Vec<String>) {
    let log = tmp.join(format!("{name}.strace"));
    let mut full = ["-f", "-qq", "-e", "trace=network", "-e", "signal=none", "-o"].map(String::from).to_vec();
    full.push(log.to_str().unwrap().into());
    full.push(program.into());
    full.extend_from_slice(args);
    let o = run("strace", &full);
    let calls = network_calls(&std::fs::read_to_string(&log).unwrap_or_default());
    (o, calls)
}

/// Not a test of its own: the socket-opening program of the strace control
/// (run as `CURRENT_EXE --ignored --exact …`).
#[test]
#[ignore = "helper for a_full_attack_makes_no_network_system_call"]
fn helper_opens_a_udp_socket() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
    drop(socket);
}

#[test]
fn a_full_attack_makes_no_network_system_call() {
    if !have("strace", &["-V"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // Control: strace works here (ptrace is allowed) and the log shows a socket when one is opened.
    let me = std::env::current_exe().unwrap();
    let helper = ["--ignored", "--exact", "helper_opens_a_udp_socket", "--test-threads", "1"].map(String::from);
    let (o, calls) = traced(tmp.path(), "control", me.to_str().unwrap(), &helper);
    if !o.status.success() {
        assert!(std::env::var_os("CI").is_none(), "expected strace to trace under CI: {}", text(&o.stderr));
        eprintln!("\n!!!!!!!! SKIPPING the network check: strace cannot trace here: {} !!!!!!!!\n", text(&o.stderr));
        return;
    }
    assert!(
        calls.iter().any(|c| c.starts_with("socket(AF_INET")) && calls.iter().any(|c| c.starts_with("bind(")),
        "expected the control's socket and bind in its trace: {calls:?}"
    );

    let data = ct_data(tmp.path());
    let out = tmp.path().join("out");
    let (o, calls) = traced(tmp.path(), "attack", env!("CARGO_BIN_EXE_advscan"), &attack_args(&data, &out));
    assert_complete(&o, &out);
    assert!(calls.is_empty(), "expected no network system call in a full attack, strace saw:\n{}", calls.join("\n"));
}

#[test]
fn a_full_attack_succeeds_without_network_interfaces() {
    // `unshare -rn`: a new user namespace (so no privilege is needed) and a
    // network namespace whose only interface is a loopback that is down.
    let probe = run("unshare", &["-rn", "cat", "/proc/net/dev"].map(String::from));
    if !probe.status.success() {
        eprintln!(
            "\n!!!!!!!! SKIPPING the no-interface run: unshare -rn is not allowed here: {} !!!!!!!!\n",
            text(&probe.stderr).trim()
        );
        return;
    }
    // /proc/net/dev: two header lines, then one line per interface.
    let interfaces: Vec<String> =
        text(&probe.stdout).lines().skip(2).filter_map(|l| l.split(':').next().map(|n| n.trim().to_string())).collect();
    assert_eq!(interfaces, ["lo"], "expected only the loopback interface in the new namespace");

    let tmp = tempfile::tempdir().unwrap();
    let data = ct_data(tmp.path());
    let (isolated, open) = (tmp.path().join("isolated"), tmp.path().join("open"));
    let mut args = vec!["-rn".to_string(), env!("CARGO_BIN_EXE_advscan").to_string()];
    args.extend(attack_args(&data, &isolated));
    let o = run("unshare", &args);
    assert_complete(&o, &isolated);
    let o = run(env!("CARGO_BIN_EXE_advscan"), &attack_args(&data, &open));
    assert_complete(&o, &open);
    // Same seed, same data: the measurement does not depend on the network being there.
    let (a, b) = (results(&isolated), results(&open));
    for key in ["samples", "runs", "checks"] {
        let (a, b) = (without_timing(&a[key]), without_timing(&b[key]));
        assert_eq!(a, b, "expected the same {key} with and without network interfaces");
    }
}

/// Crates whose presence in `Cargo.lock` means something in the tree can talk
/// to the network, with why. `Cargo.lock` records no features, so an async
/// runtime that *may* have networking compiled in (tokio, async-std, smol) is
/// denied as a whole: advscan is synchronous (rayon threads) and a runtime
/// arriving with a new dependency deserves a look. Logging and metrics facades
/// (`log`, `tracing`, `metrics`) stay: they do nothing without a subscriber or
/// exporter, and the exporters are denied.
const DENIED: &[(&str, &str)] = &[
    ("reqwest", "HTTP client"),
    ("hyper", "HTTP client/server"),
    ("h2", "HTTP/2"),
    ("h3", "HTTP/3"),
    ("quinn", "QUIC"),
    ("ureq", "HTTP client"),
    ("curl", "HTTP client (libcurl)"),
    ("curl-sys", "HTTP client (libcurl)"),
    ("isahc", "HTTP client"),
    ("attohttpc", "HTTP client"),
    ("surf", "HTTP client"),
    ("http-client", "HTTP client"),
    ("minreq", "HTTP client"),
    ("ehttp", "HTTP client"),
    ("awc", "HTTP client"),
    ("tiny_http", "HTTP server"),
    ("axum", "HTTP server"),
    ("warp", "HTTP server"),
    ("rouille", "HTTP server"),
    ("tonic", "gRPC"),
    ("tungstenite", "WebSocket"),
    ("websocket", "WebSocket"),
    ("native-tls", "TLS: only needed to connect somewhere"),
    ("rustls", "TLS: only needed to connect somewhere"),
    ("webpki-roots", "TLS root certificates"),
    ("openssl-probe", "TLS certificate discovery"),
    ("socket2", "raw sockets"),
    ("tokio", "async runtime, possibly with networking"),
    ("async-std", "async runtime with networking"),
    ("smol", "async runtime with networking"),
    ("async-net", "async networking"),
    ("trust-dns-resolver", "DNS"),
    ("hickory-resolver", "DNS"),
    ("hickory-proto", "DNS"),
    ("sentry", "crash reporting over the network"),
    ("opentelemetry-otlp", "telemetry export"),
    ("prometheus", "metrics server"),
    ("update-informer", "checks for new versions online"),
    ("self_update", "downloads new versions"),
    ("git2", "git, including fetching"),
    ("lettre", "e-mail"),
    ("ssh2", "SSH"),
];

/// Name prefixes of crate families that are networking as a whole.
const DENIED_PREFIXES: &[&str] = &[
    "hyper-",
    "reqwest-",
    "tokio-",
    "actix-",
    "opentelemetry",
    "hickory-",
    "trust-dns-",
    "metrics-exporter-",
    "sentry-",
];

/// The `name = "…"` of every `[[package]]` in a Cargo.lock.
fn locked_crates(lock: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_package = false;
    for line in lock.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[[package]]";
        } else if in_package && let Some(name) = line.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')) {
            names.push(name.to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

fn denied(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| {
            let why =
                DENIED.iter().find(|(d, _)| d == n).map(|(_, why)| *why).or_else(|| {
                    DENIED_PREFIXES.iter().any(|p| n.starts_with(p)).then_some("a networking crate family")
                })?;
            Some(format!("{n}: {why}"))
        })
        .collect()
}

#[test]
fn no_network_crate_in_the_dependency_tree() {
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).expect("Cargo.lock is committed");
    let names = locked_crates(&lock);
    // The parser sees the tree: our own crate and the ones we know we use.
    for known in ["advscan", "tract-onnx", "dicom-object", "image", "serde_json"] {
        assert!(names.iter().any(|n| n == known), "expected {known} in Cargo.lock's packages: {names:?}");
    }
    // And the deny list catches what it should.
    let probe =
        locked_crates("[[package]]\nname = \"reqwest\"\n\n[[package]]\nname = \"tokio-rustls\"\n\n[metadata]\n");
    assert_eq!(denied(&probe).len(), 2, "expected the deny list to catch reqwest and tokio-rustls: {probe:?}");
    let found = denied(&names);
    assert!(found.is_empty(), "expected no networking crate in Cargo.lock, found:\n{}", found.join("\n"));
}
