//! The certificates of self-managed TLS, as pure data and one decision: what the Secret
//! holds ([`Material`]), what to do next ([`plan`]) and doing it ([`apply`]).
//!
//! Rotation never leaves a moment where the apiserver and a replica disagree:
//! 1. a CA near its end is joined by a new one: the bundle trusts both, the serving
//!    certificate (signed by the old one) stays;
//! 2. once the bundle has been trusted for the grace, the serving certificate is reissued
//!    by the new CA;
//! 3. once that certificate has been out for the grace, the old CA leaves the bundle.
//!
//! A serving certificate near its end is reissued by the same CA, which the apiserver
//! already trusts. "Near its end" is the last third of a certificate's own lifetime.

use std::collections::BTreeMap;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::contract::tls as keys;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("lifetimes: {0}")]
    Lifetimes(String),
    #[error("{0}")]
    Material(String),
}

/// How long the certificates live and how long rotation waits between its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: Duration,
    pub cert: Duration,
    pub grace: Duration,
}

impl Lifetimes {
    /// Refuses lifetimes rotation cannot work with: the last third of a certificate's
    /// life must hold the two graces of a CA rotation, and a serving certificate must fit
    /// inside its CA's remaining life.
    pub fn validated(self) -> Result<Self, CertError> {
        // Beyond a century the X.509 times overflow what the encoding holds.
        const CENTURY: u64 = 100 * 365 * 86_400;
        if self.grace.as_secs() == 0 {
            return Err(CertError::Lifetimes(
                "the rotation grace must be at least one second".into(),
            ));
        }
        if self.ca.as_secs() > CENTURY {
            return Err(CertError::Lifetimes(format!(
                "the CA's validity ({} s) must not exceed a century ({CENTURY} s)",
                self.ca.as_secs()
            )));
        }
        let grace = self.grace.as_secs();
        if self.cert.as_secs() < grace.saturating_mul(6) {
            return Err(CertError::Lifetimes(format!(
                "the serving certificate's validity ({} s) must be at least six rotation graces ({} s)",
                self.cert.as_secs(),
                grace.saturating_mul(6)
            )));
        }
        if self.ca.as_secs() < self.cert.as_secs().saturating_mul(2) {
            return Err(CertError::Lifetimes(format!(
                "the CA's validity ({} s) must be at least twice the serving certificate's ({} s)",
                self.ca.as_secs(),
                self.cert.as_secs()
            )));
        }
        Ok(self)
    }
}

/// One CA of the trusted bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    pub pem: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// What the Secret holds, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// The trusted CAs, the signing one first.
    pub cas: Vec<Ca>,
    /// The key of `cas[0]`.
    pub ca_key: String,
    pub cert: String,
    pub key: String,
    pub cert_not_before: i64,
    pub cert_not_after: i64,
    /// The index in `cas` of the CA that signed the serving certificate, if any did.
    pub issuer: Option<usize>,
    /// Whether the serving certificate names every DNS name it must.
    pub names_ok: bool,
    pub ca_trusted_since: i64,
    pub cert_issued_at: i64,
}

impl Material {
    /// The PEM bundle the webhook configurations' `caBundle` must hold.
    pub fn bundle(&self) -> String {
        self.cas.iter().map(|c| c.pem.as_str()).collect()
    }

    /// The Secret's data.
    pub fn data(&self) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (keys::CA_CERT.to_string(), self.bundle().into_bytes()),
            (keys::CA_KEY.to_string(), self.ca_key.clone().into_bytes()),
            (keys::TLS_CERT.to_string(), self.cert.clone().into_bytes()),
            (keys::TLS_KEY.to_string(), self.key.clone().into_bytes()),
        ])
    }

    /// The Secret's annotations.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                keys::CA_TRUSTED_SINCE.to_string(),
                self.ca_trusted_since.to_string(),
            ),
            (
                keys::CERT_ISSUED_AT.to_string(),
                self.cert_issued_at.to_string(),
            ),
        ])
    }
}

/// Why a Secret's content cannot be used (it is then replaced by a fresh CA and pair).
pub type Unusable = String;

fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Result<String, Unusable> {
    let bytes = data.get(key).ok_or_else(|| format!("no {key}"))?;
    String::from_utf8(bytes.clone()).map_err(|_| format!("{key} is not text"))
}

