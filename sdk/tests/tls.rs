//! TLS to the collector (feature `tls`): a server certificate signed by a CA the test makes
//! with the `openssl` command, verified through `tls_ca_file`; mutual TLS with a client
//! certificate; and a refusal when the CA is not trusted.

#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Collector, blocking};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use vla_sdk::Tier;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl not runnable ({e}); run scripts/test or `apt-get install -y openssl`")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 private key in `dir/file`.
fn genkey(dir: &Path, file: &str) {
    let args = [
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
    ];
    let mut all: Vec<&str> = args.to_vec();
    all.push(file);
    openssl(dir, &all);
}

/// A certificate for `name` (with `san`) signed by `ca.crt`: (cert, key) paths.
fn issue(dir: &Path, name: &str, san: &str) -> (PathBuf, PathBuf) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
    genkey(dir, &key);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
    (dir.join(crt), dir.join(key))
}

fn make_ca(dir: &Path, name: &str) {
    genkey(dir, &format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            "/CN=vla-test-ca",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

fn pem(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

async fn tls_collector(dir: &Path, require_client: bool) -> Collector {
    let (cert, key) = issue(dir, "server", "IP:127.0.0.1");
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(pem(&cert), pem(&key)));
    if require_client {
        tls = tls.client_ca_root(Certificate::from_pem(pem(&dir.join("ca.crt"))));
    }
    Collector::start_with(Server::builder().tls_config(tls).unwrap(), "https").await
}

fn record_quota(t: &vla_sdk::Telemetry) {
    t.set_quota(&vla_sdk::CustomerId::new("acme").unwrap(), Tier::Pro, 5, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_over_tls_to_a_collector_signed_by_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    let collector = tls_collector(dir.path(), false).await;
    let t = collector
        .builder()
        .tls_ca_file(dir.path().join("ca.crt"))
        .build()
        .unwrap();
    record_quota(&t);
    blocking(move || t.shutdown()).await.unwrap();
    assert_eq!(collector.received().len(), 1);
    // The same CA from the standard environment variable.
    let ca = dir.path().join("ca.crt").display().to_string();
    let env = move |k: &str| (k == "OTEL_EXPORTER_OTLP_CERTIFICATE").then(|| ca.clone());
    let t = collector.builder().build_with_env(&env).unwrap();
    record_quota(&t);
    blocking(move || t.shutdown()).await.unwrap();
    assert_eq!(collector.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_sends_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    let collector = tls_collector(dir.path(), true).await;
    let (client_cert, client_key) = issue(dir.path(), "client", "DNS:vla-api");
    // Without the client certificate the collector refuses the handshake.
    let anonymous = collector
        .builder()
        .tls_ca_file(dir.path().join("ca.crt"))
        .build()
        .unwrap();
    record_quota(&anonymous);
    assert!(blocking(move || anonymous.shutdown()).await.is_err());
    assert!(collector.received().is_empty());
    let t = collector
        .builder()
        .tls_ca_file(dir.path().join("ca.crt"))
        .tls_client_identity(client_cert, client_key)
        .build()
        .unwrap();
    record_quota(&t);
    blocking(move || t.shutdown()).await.unwrap();
    assert_eq!(collector.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_collector_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_ca(dir.path(), "other-ca");
    let collector = tls_collector(dir.path(), false).await;
    let t = collector
        .builder()
        .tls_ca_file(dir.path().join("other-ca.crt"))
        .build()
        .unwrap();
    record_quota(&t);
    let stats_t = t.clone();
    assert!(blocking(move || t.shutdown()).await.is_err());
    assert_eq!(stats_t.export_stats().failed(), 1);
    assert!(collector.received().is_empty());
}
