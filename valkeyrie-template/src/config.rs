//! [`TemplateConfig`]: every setting of the backend, with documented defaults.

use std::time::Duration;

use serde::Deserialize;
use valkeyrie_core::config::check_duration;
use valkeyrie_core::raw::BackendConfig;
use valkeyrie_core::{Error, Result, Secret};

use crate::TEMPLATE;

/// Settings of the template store; the URL form is
/// `template://SERVER?request_timeout=2s&token=…`.
///
/// Every duration is at most a year
/// ([`MAX_CONFIG_DURATION`](valkeyrie_core::config::MAX_CONFIG_DURATION)); a longer one is
/// `InvalidConfiguration` naming the field when the store is opened.
///
/// A real backend lists here what its client needs (timeouts, TLS files, credentials), with
/// secrets as [`Secret`] so `Debug` never shows them.
///
/// ```
/// use valkeyrie_template::TemplateConfig;
///
/// let config = TemplateConfig { token: Some("s3cret".into()), ..Default::default() };
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateConfig {
    /// Deadline of each request (default 5 s); a request that takes longer is `Timeout`.
    #[serde(with = "valkeyrie_core::config::duration")]
    pub request_timeout: Duration,
    /// Largest value accepted, in bytes (default 512 KiB).
    pub max_value_size: usize,
    /// An access token, to show how secrets are carried; the stand-in server ignores it.
    pub token: Option<Secret>,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        TemplateConfig {
            request_timeout: Duration::from_secs(5),
            max_value_size: 512 * 1024,
            token: None,
        }
    }
}

impl BackendConfig for TemplateConfig {
    const STORE: &'static str = TEMPLATE;
}

impl TemplateConfig {
    /// Checks what needs no server.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.request_timeout.is_zero() {
            return Err(Error::config(TEMPLATE, "request_timeout", "must be longer than zero"));
        }
        check_duration(TEMPLATE, "request_timeout", self.request_timeout)?;
        if self.max_value_size == 0 {
            return Err(Error::config(TEMPLATE, "max_value_size", "must be at least 1 byte"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use valkeyrie_core::raw::StoreUrl;
    use valkeyrie_core::StoreConfig;

    use super::*;

    #[test]
    fn url_and_typed_config_agree() {
        let url = StoreUrl::parse("template://server-a?request_timeout=250ms&max_value_size=64&token=t0k").unwrap();
        let from_url: TemplateConfig = StoreConfig::Params(url.params).resolve().unwrap();
        let typed = TemplateConfig {
            request_timeout: Duration::from_millis(250),
            max_value_size: 64,
            token: Some(Secret::new("t0k")),
        };
        assert_eq!(from_url, typed);
        assert_eq!(url.endpoints, ["server-a"]);
    }

    #[test]
    fn a_zero_timeout_names_the_field() {
        let config = TemplateConfig {
            request_timeout: Duration::ZERO,
            ..Default::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("request_timeout"), "{err}");
    }

    /// Durations at and past their limits, through the URL: filled as humantime reads them
    /// or refused, then accepted up to a year or refused naming the field.
    #[test]
    fn durations_at_and_past_their_limits() {
        use valkeyrie_core::testsuite::limits::check_duration_fields;

        check_duration_fields::<TemplateConfig>(
            &[("request_timeout", false, |config: &TemplateConfig| {
                config.request_timeout
            })],
            TemplateConfig::validate,
        );
    }
}
