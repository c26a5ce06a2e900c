//! The real HTTPS listener on loopback: TLS with the dev CA, certificate hot reload
//! without dropping an open connection, a bad new pair refused while the old one keeps
//! serving, an expired certificate refused at start, graceful shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

mod common;

use common::https::{connect, connector, get};
use sandgate::config::Config;
use sandgate::netpol::NoCluster;
use sandgate::server::{self, AppState, Running, ServeOptions, devcerts, tls};

fn opts(dir: &Path) -> ServeOptions {
    ServeOptions {
        addr: ([127, 0, 0, 1], 0).into(),
        probe_addr: Some(([127, 0, 0, 1], 0).into()),
        certs: tls::CertSource::Files(devcerts::DevCerts::in_dir(dir).serving),
        shutdown_grace: Duration::from_secs(5),
        cert_poll: Duration::from_millis(500),
        policy_poll: Duration::from_millis(500),
    }
}

async fn start(dir: &Path) -> Running {
    let state = AppState::new(Config::default(), Arc::new(NoCluster));
    server::start(opts(dir), state)
        .await
        .expect("server starts")
}

fn leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn serves_https_and_reloads_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, made) = devcerts::ensure(dir.path()).unwrap();
    assert!(made);
    let (_, made_again) = devcerts::ensure(dir.path()).unwrap();
    assert!(!made_again, "valid dev certificates are reused");

    let running = start(dir.path()).await;
    let mut conn = connect(running.addr, &certs.ca_cert).await;
    let first_leaf = leaf(&conn);
    assert_eq!(
        get(&mut conn, "/healthz").await,
        ("HTTP/1.1 200 OK".into(), "ok".into())
    );

    // Plain probe port answers too.
    let mut plain = TcpStream::connect(running.probe_addr.unwrap())
        .await
        .unwrap();
    plain
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    plain.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // Rotate: a new pair (new CA) written over the old files.
    let other = tempfile::tempdir().unwrap();
    let (new_certs, _) = devcerts::ensure(other.path()).unwrap();
    std::fs::copy(&new_certs.serving.key, &certs.serving.key).unwrap();
    std::fs::copy(&new_certs.serving.cert, &certs.serving.cert).unwrap();

    let mut rotated = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let tcp = TcpStream::connect(running.addr).await.unwrap();
        if let Ok(s) = connector(&new_certs.ca_cert)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
        {
            assert_ne!(leaf(&s), first_leaf);
            rotated = true;
            break;
        }
    }
    assert!(rotated, "new connections get the new certificate");
    // The connection opened before the rotation still works.
    assert_eq!(get(&mut conn, "/healthz").await.1, "ok");

    // A broken certificate is refused: the last good one keeps serving, readiness says why.
    std::fs::write(
        &certs.serving.cert,
        b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let mut reported = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = connect(running.addr, &new_certs.ca_cert).await;
        let (status, body) = get(&mut s, "/readyz").await;
        if status.contains("503") {
            assert!(body.contains("certificate"), "{body}");
            reported = true;
            break;
        }
    }
    assert!(reported, "readiness reports the refused certificate");
    let metrics = get(
        &mut connect(running.addr, &new_certs.ca_cert).await,
        "/metrics",
    )
    .await
    .1;
    assert!(
        metrics.contains(r#"sandgate_certificate_reloads_total{result="error"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sandgate_certificate_reloads_total{result="ok"} 1"#),
        "{metrics}"
    );

    let addr = running.addr;
    running
        .shutdown(Duration::from_secs(2))
        .await
        .expect("graceful shutdown");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test]
async fn an_expired_or_mismatched_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let paths = devcerts::DevCerts::in_dir(dir.path());
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(&paths.serving.cert, cert.pem()).unwrap();
    std::fs::write(&paths.serving.key, key.serialize_pem()).unwrap();

    let state = AppState::new(Config::default(), Arc::new(NoCluster));
    let err = server::start(opts(dir.path()), state.clone())
        .await
        .err()
        .expect("expired certificate refused");
    assert!(err.to_string().contains("expired"), "{err}");

    // A valid certificate with someone else's key.
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    std::fs::write(&paths.serving.cert, params.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(
        &paths.serving.key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let err = server::start(opts(dir.path()), state.clone())
        .await
        .err()
        .expect("mismatched key refused");
    assert!(
        err.to_string().contains("do not form a usable pair"),
        "{err}"
    );

    std::fs::remove_file(&paths.serving.key).unwrap();
    let err = server::start(opts(dir.path()), state)
        .await
        .err()
        .expect("missing key refused");
    assert!(err.to_string().contains("tls.key"), "{err}");
}
