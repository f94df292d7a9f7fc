//! The `vla-collector` binary: `validate`, `components`, and a run stopped by SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vla-collector");

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn validate_prints_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "broken.yaml",
        "\
receivers:
  otlp:
    protocols:
      grpc: { endpont: 127.0.0.1:4317 }
exporters:
  prometeus:
  debug:
service:
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
",
    );
    let out = Command::new(BIN)
        .args(["validate", "--config", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let expected = [
        format!(
            "{file}:4: receivers.otlp.protocols.grpc.endpont: unknown field \"endpont\" (did you mean \"endpoint\"?)"
        ),
        format!(
            "{file}:6: exporters.prometeus: unknown exporter type \"prometeus\" (did you mean \"prometheus\"?); valid types: debug, prometheus, prometheusremotewrite"
        ),
        format!(
            "{file}:12: service.pipelines.metrics.exporters[0]: exporter \"prometheus\" is not defined under exporters (did you mean \"prometeus\"?)"
        ),
        format!(
            "warning: {file}:7: exporters.debug: exporter \"debug\" is defined but not used by any pipeline (it will not be started)"
        ),
        format!("config invalid: 3 errors in {file}"),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn validate_ok_prints_a_summary() {
    let out = Command::new(BIN).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The counts are the shipped config's, read by the library rather than copied here.
    let embedded = vla_collector::config::load(None).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "config OK: {} (<embedded configs/collector.yaml>)\n",
            embedded.summary()
        )
    );
    assert!(embedded.summary().starts_with("1 pipeline, 2 receivers"));
    let remote_write = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/collector-remote-write.yaml"
    );
    let out = Command::new(BIN)
        .args(["--config", remote_write, "validate"])
        .env_remove("PROM_RW_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shipped = vla_collector::config::load(Some(std::path::Path::new(remote_write))).unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with(&format!("config OK: {} (", shipped.summary()))
    );
}

#[test]
fn missing_file_and_unset_variable() {
    let out = Command::new(BIN)
        .args(["validate", "--config", "/nonexistent/c.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: cannot load the config: cannot read config file /nonexistent/c.yaml: No such file or directory (os error 2)\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "env.yaml",
        "exporters:\n  prometheusremotewrite:\n    endpoint: ${env:VLA_TEST_UNSET_URL}\n",
    );
    let out = Command::new(BIN)
        .args(["validate", "-c", &file])
        .env_remove("VLA_TEST_UNSET_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.lines().next().unwrap(),
        format!(
            "{file}:3: environment variable VLA_TEST_UNSET_URL is not set (used as \"${{env:VLA_TEST_UNSET_URL}}\"); set it, or give a default: \"${{env:VLA_TEST_UNSET_URL:-value}}\""
        )
    );
}

#[test]
fn components_lists_the_types() {
    let out = Command::new(BIN).arg("components").output().unwrap();
    assert!(out.status.success());
    // Every registered type, from the registry itself (a new type shows without a test edit).
    use vla_collector::config::Kind;
    let expected: String = Kind::ALL
        .into_iter()
        .map(|k| format!("{}: {}\n", k.section(), k.types().join(", ")))
        .collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    assert!(
        expected.contains("processors: aggregate, attributes, batch,"),
        "{expected}"
    );
}

#[test]
fn components_with_a_type_prints_its_example_which_validates() {
    let out = Command::new(BIN)
        .args(["components", "batch"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        example,
        "processors:\n  batch:\n    send_batch_size: 2048\n    timeout: 200ms\n"
    );
    // Pasted into a config, it is valid.
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "example.yaml",
        &format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: 127.0.0.1:0 }}\n\
             {example}exporters:\n  debug:\nservice:\n  pipelines:\n    metrics: \
             {{ receivers: [otlp], processors: [batch], exporters: [debug] }}\n"
        ),
    );
    let out = Command::new(BIN)
        .args(["validate", "--config", &file])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(BIN)
        .args(["components", "bach"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no component type \"bach\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_port_clash_fails_the_run_with_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "clash.yaml",
        &format!(
            "\
receivers:
  otlp:
    protocols:
      http: {{ endpoint: 127.0.0.1:0 }}
exporters:
  prometheus: {{ endpoint: 127.0.0.1:{port} }}
service:
  pipelines:
    metrics: {{ receivers: [otlp], exporters: [prometheus] }}
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
"
        ),
    );
    let out = Command::new(BIN)
        .args(["--config", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!(
            "error: the collector could not start: cannot listen on 127.0.0.1:{port} for exporters.prometheus.endpoint: "
        )),
        "{stderr}"
    );
    assert!(last.to_lowercase().contains("in use"), "{stderr}");
}

/// A config that logs a warning (an unused exporter), then fails to start (a port clash).
fn warn_then_fail(dir: &tempfile::TempDir, port: u16) -> String {
    write(
        dir,
        "warn.yaml",
        &format!(
            "\
receivers:
  otlp:
    protocols:
      http: {{ endpoint: 127.0.0.1:{port} }}
exporters:
  debug:
  debug/unused:
service:
  pipelines:
    metrics: {{ receivers: [otlp], exporters: [debug] }}
  telemetry:
    metrics: {{ address: 127.0.0.1:0 }}
"
        ),
    )
}