fn pem_ders(pem: &str, key: &str) -> Result<Vec<CertificateDer<'static>>, Unusable> {
    let ders: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key}: {e}"))?;
    if ders.is_empty() {
        return Err(format!("{key} holds no certificate"));
    }
    Ok(ders)
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Parses the Secret's data and annotations. `names` are the DNS names (or IPs) the
/// serving certificate must hold.
pub fn parse(
    data: &BTreeMap<String, Vec<u8>>,
    annotations: &BTreeMap<String, String>,
    names: &[String],
) -> Result<Material, Unusable> {
    let bundle = text(data, keys::CA_CERT)?;
    let ca_key = text(data, keys::CA_KEY)?;
    let cert = text(data, keys::TLS_CERT)?;
    let key = text(data, keys::TLS_KEY)?;
    let ca_ders = pem_ders(&bundle, keys::CA_CERT)?;
    let cert_ders = pem_ders(&cert, keys::TLS_CERT)?;
    let mut cas = Vec::new();
    let mut parsed_cas = Vec::new();
    for der in &ca_ders {
        let (_, x) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("{}: {e}", keys::CA_CERT))?;
        cas.push(Ca {
            pem: der_to_pem(der),
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
        });
        parsed_cas.push(x);
    }
    let signing_key = KeyPair::from_pem(&ca_key).map_err(|e| format!("{}: {e}", keys::CA_KEY))?;
    if parsed_cas[0].public_key().raw != signing_key.subject_public_key_info().as_slice() {
        return Err(format!(
            "{} is not the key of the first CA in {}",
            keys::CA_KEY,
            keys::CA_CERT
        ));
    }
    let (_, leaf) = x509_parser::parse_x509_certificate(&cert_ders[0])
        .map_err(|e| format!("{}: {e}", keys::TLS_CERT))?;
    let leaf_key = KeyPair::from_pem(&key).map_err(|e| format!("{}: {e}", keys::TLS_KEY))?;
    if leaf.public_key().raw != leaf_key.subject_public_key_info().as_slice() {
        return Err(format!(
            "{} is not the key of {}",
            keys::TLS_KEY,
            keys::TLS_CERT
        ));
    }
    let issuer = parsed_cas
        .iter()
        .position(|ca| leaf.verify_signature(Some(ca.public_key())).is_ok());
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    x509_parser::extensions::GeneralName::IPAddress(ip) => ip_text(ip),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let names_ok = names.iter().all(|n| sans.contains(&canonical(n)));
    let stamp = |key: &str| {
        annotations
            .get(key)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Ok(Material {
        cas,
        ca_key,
        cert,
        key,
        cert_not_before: leaf.validity().not_before.timestamp(),
        cert_not_after: leaf.validity().not_after.timestamp(),
        issuer,
        names_ok,
        ca_trusted_since: stamp(keys::CA_TRUSTED_SINCE),
        cert_issued_at: stamp(keys::CERT_ISSUED_AT),
    })
}

/// A name as a certificate reads back: IP addresses in their canonical text
/// (`FD00:0::1` is `fd00::1`), DNS names lower-cased.
pub fn canonical(name: &str) -> String {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.to_ascii_lowercase(),
    }
}

fn ip_text(raw: &[u8]) -> Option<String> {
    match raw.len() {
        4 => <[u8; 4]>::try_from(raw)
            .ok()
            .map(|o| std::net::Ipv4Addr::from(o).to_string()),
        16 => <[u8; 16]>::try_from(raw)
            .ok()
            .map(|o| std::net::Ipv6Addr::from(o).to_string()),
        _ => None,
    }
}

/// The next step of the certificates' life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing usable: a fresh CA and serving certificate.
    Create(Unusable),
    /// The signing CA is in its last third: a new CA joins the bundle.
    RotateCa,
    /// Issue a new serving certificate from the signing CA.
    Reissue(&'static str),
    /// Drop the CAs nothing is signed by any more.
    Trim,
    /// Nothing to do before `recheck_at` (unix seconds).
    Keep { recheck_at: i64 },
}

