//! The security suite on the secured Redis: `rediss://`, `tls-auth-clients yes`, ACL users.

valkeyrie_security::security_suite!(valkeyrie_security::Secured::Redis);
