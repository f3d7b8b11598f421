//! Backend configuration: typed configs and `store://…?param=value` URLs reach the same code.
//!
//! Each backend has a typed config (`EtcdConfig`, `BoltlikeConfig`, …) that derives serde's
//! `Deserialize` with defaults and implements [`BackendConfig`]. A config can come three ways:
//! the typed value itself, URL query parameters (deserialized into the same struct by
//! [`from_params`], with durations such as `5s` and lists as `a,b`), or nothing (defaults).
//! [`StoreConfig`] carries one of the three to the backend, which turns it into its typed
//! config with [`StoreConfig::resolve`]. A wrong type or a bad parameter is
//! [`Error::InvalidConfiguration`] naming the store and the field.
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` never show the text.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, IntoDeserializer};
use serde::Deserialize;

use crate::error::{Error, Result};

/// A password or token: read from configs as plain text, but shown as `"***"` by `Debug` and `Display`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Secret::new(secret)
    }
}

/// The longest timeout, poll interval or retry period a backend's config accepts: one year
/// of 365.25 days, humantime's `1y`.
///
/// Clients add these to clocks (`Instant + timeout`), which panics on overflow, and hand
/// them to client libraries that may do the same; a URL such as `connect_timeout=584000000y`
/// parses as a valid `Duration`. [`check_duration`] refuses anything longer, naming the field.
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(31_557_600);

/// Checks a duration field of a backend's config (a timeout, an interval, a retry period):
/// at most [`MAX_CONFIG_DURATION`]. Zero is the backend's own business.
///
/// # Errors
/// [`Error::InvalidConfiguration`] naming `store` and `field` when `value` is longer.
pub fn check_duration(store: &'static str, field: &str, value: Duration) -> Result<()> {
    if value > MAX_CONFIG_DURATION {
        return Err(Error::config(
            store,
            field,
            format!("{value:?} is longer than the longest accepted, {MAX_CONFIG_DURATION:?} (a year)"),
        ));
    }
    Ok(())
}

/// Config durations written as humantime text (`500ms`, `5s`, `1h 30m`): use
/// `#[serde(with = "valkeyrie_core::config::duration")]` on a `Duration` field rather than
/// `humantime_serde`, because humantime 2 panics on some huge texts
/// (`18446744073709551615s 1000000000ns` overflows inside `Duration::new`); [`parse`]
/// refuses those before humantime reads them.
///
/// [`parse`]: duration::parse
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de;

    /// Reads a humantime duration, or says why not. A text whose pieces could add up to
    /// `u64::MAX` seconds or more is refused without reaching humantime: it is longer than
    /// any duration a config accepts ([`MAX_CONFIG_DURATION`](super::MAX_CONFIG_DURATION)).
    ///
    /// # Errors
    /// The reason, without the text (the caller names the field).
    pub fn parse(text: &str) -> Result<Duration, String> {
        if upper_bound_secs(text) >= u128::from(u64::MAX) {
            return Err("too long a duration: more than a year is never accepted".to_owned());
        }
        humantime::parse_duration(text).map_err(|e| format!("not a duration such as `5s` or `1h 30m`: {e}"))
    }

    /// At least the seconds humantime would add up from `text`: each number times its
    /// unit, rounded up, with an unknown unit counted as a year (the longest).
    fn upper_bound_secs(text: &str) -> u128 {
        let mut total: u128 = 0;
        let mut rest = text;
        while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
            rest = &rest[start..];
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            // Over 39 digits does not fit u128: far past any bound.
            let number: u128 = rest[..digits].parse().unwrap_or(u128::MAX);
            rest = rest[digits..].trim_start();
            let unit_len = rest.find(|c: char| !c.is_alphabetic()).unwrap_or(rest.len());
            let (per_unit, divisor): (u128, u128) = match &rest[..unit_len] {
                "nanos" | "nsec" | "ns" => (1, 1_000_000_000),
                "usec" | "us" | "µs" => (1, 1_000_000),
                "millis" | "msec" | "ms" => (1, 1_000),
                "seconds" | "second" | "secs" | "sec" | "s" => (1, 1),
                "minutes" | "minute" | "min" | "mins" | "m" => (60, 1),
                "hours" | "hour" | "hr" | "hrs" | "h" => (3_600, 1),
                "days" | "day" | "d" => (86_400, 1),
                "weeks" | "week" | "wk" | "wks" | "w" => (604_800, 1),
                "months" | "month" | "M" => (2_630_016, 1),
                _ => (31_557_600, 1),
            };
            rest = &rest[unit_len..];
            total = total.saturating_add((number.saturating_mul(per_unit) / divisor).saturating_add(1));
        }
        total
    }

    /// Deserializes a `Duration` from humantime text with [`parse`].
    ///
    /// # Errors
    /// The deserializer's error carrying [`parse`]'s reason.
    pub fn deserialize<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        struct Text;
        impl de::Visitor<'_> for Text {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `5s` or `1h 30m`")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// A backend's typed configuration.