/// When a certificate living from `not_before` to `not_after` enters its last third.
fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let life = not_after.saturating_sub(not_before).max(0);
    not_before.saturating_add(life / 3 * 2)
}

/// Decides the next step from what the Secret holds (or why it cannot be used) at `now`.
pub fn plan(material: &Result<Material, Unusable>, now: i64, lifetimes: &Lifetimes) -> Step {
    let m = match material {
        Err(why) => return Step::Create(why.clone()),
        Ok(m) => m,
    };
    let grace = i64::try_from(lifetimes.grace.as_secs()).unwrap_or(i64::MAX);
    let signing = &m.cas[0];
    if now >= signing.not_after {
        return Step::Create("the signing CA expired".into());
    }
    // A broken serving certificate cannot wait for any grace: it fails already.
    if m.issuer.is_none() {
        return Step::Reissue("the serving certificate is not signed by a trusted CA");
    }
    if !m.names_ok {
        return Step::Reissue("the serving certificate does not name the Service");
    }
    if now >= m.cert_not_after {
        return Step::Reissue("the serving certificate expired");
    }
    let ca_renew = renew_at(signing.not_before, signing.not_after);
    let trusted_until = m.ca_trusted_since.saturating_add(grace);
    if m.issuer != Some(0) {
        // Signed by an older CA: move to the signing one once the apiserver trusts it.
        return if now >= trusted_until {
            Step::Reissue("the CA rotated")
        } else {
            Step::Keep {
                recheck_at: trusted_until,
            }
        };
    }
    if now >= ca_renew {
        return Step::RotateCa;
    }
    let cert_renew = renew_at(m.cert_not_before, m.cert_not_after);
    if now >= cert_renew {
        return Step::Reissue("the serving certificate is in its last third");
    }
    if m.cas.len() > 1 {
        let out_since = m.cert_issued_at.saturating_add(grace);
        if now >= out_since {
            return Step::Trim;
        }
        return Step::Keep {
            recheck_at: out_since.min(cert_renew),
        };
    }
    Step::Keep {
        recheck_at: cert_renew.min(ca_renew),
    }
}

fn time_at(unix: i64) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| {
        CertError::Lifetimes(format!("{unix} is not a time a certificate can hold: {e}"))
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// How far back a certificate's validity starts, for clocks behind ours: an hour, or a
/// twentieth of a short lifetime.
fn backdate(validity: Duration) -> i64 {
    secs(validity / 20).min(3600)
}

/// A new CA, valid from a little before `now`.
fn new_ca(now: i64, validity: Duration) -> Result<(Ca, String), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, format!("sandgate CA {now}"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let not_before = now.saturating_sub(backdate(validity));
    let not_after = now.saturating_add(secs(validity));
    params.not_before = time_at(not_before)?;
    params.not_after = time_at(not_after)?;
    let cert = params.self_signed(&key)?;
    Ok((
        Ca {
            pem: cert.pem(),
            not_before,
            not_after,
        },
        key.serialize_pem(),
    ))
}

/// A serving certificate for `names` signed by `ca`, ending no later than the CA.
fn issue(
    ca: &Ca,
    ca_key: &str,
    names: &[String],
    now: i64,
    validity: Duration,
) -> Result<(String, String, i64, i64), CertError> {
    let signing_key = KeyPair::from_pem(ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.pem, signing_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| "sandgate".into()),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let not_before = now.saturating_sub(backdate(validity)).max(ca.not_before);
    let not_after = now.saturating_add(secs(validity)).min(ca.not_after);
    params.not_before = time_at(not_before)?;
    params.not_after = time_at(not_after)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem(), not_before, not_after))
}

