//! The collector's image and the stack without Docker, checked here without either running:
//! - `Dockerfile`: builds the binaries that exist, copies files that exist, runs as non-root;
//! - `scripts/stack`: parses, answers `--help`, and on an early failure stops what it started
//!   and removes its temporary data dir (run with fake servers; the real run is by hand).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vla_e2e::repo_path as repo;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_dockerfile_builds_the_binaries_that_exist_and_runs_as_non_root() {
    let text = read("Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(
        froms[0].starts_with("FROM rust:") && froms[0].ends_with(" AS builder"),
        "{}",
        froms[0]
    );
    assert!(
        froms[1].contains("debian:") && froms[1].contains("-slim"),
        "{}",
        froms[1]
    );

    // The packages and binaries it builds are the workspace's.
    let out = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["metadata", "--no-deps", "--format-version=1", "--offline"])
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bins: BTreeSet<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(move |t| (p, t)))
        .filter(|(_, t)| t["kind"] == serde_json::json!(["bin"]))
        .map(|(p, t)| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    for (package, bin) in [
        ("vla-collector", "vla-collector"),
        ("vla-sdk", "vla-api-sim"),
    ] {
        assert!(
            bins.contains(&format!("{package} {bin}")),
            "no {bin} in {package}: {bins:?}"
        );
        for needle in [
            format!("-p {package}"),
            format!("--bin {bin}"),
            format!("release/{bin}"),
        ] {
            assert!(text.contains(&needle), "the Dockerfile lacks `{needle}`");
        }
    }

    // Every file it copies from the context exists.
    for l in lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let words: Vec<&str> = l.split_whitespace().skip(1).collect();
        for src in &words[..words.len() - 1] {
            assert!(
                repo(src).exists(),
                "Dockerfile: COPY {src}: not in the repo"
            );
        }
    }
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "USER {user}"
    );
    let expose: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(expose, BTreeSet::from(["4317", "4318", "8888", "9464"]));
    let cmd = lines
        .iter()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD");
    assert_eq!(
        cmd,
        r#"["vla-collector", "--config", "/etc/vla/collector.yaml"]"#
    );
    assert!(text.contains("COPY configs/collector-docker.yaml /etc/vla/collector.yaml"));

    let ignore = read(".dockerignore");
    let ignored: BTreeSet<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .collect();
    assert!(
        ignored.contains("target") && ignored.contains(".git"),
        "{ignore}"
    );
}