pub trait BackendConfig: DeserializeOwned + Default + Send + Sync + 'static {
    /// The backend's registered name.
    const STORE: &'static str;
    /// The config field the path of a URL goes to (`boltlike:///var/lib/kv.db` → `path`),
    /// or `None` when the backend takes no path.
    const URL_PATH_FIELD: Option<&'static str> = None;
}

/// The configuration handed to a backend's constructor by the registry.
#[derive(Default)]
pub enum StoreConfig {
    /// No configuration: the backend's defaults.
    #[default]
    Default,
    /// A typed config value; its type must be the backend's config type.
    Typed {
        /// The value.
        value: Box<dyn Any + Send + Sync>,
        /// Its type's name, for the error when it is the wrong one.
        type_name: &'static str,
    },
    /// Parameters, such as a URL's query.
    Params(Vec<(String, String)>),
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Default => f.write_str("Default"),
            StoreConfig::Typed { type_name, .. } => write!(f, "Typed({type_name})"),
            // Parameter values may hold passwords: show only the names.
            StoreConfig::Params(params) => f
                .debug_tuple("Params")
                .field(&params.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl<C: BackendConfig> From<C> for StoreConfig {
    fn from(config: C) -> Self {
        StoreConfig::Typed {
            value: Box::new(config),
            type_name: std::any::type_name::<C>(),
        }
    }
}

impl StoreConfig {
    /// Turns this into the backend's typed config `C`.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] for a config of another type or a bad parameter.
    pub fn resolve<C: BackendConfig>(self) -> Result<C> {
        match self {
            StoreConfig::Default => Ok(C::default()),
            StoreConfig::Typed { value, type_name } => value.downcast::<C>().map(|c| *c).map_err(|_| {
                Error::config(
                    C::STORE,
                    "config",
                    format!("expected {}, got {type_name}", std::any::type_name::<C>()),
                )
            }),
            StoreConfig::Params(params) => from_params(C::STORE, &params),
        }
    }
}

/// Deserializes a typed config from `name=value` parameters. Numbers and booleans are parsed
/// from their text, durations use humantime (`500ms`, `5s`), lists are comma-separated.
///
/// # Errors
/// [`Error::InvalidConfiguration`] naming the parameter that is unknown or malformed.
pub fn from_params<C: DeserializeOwned>(store: &'static str, params: &[(String, String)]) -> Result<C> {
    let current = RefCell::new(String::new());
    let entries = params.iter().map(|(name, value)| {
        (
            ParamName {
                name,
                current: &current,
            },
            ParamValue(value),
        )
    });
    C::deserialize(de::value::MapDeserializer::new(entries)).map_err(|err: ParamError| {
        // A missing field is reported after the last parameter was read: name it instead.
        let missing = err
            .0
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let field = missing.unwrap_or_else(|| current.borrow().clone());
        let field = if field.is_empty() { "config".to_owned() } else { field };
        Error::config(store, field, err.0)
    })
}

/// The error of parameter deserialization; the field name is added by [`from_params`].
#[derive(Debug)]
struct ParamError(String);

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParamError {}

impl de::Error for ParamError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ParamError(msg.to_string())
    }
}

/// A parameter name; remembers itself as the field being read, to name it in errors.
struct ParamName<'a> {
    name: &'a str,
    current: &'a RefCell<String>,
}

impl<'de> IntoDeserializer<'de, ParamError> for ParamName<'_> {
    type Deserializer = de::value::StringDeserializer<ParamError>;
    fn into_deserializer(self) -> Self::Deserializer {
        *self.current.borrow_mut() = self.name.to_owned();
        self.name.to_owned().into_deserializer()
    }
}