#[test]
fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let file = warn_then_fail(&dir, port);
    const ESC: char = '\u{1b}';

    // Into a pipe: plain text.
    let out = Command::new(BIN)
        .args(["--config", &file])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("is defined but not used"), "{stderr}");
    assert!(!stderr.contains(ESC), "colour codes in a pipe: {stderr:?}");

    // On a terminal (util-linux `script` gives the child a pseudo-terminal): colour, unless
    // NO_COLOR is set.
    let on_tty = |no_color: Option<&str>| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &format!("{BIN} --config {file}"), "/dev/null"]);
        match no_color {
            Some(v) => cmd.env("NO_COLOR", v),
            None => cmd.env_remove("NO_COLOR"),
        };
        let out = cmd
            .output()
            .expect("util-linux `script` (apt-get install -y bsdutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tty = on_tty(None);
    assert!(tty.contains("is defined but not used"), "{tty}");
    assert!(tty.contains(ESC), "no colour on a terminal: {tty:?}");
    let plain = on_tty(Some("1"));
    assert!(plain.contains("is defined but not used"), "{plain}");
    assert!(!plain.contains(ESC), "colour despite NO_COLOR: {plain:?}");
}

/// Starts the collector on `file` with its log lines arriving through a channel, so that
/// every wait on them can be bounded.
fn spawn_logged(file: &str) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["--config", file])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// The `addr=` of the log line announcing `setting`.
fn logged_addr(line: &str, setting: &str) -> Option<String> {
    line.contains(&format!("setting={setting} "))
        .then(|| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
        })
        .flatten()
        .map(str::to_owned)
}

fn sigterm(child: &KillOnDrop) {
    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn runs_until_sigterm_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "run.yaml",
        "\
receivers:
  otlp:
    protocols:
      http: { endpoint: 127.0.0.1:0 }
exporters:
  debug:
service:
  pipelines:
    metrics: { receivers: [otlp], exporters: [debug] }
  telemetry:
    metrics: { address: 127.0.0.1:0 }
    logs: { level: info, format: text }
  shutdown_timeout: 5s
",
    );
    let (mut child, lines) = spawn_logged(&file);
    let deadline = Instant::now() + Duration::from_secs(20);
    let next_line = || {
        let left = deadline.saturating_duration_since(Instant::now());
        lines.recv_timeout(left).ok()
    };
    let telemetry = std::iter::from_fn(next_line)
        .find(|line| line.contains("setting=service.telemetry.metrics.address"))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .map(str::to_owned)
        })
        .expect("telemetry address logged within 20 s");
    let client = std::net::TcpStream::connect(&telemetry);
    assert!(
        client.is_ok(),
        "telemetry endpoint {telemetry} accepts connections"
    );
    drop(client);

    sigterm(&child);
    // The reader thread ends when the process closes stderr, i.e. when it exits.
    let rest: Vec<String> = std::iter::from_fn(next_line).collect();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:#?}");
    let log = rest.join("\n");
    for phase in [
        "signal received signal=\"SIGTERM\"",
        "shutdown: stopping receivers",
        "shutdown: receivers stopped; draining pipelines",
        "shutdown: pipelines drained; flushing exporters",
        "shutdown: exporters flushed; stopping the telemetry endpoint",
        "shutdown complete clean=true",
    ] {
        assert!(log.contains(phase), "{phase:?} not in\n{log}");
    }
}

#[test]
fn a_second_signal_stops_a_slow_shutdown_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Remote write to a port where nothing listens: the accepted point is retried until the
    // (long) shutdown deadline, so only a second signal ends the process early.
    let file = write(
        &dir,
        "slow.yaml",
        "\
receivers:
  otlp:
    protocols:
      http: { endpoint: 127.0.0.1:0 }
exporters:
  prometheusremotewrite:
    endpoint: http://127.0.0.1:9/api/v1/write
    retry_on_failure: { initial_interval: 1s, max_interval: 1s, max_elapsed_time: 0 }
service:
  pipelines:
    metrics: { receivers: [otlp], exporters: [prometheusremotewrite] }
  telemetry:
    metrics: { address: 127.0.0.1:0 }
  shutdown_timeout: 60s
",
    );
    let (mut child, lines) = spawn_logged(&file);
    let deadline = Instant::now() + Duration::from_secs(20);
    let next_line = || {
        let left = deadline.saturating_duration_since(Instant::now());
        lines.recv_timeout(left).ok()
    };
    let http = std::iter::from_fn(next_line)
        .find_map(|l| logged_addr(&l, "receivers.otlp.protocols.http.endpoint"))
        .expect("OTLP HTTP address logged");
    // One gauge point in OTLP/JSON, over a plain socket.
    let body = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"asDouble":1,"timeUnixNano":"1767225600000000000"}]}}]}]}]}"#;
    let mut conn = std::net::TcpStream::connect(&http).unwrap();
    use std::io::{Read, Write};
    write!(
        conn,
        "POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    std::iter::from_fn(next_line)
        .find(|l| l.contains("export failed, retrying"))
        .expect("the exporter retries against the missing backend");

    sigterm(&child);
    std::iter::from_fn(next_line)
        .find(|l| l.contains("shutdown: stopping receivers"))
        .expect("shutdown started");
    let second = Instant::now();
    sigterm(&child);
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        second.elapsed() < Duration::from_secs(10),
        "exited at once, not after the deadline"
    );
    let rest: Vec<String> = std::iter::from_fn(next_line).collect();
    assert!(
        rest.iter().any(|l| l.contains("second stop signal")),
        "{rest:#?}"
    );
}
