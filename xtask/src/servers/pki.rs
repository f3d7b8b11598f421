//! The test PKI of the secured servers ([`super::secure`]), generated at run time with
//! rcgen (on ring, the workspace's one crypto provider) into `target/servers/pki/`.
//!
//! Nothing here is a secret worth keeping: the keys exist only on this machine, for
//! servers on loopback. They are generated once and kept while every file is there, so a
//! server reused from an earlier run still presents a certificate its clients trust; if a
//! file is missing, the whole set is generated afresh (and [`ensure`] says so, so the
//! caller restarts secured servers still running on the old one).
//!
//! Every key is ECDSA P-256 (rcgen's default), which etcd (Go), Redis (OpenSSL), curl and
//! rustls all accept.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::paths::servers_dir;
use crate::say;

/// The CA the secured servers trust, and whose certificates they present.
pub const CA: &str = "ca.pem";
/// The key of [`CA`].
pub const CA_KEY: &str = "ca-key.pem";
/// A second, unrelated CA: a client trusting only it must fail to verify a server.
pub const OTHER_CA: &str = "other-ca.pem";
/// The servers' certificate: signed by [`CA`], for `127.0.0.1` and `localhost`, for
/// server and client authentication (etcd's own gateway dials the server with it).
pub const SERVER: &str = "server.pem";
/// The key of [`SERVER`].
pub const SERVER_KEY: &str = "server-key.pem";
/// The clients' certificate: signed by [`CA`], with a CN that is no etcd user, so the
/// certificate alone authenticates no one there.
pub const CLIENT: &str = "client.pem";
/// The key of [`CLIENT`].
pub const CLIENT_KEY: &str = "client-key.pem";
/// A client certificate signed by [`OTHER_CA`]: the servers must refuse it.
pub const OTHER_CLIENT: &str = "other-client.pem";
/// The key of [`OTHER_CLIENT`].
pub const OTHER_CLIENT_KEY: &str = "other-client-key.pem";
/// A client certificate signed by [`CA`] that expired in 2020: the servers must refuse it.
pub const EXPIRED_CLIENT: &str = "expired-client.pem";
/// The key of [`EXPIRED_CLIENT`].
pub const EXPIRED_CLIENT_KEY: &str = "expired-client-key.pem";
/// A server certificate as [`SERVER`] that expired in 2020, for a server a client must
/// refuse.
pub const EXPIRED_SERVER: &str = "expired-server.pem";
/// The key of [`EXPIRED_SERVER`].
pub const EXPIRED_SERVER_KEY: &str = "expired-server-key.pem";

/// Every file of the PKI.
pub const FILES: [&str; 13] = [
    CA,
    CA_KEY,
    OTHER_CA,
    SERVER,
    SERVER_KEY,
    CLIENT,
    CLIENT_KEY,
    OTHER_CLIENT,
    OTHER_CLIENT_KEY,
    EXPIRED_CLIENT,
    EXPIRED_CLIENT_KEY,
    EXPIRED_SERVER,
    EXPIRED_SERVER_KEY,
];

/// The CN of [`CLIENT`] (and of the other client certificates).
pub const CLIENT_CN: &str = "valkeyrie-client";

/// The names [`SERVER`] is valid for.
const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// `target/servers/pki/`, absolute (the paths go into variables tests read from other
/// working directories).
pub fn dir() -> PathBuf {
    let dir = servers_dir().join("pki");
    std::path::absolute(&dir).unwrap_or(dir)
}

/// The absolute path of one of the [`FILES`].
pub fn path(file: &str) -> PathBuf {
    dir().join(file)
}

/// Generates the PKI unless every file is there; whether it did.
pub fn ensure() -> Result<bool, String> {
    if FILES.iter().all(|file| path(file).is_file()) {
        return Ok(false);
    }
    let files = generate()?;
    // Written beside, then moved into place: a run interrupted half-way leaves no PKI
    // whose files do not belong together.
    let (dir, staging) = (dir(), dir().with_extension("new"));
    remove_dir(&staging)?;
    std::fs::create_dir_all(&staging).map_err(|e| format!("create {}: {e}", staging.display()))?;
    for (file, pem) in &files {
        write_pem(&staging.join(file), pem)?;
    }
    remove_dir(&dir)?;
    std::fs::rename(&staging, &dir).map_err(|e| format!("move {} to {}: {e}", staging.display(), dir.display()))?;
    say!("servers", "pki: generated in {}", dir.display());
    Ok(true)
}

