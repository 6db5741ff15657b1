//! Optional TLS on the API listener (rustls, through pingora's re-export): the certificate chain
//! and private key are read from PEM files named in `[server.tls]` when the configuration loads,
//! so `check-config` catches a missing or unreadable file before a replica starts.

use std::sync::Arc;

use pingora::tls::{ServerConfig, TlsAcceptor};

/// A TLS server configuration ready to accept connections: HTTP/1.1 only (ALPN `http/1.1`).
pub fn server_config(cert_path: &str, key_path: &str) -> Result<Arc<ServerConfig>, String> {
    pingora::tls::install_default_crypto_provider();
    for (key, path) in [
        ("server.tls.cert_path", cert_path),
        ("server.tls.key_path", key_path),
    ] {
        // The loader below reports a missing file as an opaque error; name the file instead.
        std::fs::metadata(path).map_err(|e| format!("{key}: cannot read {path}: {e}"))?;
    }
    let loaded = pingora::tls::load_certs_and_key_files(cert_path, key_path)
        .map_err(|e| format!("server.tls: cannot read the certificate or key: {e}"))?;
    let (chain, key) = loaded.ok_or_else(|| {
        format!(
            "server.tls: {cert_path} must hold a PEM certificate and {key_path} a PEM private key \
             (PKCS#8, PKCS#1 or SEC1)"
        )
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("server.tls: the certificate and key do not make a pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The acceptor for a loaded configuration.
pub fn acceptor(config: &Arc<ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(config.clone())
}