/// Carries out `step` on `material` (which must be usable unless the step is Create).
/// Returns the new material, or `None` for [`Step::Keep`].
pub fn apply(
    step: &Step,
    material: &Result<Material, Unusable>,
    names: &[String],
    now: i64,
    lifetimes: &Lifetimes,
) -> Result<Option<Material>, CertError> {
    let reissued = |mut m: Material| -> Result<Material, CertError> {
        let (cert, key, nb, na) = issue(&m.cas[0], &m.ca_key, names, now, lifetimes.cert)?;
        m.cert = cert;
        m.key = key;
        m.cert_not_before = nb;
        m.cert_not_after = na;
        m.issuer = Some(0);
        m.names_ok = true;
        m.cert_issued_at = now;
        Ok(m)
    };
    let usable = || match material {
        Ok(m) => Ok(m.clone()),
        // plan() only asks for a Create then; anything else is a caller's mistake.
        Err(why) => Err(CertError::Material(format!(
            "cannot rotate unusable material: {why}"
        ))),
    };
    let next = match step {
        Step::Keep { .. } => return Ok(None),
        Step::Create(_) => {
            let (ca, ca_key) = new_ca(now, lifetimes.ca)?;
            reissued(Material {
                cas: vec![ca],
                ca_key,
                cert: String::new(),
                key: String::new(),
                cert_not_before: 0,
                cert_not_after: 0,
                issuer: None,
                names_ok: false,
                ca_trusted_since: now,
                cert_issued_at: now,
            })?
        }
        Step::RotateCa => {
            let mut m = usable()?;
            let (ca, ca_key) = new_ca(now, lifetimes.ca)?;
            m.cas.retain(|c| c.not_after > now);
            m.cas.insert(0, ca);
            m.ca_key = ca_key;
            m.ca_trusted_since = now;
            m
        }
        Step::Reissue(_) => reissued(usable()?)?,
        Step::Trim => {
            let mut m = usable()?;
            m.cas.truncate(1);
            m
        }
    };
    // Read back as the next round will, so the issuer and the checks are recomputed.
    parse(&next.data(), &next.annotations(), names)
        .map(Some)
        .map_err(|why| CertError::Material(format!("the new material does not check: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn lifetimes() -> Lifetimes {
        Lifetimes {
            ca: Duration::from_secs(360 * DAY as u64),
            cert: Duration::from_secs(90 * DAY as u64),
            grace: Duration::from_secs(600),
        }
    }

    fn names() -> Vec<String> {
        vec!["sandgate.sandgate-system.svc".into(), "127.0.0.1".into()]
    }

    /// Runs plan+apply and parses the result back, as the manager does through a Secret.
    fn step(m: &Result<Material, Unusable>, now: i64) -> (Step, Result<Material, Unusable>) {
        let l = lifetimes();
        let s = plan(m, now, &l);
        let next = match apply(&s, m, &names(), now, &l).expect("apply") {
            None => m.clone(),
            Some(n) => Ok(n),
        };
        (s, next)
    }

    fn fresh(now: i64) -> Material {
        let (_, m) = step(&Err("empty".into()), now);
        m.expect("fresh material parses")
    }

    #[test]
    fn an_empty_secret_gets_a_ca_and_a_serving_certificate_for_the_names() {
        let now = 1_800_000_000;
        let m = fresh(now);
        assert_eq!(m.cas.len(), 1);
        assert_eq!(m.issuer, Some(0));
        assert!(m.names_ok);
        assert!(m.cert_not_after <= now + 90 * DAY);
        assert!(m.cert_not_before <= now);
        assert_eq!(
            plan(&Ok(m.clone()), now, &lifetimes()),
            Step::Keep {
                recheck_at: renew_at(m.cert_not_before, m.cert_not_after)
            }
        );
    }

    #[test]
    fn unusable_content_is_replaced_and_says_why() {
        let now = 1_800_000_000;
        let m = fresh(now);
        let mut data = m.data();
        data.insert(keys::TLS_KEY.into(), fresh(now).key.into_bytes());
        let parsed = parse(&data, &m.annotations(), &names());
        assert!(matches!(&parsed, Err(why) if why.contains("tls.key is not the key")));
        assert!(matches!(plan(&parsed, now, &lifetimes()), Step::Create(_)));
        data.remove(keys::CA_KEY);
        assert_eq!(
            parse(&data, &m.annotations(), &names()),
            Err("no ca.key".into())
        );
    }

    #[test]
    fn a_certificate_missing_a_name_is_reissued() {
        let now = 1_800_000_000;
        let m = fresh(now);
        let more = vec!["other.example".to_string()];
        let parsed = parse(&m.data(), &m.annotations(), &more);
        assert!(matches!(plan(&parsed, now, &lifetimes()), Step::Reissue(_)));
    }

    #[test]
    fn a_certificate_signed_by_no_trusted_ca_is_reissued() {
        let now = 1_800_000_000;
        let a = fresh(now);
        let b = fresh(now);
        let mut data = a.data();
        data.insert(keys::TLS_CERT.into(), b.cert.into_bytes());
        data.insert(keys::TLS_KEY.into(), b.key.into_bytes());
        let parsed = parse(&data, &a.annotations(), &names()).expect("parses");
        assert_eq!(parsed.issuer, None);
        assert!(matches!(
            plan(&Ok(parsed), now, &lifetimes()),
            Step::Reissue(_)
        ));
    }

    #[test]
    fn names_compare_as_the_certificate_reads_them_back() {
        let now = 1_800_000_000;
        let m = fresh(now);
        let spelled = vec![
            "Sandgate.Sandgate-System.svc".to_string(),
            "127.0.0.1".into(),
        ];
        let parsed = parse(&m.data(), &m.annotations(), &spelled).expect("parses");
        assert!(parsed.names_ok);
        assert_eq!(canonical("FD00:0::1"), "fd00::1");
    }

    #[test]
    fn lifetimes_that_cannot_rotate_are_refused() {
        let l = Lifetimes {
            ca: Duration::from_secs(100),
            cert: Duration::from_secs(60),
            grace: Duration::from_secs(20),
        };
        assert!(l.validated().is_err());
        assert!(lifetimes().validated().is_ok());
        let no_grace = Lifetimes {
            grace: Duration::ZERO,
            ..lifetimes()
        };
        assert!(no_grace.validated().is_err());
        let forever = Lifetimes {
            ca: Duration::from_secs(u64::MAX / 2),
            ..lifetimes()
        };
        assert!(forever.validated().is_err());
    }

    /// Three CA lifetimes, one hour at a time, with the apiserver and the replicas each
    /// seeing the Secret up to half a grace late: the certificate any replica serves is
    /// always signed by a CA the apiserver's bundle trusts.
    #[test]
    fn rotation_never_serves_a_certificate_the_apiserver_does_not_trust() {
        let l = lifetimes();
        let start = 1_800_000_000;
        let lag = (l.grace.as_secs() / 2) as i64;
        let mut history: Vec<(i64, Material)> = vec![(start, fresh(start))];
        let mut seen = std::collections::BTreeSet::new();
        let mut now = start;
        let end = start + 3 * 360 * DAY;
        while now < end {
            let current = Ok(history.last().expect("history").1.clone());
            let (s, next) = step(&current, now);
            if !matches!(s, Step::Keep { .. }) {
                seen.insert(format!("{s:?}").split('(').next().unwrap_or("").to_string());
                let next = next.expect("parses");
                history.push((now, next));
                // A second step may follow at once (the manager loops until Keep).
                continue;
            }
            // Every state in effect within the lag: what a lagging replica may serve
            // and what a lagging apiserver may trust.
            let window: Vec<&Material> = history
                .iter()
                .filter(|(t, _)| *t + lag >= now)
                .map(|(_, m)| m)
                .chain(
                    history
                        .iter()
                        .rev()
                        .find(|(t, _)| *t + lag < now)
                        .map(|(_, m)| m),
                )
                .collect();
            for served in &window {
                for trusted in &window {
                    let bundle = &trusted.cas;
                    let (_, leaf) =
                        x509_parser::pem::parse_x509_pem(served.cert.as_bytes()).expect("pem");
                    let leaf = leaf.parse_x509().expect("x509");
                    let ok = bundle.iter().any(|ca| {
                        let (_, p) =
                            x509_parser::pem::parse_x509_pem(ca.pem.as_bytes()).expect("pem");
                        let ca = p.parse_x509().expect("x509");
                        leaf.verify_signature(Some(ca.public_key())).is_ok()
                            && ca.validity().not_after.timestamp() > now
                    });
                    assert!(ok, "at {now} a served certificate is not trusted");
                    assert!(
                        served.cert_not_after > now,
                        "at {now} a served certificate expired"
                    );
                }
            }
            now += 3600;
        }
        for s in ["Reissue", "RotateCa", "Trim"] {
            assert!(seen.contains(s), "{s} never happened: {seen:?}");
        }
    }
}