fn remove_dir(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("remove {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

/// Writes a PEM file; keys readable by their owner only, as servers and clients expect.
fn write_pem(path: &Path, pem: &str) -> Result<(), String> {
    let private = path.to_string_lossy().ends_with("-key.pem");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .and_then(|mut file| file.write_all(pem.as_bytes()))
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// What a certificate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

/// Whether a certificate is valid now or expired long ago.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Validity {
    Current,
    Expired,
}

/// Every file of the PKI with its PEM text.
fn generate() -> Result<Vec<(&'static str, String)>, String> {
    let ca_key = key()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca =
        CertifiedIssuer::self_signed(ca_params("valkeyrie test CA"), ca_key).map_err(|e| rcgen_error("the CA", e))?;
    let other_ca = CertifiedIssuer::self_signed(ca_params("valkeyrie other CA"), key()?)
        .map_err(|e| rcgen_error("the other CA", e))?;
    let mut files = vec![(CA, ca.pem()), (CA_KEY, ca_key_pem), (OTHER_CA, other_ca.pem())];
    let leaves = [
        (SERVER, SERVER_KEY, Role::Server, Validity::Current, &ca),
        (CLIENT, CLIENT_KEY, Role::Client, Validity::Current, &ca),
        (
            OTHER_CLIENT,
            OTHER_CLIENT_KEY,
            Role::Client,
            Validity::Current,
            &other_ca,
        ),
        (EXPIRED_CLIENT, EXPIRED_CLIENT_KEY, Role::Client, Validity::Expired, &ca),
        (EXPIRED_SERVER, EXPIRED_SERVER_KEY, Role::Server, Validity::Expired, &ca),
    ];
    for (cert, cert_key, role, validity, issuer) in leaves {
        let key = key()?;
        let signed = leaf_params(role, validity)?
            .signed_by(&key, issuer)
            .map_err(|e| rcgen_error(cert, e))?;
        files.extend([(cert, signed.pem()), (cert_key, key.serialize_pem())]);
    }
    Ok(files)
}

fn key() -> Result<KeyPair, String> {
    KeyPair::generate().map_err(|e| rcgen_error("a key", e))
}

fn rcgen_error(what: &str, error: rcgen::Error) -> String {
    format!("pki: generating {what}: {error}")
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "valkeyrie tests");
    name.push(DnType::CommonName, common_name);
    name
}

/// A CA valid for as long as the current certificates.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, Validity::Current);
    params
}

/// A server or client certificate.
fn leaf_params(role: Role, validity: Validity) -> Result<CertificateParams, String> {
    let (common_name, names, usages) = match role {
        Role::Server => (
            "valkeyrie-server",
            SERVER_NAMES.map(str::to_owned).to_vec(),
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        ),
        Role::Client => (CLIENT_CN, Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth]),
    };
    let mut params = CertificateParams::new(names).map_err(|e| rcgen_error("certificate names", e))?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    // OpenSSL builds the chain more reliably with it.
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity);
    Ok(params)
}

/// Current certificates from 2024 to 2100 (no clock is that wrong); expired ones for one
/// day in January 2020.
fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let (not_before, not_after) = match validity {
        Validity::Current => (date_time_ymd(2024, 1, 1), date_time_ymd(2100, 1, 1)),
        Validity::Expired => (date_time_ymd(2020, 1, 1), date_time_ymd(2020, 1, 2)),
    };
    params.not_before = not_before;
    params.not_after = not_after;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_every_file_once_as_pem() {
        let files = generate().unwrap();
        let mut names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        let mut expected = FILES.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected);
        for (name, pem) in files {
            let kind = if name.ends_with("-key.pem") {
                "PRIVATE KEY"
            } else {
                "CERTIFICATE"
            };
            assert!(pem.starts_with(&format!("-----BEGIN {kind}-----")), "{name}: {pem}");
        }
    }
}