#[test]
fn scripts_stack_parses_and_explains_itself() {
    let script = repo("scripts/stack");
    let run = |program: &Path, args: &[&str]| Command::new(program).args(args).output().unwrap();
    let syntax = run(Path::new("bash"), &["-n", script.to_str().unwrap()]);
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let help = run(&script, &["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--scenario",
        "--rate",
        "--data",
        "apt-get install -y prometheus prometheus-alertmanager",
        "cargo build --release -p vla-collector -p vla-sdk",
        "systemctl disable --now prometheus prometheus-alertmanager prometheus-node-exporter",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
    assert_eq!(run(&script, &["--bogus"]).status.code(), Some(2));
}

/// The variables that move scripts/stack's ports.
const STACK_PORT_VARS: [&str; 6] = [
    "VLA_STACK_PROMETHEUS_PORT",
    "VLA_STACK_ALERTMANAGER_PORT",
    "VLA_STACK_OTLP_GRPC_PORT",
    "VLA_STACK_OTLP_HTTP_PORT",
    "VLA_STACK_TELEMETRY_PORT",
    "VLA_STACK_SCRAPE_PORT",
];

/// A scripts/stack run on fakes: the servers, promtool and the release binaries are shell
/// scripts in temp dirs, so nothing real starts and no port is opened.
struct FakeStack {
    dir: tempfile::TempDir,
}

impl FakeStack {
    /// `promtool_ok`: whether the fake promtool accepts the generated config. The fake
    /// Prometheus exits 7 after 0.5 s; the other fakes record their pid and sleep.
    fn new(promtool_ok: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["bin", "target/release", "tmp", "pids"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let pids = dir.path().join("pids");
        let sleeper = |name: &str| {
            format!(
                "#!/bin/sh\necho $$ > '{}/{name}'\nexec sleep 60\n",
                pids.display()
            )
        };
        let fakes = [
            (
                "bin/promtool",
                format!("#!/bin/sh\nexit {}\n", u8::from(!promtool_ok)),
            ),
            (
                "bin/prometheus",
                "#!/bin/sh\nsleep 0.5\nexit 7\n".to_owned(),
            ),
            ("bin/prometheus-alertmanager", sleeper("alertmanager")),
            ("target/release/vla-collector", sleeper("collector")),
            ("target/release/vla-api-sim", sleeper("simulator")),
        ];
        for (path, text) in fakes {
            let path = dir.path().join(path);
            std::fs::write(&path, text).unwrap();
            let mut perm = std::fs::metadata(&path).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
            std::fs::set_permissions(&path, perm).unwrap();
        }
        Self { dir }
    }

    /// Runs scripts/stack on ports free on this machine (the packaged Prometheus and
    /// Alertmanager may hold the defaults).
    fn run(&self) -> (i32, String) {
        self.run_with(&[])
    }

    /// [`Self::run`] with some variables set (after the free ports, so they can move one).
    fn run_with(&self, env: &[(&str, &str)]) -> (i32, String) {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let mut cmd = Command::new(repo("scripts/stack"));
        // Bound together, then released: six distinct ports nothing listens on.
        let held: Vec<std::net::TcpListener> = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        for (var, l) in STACK_PORT_VARS.iter().zip(&held) {
            cmd.env(var, l.local_addr().unwrap().port().to_string());
        }
        drop(held);
        cmd.envs(env.iter().copied());
        let out = cmd
            .env("PATH", path)
            .env("CARGO_TARGET_DIR", self.dir.path().join("target"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap(), stderr)
    }

    /// What is left in the TMPDIR scripts/stack used.
    fn temp_left(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The fakes that started, by name, and whether each still runs.
    fn started(&self) -> BTreeMap<String, bool> {
        std::fs::read_dir(self.dir.path().join("pids"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let pid = std::fs::read_to_string(e.path()).unwrap();
                let alive = Path::new(&format!("/proc/{}", pid.trim())).exists();
                (e.file_name().to_string_lossy().into_owned(), alive)
            })
            .collect()
    }
}

/// A fake that scripts/stack left running (a failing test) is killed, not left behind.
impl Drop for FakeStack {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("pids")) else {
            return;
        };
        for e in entries.flatten() {
            if let Ok(pid) = std::fs::read_to_string(e.path()) {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
        }
    }
}

/// A failure after the temporary data dir exists and before any server starts (promtool
/// rejects the generated prometheus.yml) still removes the dir.
#[test]
fn scripts_stack_removes_its_temp_dir_when_it_fails_before_starting() {
    let fake = FakeStack::new(false);
    let (code, stderr) = fake.run();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("promtool rejects the generated prometheus.yml"),
        "{stderr}"
    );
    assert_eq!(fake.temp_left(), Vec::<String>::new(), "{stderr}");
    assert_eq!(fake.started(), BTreeMap::new(), "{stderr}");
}

/// A server that dies before it is ready stops the stack: every server already started is
/// stopped, and the temporary data dir is removed.
#[test]
fn scripts_stack_stops_what_it_started_when_a_server_dies() {
    let fake = FakeStack::new(true);
    let (code, stderr) = fake.run();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("prometheus exited before it was ready"),
        "{stderr}"
    );
    let started = fake.started();
    assert_eq!(
        started,
        BTreeMap::from([
            ("alertmanager".to_owned(), false),
            ("collector".to_owned(), false),
        ]),
        "{stderr}"
    );
    for name in ["collector", "alertmanager"] {
        assert!(stderr.contains(&format!("stopped {name}")), "{stderr}");
    }
    assert_eq!(fake.temp_left(), Vec::<String>::new(), "{stderr}");
}

/// A port already in use stops the stack before it creates anything, naming the port.
#[test]
fn scripts_stack_refuses_a_port_in_use_and_a_port_that_is_not_a_number() {
    let fake = FakeStack::new(true);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let run = |var: &str, value: &str| fake.run_with(&[(var, value)]);
    let (code, stderr) = run("VLA_STACK_SCRAPE_PORT", &port.to_string());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port} is already in use")),
        "{stderr}"
    );
    let (code, stderr) = run("VLA_STACK_TELEMETRY_PORT", "88a8");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("VLA_STACK_TELEMETRY_PORT must be a port number, got '88a8'"),
        "{stderr}"
    );
    assert_eq!(fake.temp_left(), Vec::<String>::new(), "{stderr}");
    assert_eq!(fake.started(), BTreeMap::new(), "{stderr}");
}
