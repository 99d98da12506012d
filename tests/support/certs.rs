//! Test certificates made with the openssl command: a CA, a server certificate for
//! 127.0.0.1 and a client certificate, for the TLS tests (mosquitto, Janus over wss://).

use std::path::Path;
use std::process::Command;

/// Makes a CA and a server certificate for 127.0.0.1 with the openssl command.
pub fn make_certs(dir: &Path, name: &str) {
    make_certs_for(dir, name, "127.0.0.1")
}

/// Makes a CA and a server certificate for the address `ip` (`server.pem`, `server.key`,
/// `{name}-ca.pem`), and a client certificate.
pub fn make_certs_for(dir: &Path, name: &str, ip: &str) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    std::fs::write(dir.join("ext.cnf"), format!("subjectAltName=IP:{ip}\n")).unwrap();
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &format!("/CN={ip}"),
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    // A client certificate for the box (X.509 v3: extensions), signed by the same CA.
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=box-17",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "client.cnf",
        "-out",
        "client.pem",
    ]);
    // mosquitto drops to its own user: let it read the files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}
