//! A test PKI made with rcgen: the platform's CA, the agent's server
//! certificate, client certificates for each role (and none), a revoked, an
//! expired and a foreign-CA one, and the CA's CRL.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The files of one client identity.
#[derive(Clone, Debug)]
pub struct Ident {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A CRL revoking `revoked` (not in the agent's config until a test adds it).
    pub crl: PathBuf,
    pub admin: Ident,
    pub operator: Ident,
    /// Roles observer and an unknown one (ignored).
    pub observer: Ident,
    /// CN "admin", no role SAN: the CN must not give a role.
    pub norole: Ident,
    /// Role admin, serial 666: revoked by `crl`.
    pub revoked: Ident,
    pub expired: Ident,
    /// Role admin, from another CA.
    pub foreign: Ident,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn client_params(cn: &str, roles: &[&str], serial: u64) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "platform");
    for r in roles {
        p.subject_alt_names.push(SanType::URI(
            format!("hydra://role/{r}").try_into().unwrap(),
        ));
    }
    p.serial_number = Some(SerialNumber::from(serial));
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    p
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn issue(dir: &Path, name: &str, p: CertificateParams, ca: &Issuer<'_, KeyPair>) -> Ident {
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    Ident {
        cert: write(dir, &format!("{name}.pem"), &cert.pem()),
        key: write(dir, &format!("{name}.key"), &key.serialize_pem()),
    }
}

fn crl(dir: &Path, name: &str, ca: &Issuer<'_, KeyPair>, revoked: &[u64], n: u64) -> PathBuf {
    let now = OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(7),
        crl_number: SerialNumber::from(n),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: now - Duration::minutes(1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    write(dir, name, &params.signed_by(ca).unwrap().pem().unwrap())
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let ca_p = ca_params("hydra test platform CA");
        let ca_cert = ca_p.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(ca_p, ca_key);
        let foreign_key = KeyPair::generate().unwrap();
        let foreign = Issuer::new(ca_params("someone else's CA"), foreign_key);

        let mut sp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        sp.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        sp.distinguished_name
            .push(DnType::CommonName, "hydra-agent");
        let server = issue(dir, "server", sp, &ca);

        let mut expired = client_params("expired", &["admin"], 7);
        expired.not_before = OffsetDateTime::now_utc() - Duration::days(30);
        expired.not_after = OffsetDateTime::now_utc() - Duration::days(1);
        Pki {
            ca: write(dir, "ca.pem", &ca_cert.pem()),
            server_cert: server.cert,
            server_key: server.key,
            crl: crl(dir, "crl.pem", &ca, &[666], 2),
            admin: issue(dir, "admin", client_params("central-1", &["admin"], 1), &ca),
            operator: issue(
                dir,
                "operator",
                client_params("deployer", &["operator"], 2),
                &ca,
            ),
            observer: issue(
                dir,
                "observer",
                client_params("dashboard", &["observer", "bogus"], 3),
                &ca,
            ),
            norole: issue(dir, "norole", client_params("admin", &[], 4), &ca),
            revoked: issue(
                dir,
                "revoked",
                client_params("stolen", &["admin"], 666),
                &ca,
            ),
            expired: issue(dir, "expired", expired, &ca),
            foreign: issue(
                dir,
                "foreign",
                client_params("intruder", &["admin"], 1),
                &foreign,
            ),
        }
    }

    /// The agent's `[api]` section serving on `addr`, with `crl` if given.
    pub fn api_config(&self, addr: &str, crl: Option<&Path>) -> String {
        let mut s = format!(
            "[api]\ntcp = \"{addr}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"\n",
            self.server_cert.display(),
            self.server_key.display(),
            self.ca.display()
        );
        if let Some(c) = crl {
            s.push_str(&format!("crl = \"{}\"\n", c.display()));
        }
        s
    }
}