/// A parameter value in text form, parsed into what the field asks for.
struct ParamValue<'a>(&'a str);

impl<'de> IntoDeserializer<'de, ParamError> for ParamValue<'_> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

macro_rules! parse_number {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {$(
        fn $method<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
            let number: $ty = self.0.trim().parse().map_err(|e| ParamError(format!("{:?} is not a valid {}: {e}", self.0, stringify!($ty))))?;
            visitor.$visit(number)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ParamValue<'_> {
    type Error = ParamError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_str(self.0)
    }

    fn deserialize_bool<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.0.trim() {
            "true" | "1" | "yes" | "on" => visitor.visit_bool(true),
            "false" | "0" | "no" | "off" => visitor.visit_bool(false),
            other => Err(ParamError(format!("{other:?} is not a boolean (true/false)"))),
        }
    }

    parse_number! {
        deserialize_u8 => visit_u8: u8, deserialize_u16 => visit_u16: u16, deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64, deserialize_i8 => visit_i8: i8, deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32, deserialize_i64 => visit_i64: i64, deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        let items = self
            .0
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(ParamValue);
        visitor.visit_seq(de::value::SeqDeserializer::new(items))
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        visitor.visit_enum(self.0.to_owned().into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier ignored_any
    }
}

/// A store URL split into its parts: `scheme://[user[:password]@]host1,host2/path?params`.
/// Its `Debug` output names the parameters but not their values, which may be passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// The store name (the URL scheme).
    pub scheme: String,
    /// The comma-separated hosts of the authority, in order.
    pub endpoints: Vec<String>,
    /// The path, without its leading `/` unless the URL had an empty authority
    /// (`boltlike:///var/lib/kv.db` keeps `/var/lib/kv.db`); `None` when empty.
    pub path: Option<String>,
    /// Query parameters in order, percent-decoded, followed by `username`/`password` from
    /// the user info when present.
    pub params: Vec<(String, String)>,
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreUrl")
            .field("scheme", &self.scheme)
            .field("endpoints", &self.endpoints)
            .field("path", &self.path)
            .field(
                "params",
                &self.params.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl StoreUrl {
    /// Parses a store URL.
    ///
    /// # Errors
    /// [`Error::InvalidConfiguration`] (field `url`) when there is no `scheme://`.
    pub fn parse(url: &str) -> Result<StoreUrl> {
        let invalid = |reason: &str| Error::config("registry", "url", reason.to_owned());
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected `store://…`, found no `://`"))?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "the store name before `://` must be letters, digits, `-` or `_`",
            ));
        }
        let (userinfo, rest) = split_userinfo(rest)?;
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, path) = match before_query.find('/') {
            Some(slash) => before_query.split_at(slash),
            None => (before_query, ""),
        };
        // `boltlike:///var/lib/kv.db`: with no authority at all, the path is absolute.
        let no_authority = userinfo.is_none() && hosts.is_empty();
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let endpoints = hosts.split(',').filter(|h| !h.is_empty()).map(decode).collect();
        let path = match (no_authority, path) {
            (_, "" | "/") => None,
            (true, path) => Some(decode(path)),
            (false, path) => Some(decode(&path[1..])),
        };
        let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').map_or((userinfo, None), |(u, p)| (u, Some(p)));
            if !user.is_empty() {
                params.push(("username".to_owned(), decode(user)));
            }
            if let Some(password) = password {
                params.push(("password".to_owned(), decode(password)));
            }
        }
        Ok(StoreUrl {
            scheme: scheme.to_owned(),
            endpoints,
            path,
            params,
        })
    }
}

