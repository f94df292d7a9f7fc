//! The `vla-api-sim` binary's log output: colour only on a terminal, never with `NO_COLOR`.

#![cfg(feature = "simulator")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vla-api-sim");
const ESC: char = '\u{1b}';

/// One simulated second against a port nobody listens on: it logs its start (INFO) and the
/// failed export (WARN).
fn args() -> Vec<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    [
        "--endpoint",
        &format!("http://127.0.0.1:{port}"),
        "--duration",
        "1s",
        "--unpaced",
        "--rate",
        "5",
        "--export-interval",
        "1h",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let out = Command::new(BIN)
        .args(args())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("simulating"), "{stderr}");
    assert!(!stderr.contains(ESC), "colour codes in a pipe: {stderr:?}");

    // util-linux `script` runs the simulator on a pseudo-terminal.
    let on_tty = |no_color: Option<&str>| {
        let line = std::iter::once(BIN.to_owned())
            .chain(args())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]);
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
    assert!(tty.contains("simulating"), "{tty}");
    assert!(tty.contains(ESC), "no colour on a terminal: {tty:?}");
    let plain = on_tty(Some("1"));
    assert!(plain.contains("simulating"), "{plain}");
    assert!(!plain.contains(ESC), "colour despite NO_COLOR: {plain:?}");
}
