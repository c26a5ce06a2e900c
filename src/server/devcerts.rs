//! `serve --dev`: a local CA and a serving certificate for localhost, made once under
//! `certs/` and reused while valid, so a newcomer needs no cluster and no openssl.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::tls::{self, CertPaths};

#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    #[error("cannot write dev certificates under {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate dev certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Names the dev serving certificate is valid for: loopback, and the in-cluster
/// Service of `deploy/` so the same files can back a quick cluster trial.
pub fn dev_sans() -> Vec<String> {
    ["localhost", "127.0.0.1", "::1"]
        .map(String::from)
        .into_iter()
        .chain(crate::contract::service_dns_names())
        .collect()
}

/// The files of a dev certificate directory.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub serving: CertPaths,
}

impl DevCerts {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.crt"),
            serving: CertPaths {
                cert: dir.join("tls.crt"),
                key: dir.join("tls.key"),
            },
        }
    }
}

/// Returns the dev certificates in `dir`, making them when missing, unreadable or
/// expiring within a day. Returns whether new ones were made.
pub fn ensure(dir: &Path) -> Result<(DevCerts, bool), DevCertError> {
    let certs = DevCerts::in_dir(dir);
    let day = 86_400;
    if certs.ca_cert.exists()
        && let Ok((_, info)) = tls::load(&certs.serving, tls::now() + day)
        && info.not_after > tls::now() + day
    {
        return Ok((certs, false));
    }
    generate(dir, &certs)?;
    Ok((certs, true))
}

fn generate(dir: &Path, certs: &DevCerts) -> Result<(), DevCertError> {
    let io = |source| DevCertError::Io {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let now = time::OffsetDateTime::now_utc();
    let yesterday = now - time::Duration::days(1);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "sandgate dev CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = yesterday;
    ca.not_after = now + time::Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(dev_sans())?;
    leaf.distinguished_name
        .push(DnType::CommonName, crate::contract::SERVICE);
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = yesterday;
    leaf.not_after = now + time::Duration::days(365);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    // Key first, certificate last: a reloader watching the directory sees a complete
    // pair once the certificate lands.
    write_private(&certs.serving.key, leaf_key.serialize_pem().as_bytes()).map_err(io)?;
    std::fs::write(&certs.ca_cert, ca_cert.pem()).map_err(io)?;
    std::fs::write(&certs.serving.cert, leaf_cert.pem()).map_err(io)?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