/// Splits the user info off what follows `scheme://`, without quoting any byte of it in
/// an error (it may hold a password).
///
/// RFC 3986 wants `/`, `?`, `#` and `@` percent-encoded in a password, but people paste
/// passwords as they are. The user info ends at the last `@` of the authority (the text
/// before the first `/` or `?`) when a host list (or nothing) follows it, so `@` and `#` need no
/// encoding. Otherwise a password holding `/` or `?` is recognised when exactly one `@`
/// further on is followed by a host list and the authority cannot be read as one itself
/// (`user:pa/ss@host`: port `pa`). Any other URL with an `@` past the authority is refused:
/// an `@` in a parameter and one in a password cannot be told apart.
fn split_userinfo(rest: &str) -> Result<(Option<&str>, &str)> {
    let host_list_after = |at: usize| {
        let after = &rest[at + 1..];
        let hosts = &after[..after.find(['/', '?']).unwrap_or(after.len())];
        !hosts.is_empty() && is_host_list(hosts)
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let later_at = rest[authority_end..].contains('@');
    if let Some(at) = authority.rfind('@') {
        // No host at all is fine (`memory://user:pw@`) unless an `@` follows.
        let hosts = &authority[at + 1..];
        if is_host_list(hosts) && !(hosts.is_empty() && later_at) {
            return Ok((Some(&rest[..at]), &rest[at + 1..]));
        }
    }
    if !rest.contains('@') {
        return Ok((None, rest));
    }
    let candidates: Vec<usize> = rest
        .match_indices('@')
        .map(|(at, _)| at)
        .filter(|&at| host_list_after(at))
        .collect();
    match candidates.as_slice() {
        [at] if !is_host_list(authority) => Ok((Some(&rest[..*at]), &rest[at + 1..])),
        _ => Err(Error::config(
            "registry",
            "url",
            "an `@` follows the URL's host part: percent-encode `/`, `?`, `#` and `@` in a password \
             (%2F, %3F, %23, %40), and `@` in a parameter (%40)",
        )),
    }
}

/// Whether `text` reads as `host[:port],…`: names of letters, digits, `.`, `-` and `_`, or
/// bracketed IPv6 addresses, with numeric ports. Empty counts (a path-only URL), an empty
/// host between commas does not.
fn is_host_list(text: &str) -> bool {
    let name = |host: &str| {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    let port = |port: &str| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    text.is_empty()
        || text.split(',').all(|host| match host.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((address, after)) => {
                    address
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'%'))
                        && (after.is_empty() || after.strip_prefix(':').is_some_and(port))
                }
                None => false,
            },
            None => match host.rsplit_once(':') {
                Some((host, p)) => name(host) && port(p),
                None => name(host),
            },
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ErrorKind;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct DemoConfig {
        #[serde(with = "humantime_serde")]
        connect_timeout: Option<Duration>,
        pool_size: usize,
        tls: bool,
        password: Option<Secret>,
        tags: Vec<String>,
    }

    impl BackendConfig for DemoConfig {
        const STORE: &'static str = "demo";
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn params_reach_typed_fields() {
        let config: DemoConfig = StoreConfig::Params(params(&[
            ("connect_timeout", "5s"),
            ("pool_size", "8"),
            ("tls", "true"),
            ("password", "hunter2"),
            ("tags", "a,b"),
        ]))
        .resolve()
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(config.pool_size, 8);
        assert!(config.tls);
        assert_eq!(config.password.as_ref().map(Secret::expose), Some("hunter2"));
        assert_eq!(config.tags, vec!["a", "b"]);
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn bad_or_unknown_params_name_the_field() {
        let err = from_params::<DemoConfig>("demo", &params(&[("tls", "true"), ("pool_size", "many")])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfiguration);
        assert!(
            matches!(&err, Error::InvalidConfiguration { field, .. } if field == "pool_size"),
            "{err}"
        );
        let err = from_params::<DemoConfig>("demo", &params(&[("conect_timeout", "5s")])).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfiguration { field, .. } if field == "conect_timeout"),
            "{err}"
        );
        let err = from_params::<DemoConfig>("demo", &params(&[("connect_timeout", "soon")])).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfiguration { field, .. } if field == "connect_timeout"),
            "{err}"
        );
    }

    #[test]
    fn typed_config_of_the_wrong_type_is_rejected() {
        let err = StoreConfig::from(DemoConfig::default())
            .resolve::<OtherConfig>()
            .unwrap_err();
        assert!(err.to_string().contains("DemoConfig"), "{err}");
        assert_eq!(err.store(), "other");
    }

    #[derive(Debug, Default, Deserialize)]
    struct OtherConfig {}

    impl BackendConfig for OtherConfig {
        const STORE: &'static str = "other";
    }

    #[test]
    fn urls_split_into_endpoints_path_and_params() {
        let url = StoreUrl::parse("etcd://h1:2379,h2:2379/?connect_timeout=5s").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.scheme, "etcd");
        assert_eq!(url.endpoints, ["h1:2379", "h2:2379"]);
        assert_eq!(url.path, None);
        assert_eq!(url.params, params(&[("connect_timeout", "5s")]));

        let url = StoreUrl::parse("boltlike:///var/lib/app/kv.db").unwrap_or_else(|e| panic!("{e}"));
        assert!(url.endpoints.is_empty());
        assert_eq!(url.path.as_deref(), Some("/var/lib/app/kv.db"));

        let url = StoreUrl::parse("redis://user:p%40ss@localhost:6379/2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.path.as_deref(), Some("2"));
        assert_eq!(url.params, params(&[("username", "user"), ("password", "p@ss")]));
        assert!(StoreUrl::parse("no-scheme").is_err());
    }

    /// Every printable ASCII character but the space, in an order whose 4-character
    /// windows are distinctive.
    const EVERY_PRINTABLE: &str =
        "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

    /// Whether `text` holds any 4-character piece of `secret`.
    fn leaks(text: &str, secret: &str) -> Option<String> {
        let chars: Vec<char> = secret.chars().collect();
        chars
            .windows(4)
            .map(|w| w.iter().collect::<String>())
            .find(|piece| text.contains(piece.as_str()))
    }

    #[test]
    fn passwords_with_reserved_characters_parse_or_are_refused_without_a_trace() {
        for password in ["pa/ss", "pa?ss", "pa#ss", "pa@ss", "p@/?#ss", EVERY_PRINTABLE] {
            for tail in [
                "h:6379/2",
                "h:6379",
                "h1:1,h2:2?pool_size=8",
                "h:6379/2?client_name=a%40b",
            ] {
                let url = format!("redis://user:{password}@{tail}");
                match StoreUrl::parse(&url) {
                    Ok(parsed) => {
                        let got = parsed
                            .params
                            .iter()
                            .find(|(k, _)| k == "password")
                            .map(|(_, v)| v.as_str());
                        let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
                        assert_eq!(got, Some(decoded.as_ref()), "{url}");
                        assert!(!parsed.endpoints.iter().any(|e| e.contains("ss")), "{url}: {parsed:?}");
                        let debug = format!("{parsed:?}");
                        assert_eq!(leaks(&debug, password), None, "{debug}");
                    }
                    Err(err) => {
                        let text = format!("{err} {err:?}");
                        assert_eq!(leaks(&text, password), None, "{text}");
                    }
                }
            }
        }
        let url = StoreUrl::parse("redis://u:pa/ss@h:6379/2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.endpoints, ["h:6379"]);
        assert_eq!(url.path.as_deref(), Some("2"));
        let url = StoreUrl::parse("etcd://u:p?x@h1:2379,h2:2379?request_timeout=1s").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.endpoints, ["h1:2379", "h2:2379"]);
        assert_eq!(url.params[0], ("request_timeout".to_owned(), "1s".to_owned()));
        // An `@` in a parameter of a URL without user info is refused, naming the remedy.
        let err = StoreUrl::parse("redis://h:6379/0?client_name=a@b").unwrap_err();
        assert!(err.to_string().contains("%40"), "{err}");
    }

    #[test]
    fn durations_humantime_would_panic_on_are_refused() {
        // humantime 2.4 panics on these (a carry into `u64::MAX` seconds in `Duration::new`).
        for text in [
            "18446744073709551615s 1000000000ns",
            "18446744073709551615s 999999999ns 1ns",
        ] {
            let err = duration::parse(text).unwrap_err();
            assert!(err.contains("too long"), "{text}: {err}");
        }
        // Found by the config_dynamodb fuzz target: a number over 39 digits overflowed the bound.
        assert!(duration::parse("18446744073709551111111111111111111111116s").is_err());
        assert!(duration::parse(&"9".repeat(60)).is_err());
        assert_eq!(duration::parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration::parse("1y"), Ok(MAX_CONFIG_DURATION));
        assert_eq!(duration::parse("584000000ns"), Ok(Duration::from_millis(584)));
        // Just under `u64::MAX` seconds: a valid `Duration`, which `check_duration` refuses.
        let huge = duration::parse("584000000000y").unwrap();
        assert!(check_duration("demo", "connect_timeout", huge).is_err());
        assert!(duration::parse("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "\"***\" ***");
        let debug = format!("{:?}", StoreConfig::Params(params(&[("password", "hunter2")])));
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
