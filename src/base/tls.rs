//! A TLS client config that trusts one CA file only, for connections where the
//! operator names the CA (a school's own CA for `janus.url = "wss://…"`,
//! `janus.ca_file`). The broker's TLS, with client certificates, is `control::tls`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The system's root certificates are trusted (Debian: the ca-certificates package);
/// TLS 1.2 and 1.3 with ring's algorithms.
pub fn system_roots() -> Result<Arc<rustls::ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no usable root certificate on this system ({} errors reading them): install ca-certificates, or name the CA with a *_ca_file setting",
            found.errors.len()
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Only the certificates in `ca_file` are trusted (not the system's roots); TLS 1.2 and
/// 1.3 with ring's algorithms. The error names `field` and says what to give.
pub fn trusting_only(field: &str, ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| {
            format!(
                "{field} {}: cannot read PEM certificates from it ({e}); give the CA certificate (PEM) that signed the server's certificate",
                ca_file.display()
            )
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            format!(
                "{field} {}: a certificate in it is not usable as a CA ({e})",
                ca_file.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{field} {} contains no certificate; give the CA certificate (PEM, `-----BEGIN CERTIFICATE-----`) that signed the server's certificate",
            ca_file.display()
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("the TLS library refused its own settings ({e})"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_refused_naming_the_field() {
        let dir = std::env::temp_dir().join(format!("roomcast-base-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = trusting_only("janus.ca_file", &empty).unwrap_err();
        assert!(error.starts_with("janus.ca_file "), "{error}");
        assert!(error.contains("contains no certificate"), "{error}");
        let error = trusting_only("janus.ca_file", &dir.join("missing.pem")).unwrap_err();
        assert!(error.contains("cannot read PEM certificates"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
