//! TLS to the broker: a rustls client config (ring provider) built from the PEM files the
//! config names. Any problem is an error that stops the agent from starting: roomcast
//! never falls back to plaintext.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS to the broker cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "mqtt.ca_file {path}: cannot read PEM certificates from it ({source}); give the CA certificate (PEM) that signed the broker's certificate"
    )]
    ReadCa {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "mqtt.ca_file {path} contains no certificate; give the CA certificate (PEM, `-----BEGIN CERTIFICATE-----`) that signed the broker's certificate"
    )]
    NoCa { path: PathBuf },
    #[error("mqtt.ca_file {path}: a certificate in it is not usable as a CA ({source})")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "mqtt.client_cert {path}: cannot read PEM certificates from it ({source}); give this box's certificate (PEM), followed by any intermediates"
    )]
    ReadCert {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("mqtt.client_cert {path} contains no certificate")]
    NoCert { path: PathBuf },
    #[error(
        "mqtt.client_key {path}: cannot read a private key from it ({source}); give the PEM private key (PKCS#8, PKCS#1 or SEC1) of mqtt.client_cert"
    )]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "mqtt.client_cert and mqtt.client_key cannot be used together ({source}); check that the key belongs to the certificate and that the certificate is X.509 v3"
    )]
    ClientAuth {
        #[source]
        source: rustls::Error,
    },
    #[error("the TLS library refused its own settings ({source})")]
    Provider {
        #[source]
        source: rustls::Error,
    },
}

/// Where the TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    /// This box's certificate chain and key, for brokers that require client certificates.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Builds the rustls client config: only the given CA is trusted (not the system's
/// roots), TLS 1.2 and 1.3, ring's algorithms.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&files.ca_file).map_err(|source| TlsError::ReadCa {
        path: files.ca_file.clone(),
        source,
    })? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: files.ca_file.clone(),
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCa {
            path: files.ca_file.clone(),
        });
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|source| TlsError::Provider { source })?
    .with_root_certificates(roots);
    let config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let certs = read_certs(cert_path).map_err(|source| TlsError::ReadCert {
                path: cert_path.clone(),
                source,
            })?;
            if certs.is_empty() {
                return Err(TlsError::NoCert {
                    path: cert_path.clone(),
                });
            }
            let key =
                PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::ReadKey {
                    path: key_path.clone(),
                    source,
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|source| TlsError::ClientAuth { source })?
        }
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    CertificateDer::pem_file_iter(path)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("roomcast-tls-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_without_certificates_is_refused_with_the_field_named() {
        let dir = temp_dir("nocert");
        let ca = write(&dir, "ca.pem", "this is not a certificate\n");
        let err = client_config(&TlsFiles {
            ca_file: ca,
            client: None,
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("mqtt.ca_file "), "{text}");
        assert!(text.contains("contains no certificate"), "{text}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_missing_file_is_refused() {
        let err = client_config(&TlsFiles {
            ca_file: "/nonexistent/ca.pem".into(),
            client: None,
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::ReadCa { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_corrupt_certificate_is_refused() {
        let dir = temp_dir("corrupt");
        let ca = write(
            &dir,
            "ca.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let err = client_config(&TlsFiles {
            ca_file: ca,
            client: None,
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("mqtt.ca_file"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
