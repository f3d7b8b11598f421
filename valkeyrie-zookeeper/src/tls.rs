//! ZooKeeper over TLS (feature `tls`): the server's `secureClientPort`, with the TLS
//! settings every network backend shares (`ca_file`, `cert_file`, `key_file`; see
//! [`valkeyrie_core::tls`]).
//!
//! zookeeper-client's TLS is built on rustls with its default provider, aws-lc-rs, and
//! makes its rustls config with the process-wide provider. A graph with this feature
//! therefore holds both ring (every other backend names ring explicitly) and aws-lc-rs,
//! and rustls cannot pick one by itself. So when a TLS handle is built, and only then,
//! ring is installed as the process-wide provider *if no provider is installed yet*; a
//! program that installs its own before opening the store keeps it.
//!
//! Without a `ca_file` the public web roots (`webpki-root-certs`) are trusted, as on every
//! backend. zookeeper-client verifies the server's certificate against the endpoint's host
//! and cannot be given another name, so `server_name` is refused.

#[cfg(not(feature = "tls"))]
pub(crate) use disabled::ZkTls;
#[cfg(feature = "tls")]
pub(crate) use enabled::ZkTls;

#[cfg(feature = "tls")]
mod enabled {
    use std::time::Duration;

    use valkeyrie_core::tls::{self, TlsMaterial};
    use valkeyrie_core::{Error, Result};
    use zookeeper_client::{Connector, TlsOptions};

    use crate::ZOOKEEPER;

    /// The TLS of a handle's sessions: zookeeper-client's options, built once from the
    /// files `TlsConfig::load` read, and those files, for the refusal probe.
    pub(crate) struct ZkTls {
        options: TlsOptions,
        material: TlsMaterial,
    }

    impl ZkTls {
        /// Builds the options, and installs ring as the process-wide provider unless one
        /// is installed (see the [module docs](super)).
        ///
        /// # Errors
        /// [`Error::InvalidConfiguration`] naming the field whose file zookeeper-client
        /// cannot use.
        pub(crate) fn new(material: TlsMaterial) -> Result<Self> {
            install_ring_unless_a_provider_is_installed();
            let roots = material.roots_pem();
            let mut options = TlsOptions::new()
                .with_pem_ca(text("ca_file", &roots)?)
                .map_err(|e| Error::config(ZOOKEEPER, "ca_file", e.to_string()))?;
            if let Some((cert, key)) = material.identity_pem() {
                options = options
                    .with_pem_identity(text("cert_file", cert)?, text("key_file", key)?)
                    .map_err(|e| Error::config(ZOOKEEPER, "cert_file", e.to_string()))?;
            }
            Ok(ZkTls { options, material })
        }

        /// `connector` with these TLS settings.
        pub(crate) fn apply(&self, connector: Connector) -> Connector {
            connector.with_tls(self.options.clone())
        }

        /// Why a TLS connection to the first of `hosts` (`tcp+tls://h:p,…`) fails, when a
        /// certificate is refused by either side.
        ///
        /// Cancel safe: dropping the future closes the probe's connection.
        pub(crate) async fn certificate_refusal(&self, hosts: &str, within: Duration) -> Option<rustls::Error> {
            let config = self.material.rustls_client_config(ZOOKEEPER).ok()?;
            let first = hosts.split(',').next()?;
            tls::certificate_refusal(&config, tls::strip_scheme(first), None, &[], within).await
        }
    }

    /// Installs ring as the process-wide rustls provider unless one is installed: see the
    /// [module docs](super).
    fn install_ring_unless_a_provider_is_installed() {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // An error means another thread installed one meanwhile: that one serves.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    }

    /// A PEM file's text: zookeeper-client takes PEM as `&str`.
    fn text<'a>(field: &str, pem: &'a [u8]) -> Result<&'a str> {
        std::str::from_utf8(pem).map_err(|_| Error::config(ZOOKEEPER, field, "the PEM file is not UTF-8 text"))
    }

    #[cfg(test)]
    mod tests {
        use valkeyrie_core::tls::TlsConfig;

        #[test]
        fn the_web_roots_make_a_ca_zookeeper_client_takes() {
            let material = TlsConfig::default().load("zookeeper").expect("no files to read");
            let pem = std::str::from_utf8(&material.roots_pem())
                .expect("PEM is text")
                .to_owned();
            assert!(pem.matches("BEGIN CERTIFICATE").count() > 100);
            zookeeper_client::TlsOptions::new()
                .with_pem_ca(&pem)
                .expect("zookeeper-client parses the web roots");
        }
    }
}

#[cfg(not(feature = "tls"))]
mod disabled {
    use std::convert::Infallible;
    use std::time::Duration;

    use valkeyrie_core::tls::TlsMaterial;
    use valkeyrie_core::{Error, Result};
    use zookeeper_client::Connector;

    use crate::ZOOKEEPER;

    /// Without the `tls` feature there is no TLS: no value of this type exists.
    pub(crate) enum ZkTls {}

    impl ZkTls {
        /// Refuses TLS settings: the password would otherwise travel in clear.
        ///
        /// # Errors
        /// Always [`Error::InvalidConfiguration`] naming the feature.
        pub(crate) fn new(_material: TlsMaterial) -> Result<Self> {
            Err(Error::config(
                ZOOKEEPER,
                "tls",
                "ZooKeeper over TLS needs the `tls` feature of valkeyrie-zookeeper (`zookeeper-tls` of valkeyrie)",
            ))
        }

        /// Never called: no value exists.
        pub(crate) fn apply(&self, _connector: Connector) -> Connector {
            match *self {}
        }

        /// Never called: no value exists.
        pub(crate) async fn certificate_refusal(&self, _hosts: &str, _within: Duration) -> Option<Infallible> {
            match *self {}
        }
    }
}
