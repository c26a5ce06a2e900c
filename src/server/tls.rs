//! The serving certificate: loaded from PEM files, checked (parsable, key matches, not
//! expired) and swapped in place when the files change, without dropping connections.
//! A bad new pair is refused and the old one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key: {reason}")]
    NoKey { path: String, reason: String },
    #[error("{path}: the certificate cannot be parsed: {reason}")]
    Parse { path: String, reason: String },
    #[error("{path}: the certificate expired at {not_after} (unix time); renew it")]
    Expired { path: String, not_after: i64 },
    #[error("{path}: the certificate is not valid before {not_before} (unix time)")]
    NotYetValid { path: String, not_before: i64 },
    #[error("certificate {cert} and key {key} do not form a usable pair: {source}")]
    Pair {
        cert: String,
        key: String,
        #[source]
        source: rustls::Error,
    },
}

/// Where the serving certificate and key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the serving pair comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// PEM files, reloaded when they change (a mounted Secret, `--dev`).
    Files(CertPaths),
    /// A Secret kept by self-managed TLS ([`crate::certs`]), watched through the
    /// apiserver; the process needs a cluster.
    Managed(Box<crate::certs::Settings>),
}

/// Facts about a loaded certificate, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: i64,
    pub not_after: i64,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Validity window of the leaf certificate of a DER chain.
pub fn cert_info(der: &[u8], path: &Path) -> Result<CertInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Parse {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(CertInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Loads and checks the pair at `paths`, as of `now` (unix seconds).
pub fn load(paths: &CertPaths, now: i64) -> Result<(Arc<ServerConfig>, CertInfo), TlsError> {
    let cert_pem = read(&paths.cert)?;
    let key_pem = read(&paths.key)?;
    load_pem(
        &cert_pem,
        &key_pem,
        &paths.cert.display().to_string(),
        &paths.key.display().to_string(),
        now,
    )
}

/// Checks a PEM pair (`cert_path` and `key_path` name where it came from in errors) and
/// builds the server configuration for it.
pub fn load_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &str,
    key_path: &str,
    now: i64,
) -> Result<(Arc<ServerConfig>, CertInfo), TlsError> {
    let cert_path = cert_path.to_string();
    let key_path = key_path.to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Parse {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        path: cert_path.clone(),
    })?;
    let info = cert_info(leaf, Path::new(&cert_path))?;
    if now > info.not_after {
        return Err(TlsError::Expired {
            path: cert_path,
            not_after: info.not_after,
        });
    }
    if now < info.not_before {
        return Err(TlsError::NotYetValid {
            path: cert_path,
            not_before: info.not_before,
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair_err = |source| TlsError::Pair {
        cert: cert_path.clone(),
        key: key_path.clone(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(pair_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(pair_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), info))
}

/// Seconds since the epoch, for validity checks.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
