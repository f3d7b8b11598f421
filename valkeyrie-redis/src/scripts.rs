//! The Lua scripts: every write, compare-and-set, lock step and transaction in one round
//! trip. All but the transaction act on one key (and, in the raw layout, its index key in
//! the same hash slot), so they work on a cluster too; a transaction's keys share one hash
//! slot. Each returns a status string: `ok` or
//! `ok:<index>`, `exists`, `notfound`, `modified`, `busy:<ms left>`, `gone`, `taken` or
//! `failed:<compare>`.
//!
//! Each script exists in two layouts, one per [`ValueEncoding`]: the same body on top of the
//! layout's functions. A written value arrives as its payload (`codec::payload`): in the
//! envelope layout the whole envelope with a placeholder where the index goes, which the
//! script replaces with the index it assigns; in the raw layout the value's bytes. Indexes
//! travel as decimal strings.

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use fred::types::scripts::Script;
use valkeyrie_core::raw::Key;

use crate::client::millis;
use crate::codec;
use crate::config::ValueEncoding;

/// One Lua function a script may call: its name and its definition (with the comments and
/// constants that belong to it).
type Function = (&'static str, &'static str);

/// How the envelope layout (the default, the Go JSON codec's) stores a pair: the key holds
/// `{"Key":…,"Value":"<base64>","LastIndex":<n>}`. Each layout defines the same functions:
/// `current_index`, `latest_index`, `index_state`, `store`, `remove`, `set_expiry`,
/// `clear_expiry` and `value_is`; a script defines those it calls ([`assemble`]).
const ENVELOPE_LAYOUT: &[Function] = &[
    (
        "current_index",
        r#"
local function current_index(key)
  -- The envelope's last bytes first: both this store and Go's write `LastIndex` as the
  -- last field, so reading (and scanning) the whole value, which made every write cost
  -- O(value size) in Lua, is needed only for what another client wrote.
  local tail = redis.call('GETRANGE', key, -48, -1)
  if tail == '' and redis.call('EXISTS', key) == 0 then return nil end
  local found = string.match(tail, '"LastIndex":(%d+)}$')
  if found and redis.call('GETRANGE', key, 0, 0) == '{' then return tonumber(found) end
  local current = redis.call('GET', key)
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and tonumber(decoded['LastIndex']) then
    return tonumber(decoded['LastIndex'])
  end
  return 0
end
"#,
    ),
    (
        "latest_index",
        r#"
-- An index at least as large as the key's, for choosing the next one: the envelope's tail
-- alone (an over-estimate from a value that merely ends like an envelope only makes the
-- next index larger), else what `current_index` finds.
local function latest_index(key)
  local tail = redis.call('GETRANGE', key, -48, -1)
  local found = string.match(tail, '"LastIndex":(%d+)}$')
  if found then return tonumber(found) end
  if tail == '' and redis.call('EXISTS', key) == 0 then return nil end
  return current_index(key)
end
"#,
    ),
    (
        "index_state",
        r#"
-- 'ok' while the key holds the write that assigned `index` (decimal text), else 'gone' or
-- 'taken'. Indexes never repeat, so the envelope's tail ending in that index is that write.
local function index_state(key, index)
  local tail = '"LastIndex":' .. index .. '}'
  if redis.call('GETRANGE', key, -#tail, -1) == tail then return 'ok' end
  if redis.call('EXISTS', key) == 0 then return 'gone' end
  return 'taken'
end
"#,
    ),
    (
        "store",
        r#"
-- The payload ends with codec::INDEX_PLACEHOLDER, 16 digits and '}', in place of the index.
-- A large payload is written as it came and the index over the placeholder: building the
-- envelope as a Lua string costs a copy of the value and its garbage, about 2 µs per KiB on
-- the server, and a SETRANGE one call, about 2 µs (README, "Performance"). The watch sees a
-- second notification (`setrange`) for such a write and tells it apart by its index.
local function store(key, payload, ttl, index)
  local digits = text(index)
  local in_place = #payload > 2048 and #digits == 16
  local body = in_place and payload or (string.sub(payload, 1, -18) .. digits .. '}')
  if tonumber(ttl) > 0 then redis.call('SET', key, body, 'PX', ttl) else redis.call('SET', key, body) end
  if in_place then redis.call('SETRANGE', key, #payload - 17, digits) end
end
"#,
    ),
    (
        "remove",
        r#"
local function remove(key) redis.call('DEL', key) end
"#,
    ),
    (
        "set_expiry",
        r#"
local function set_expiry(key, ttl) redis.call('PEXPIRE', key, ttl) end
"#,
    ),
    (
        "clear_expiry",
        r#"
local function clear_expiry(key) redis.call('PERSIST', key) end
"#,
    ),
    (
        "is_base64",
        r#"
-- Whether `value` is what codec.rs decodes as base64 (padded, standard alphabet).
local function is_base64(value)
  return #value % 4 == 0 and string.match(value, '^[A-Za-z0-9+/]*=?=?$') ~= nil
end
"#,
    ),
    (
        "value_is",
        r#"
-- Whether the key holds the value given as `b64` (its envelope's encoding) and `raw`: as
-- codec.rs reads it, an envelope's Value, else the raw bytes another client wrote.
local function value_is(key, b64, raw)
  local current = redis.call('GET', key)
  if not current then return false end
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and type(decoded['LastIndex']) == 'number' then
    local value = decoded['Value']
    if value == nil or value == cjson.null then return b64 == '' end
    if type(value) == 'string' and is_base64(value) then return value == b64 end
  end
  return current == raw
end
"#,
    ),
];

/// How the raw layout (`value_encoding = "raw"`) stores a pair: the key holds the value's
/// bytes and its index key (`codec::index_key`, in the same hash slot) the index as decimal
/// text, both with the same expiry. A key without an index key (written by another client)
/// has index 0.
const RAW_LAYOUT: &[Function] = &[
    (
        "index_key",
        r#"
local INDEX_SUFFIX = '\0valkeyrie-index'
-- codec::index_key: the key plus the suffix, in braces unless the key has a hash tag of its
-- own (or a `}` that braces cannot hold), so that both land in the key's hash slot.
local function index_key(key)
  local open = string.find(key, '{', 1, true)
  local close = open and string.find(key, '}', open + 1, true)
  if (close and close > open + 1) or string.find(key, '}', 1, true) then return key .. INDEX_SUFFIX end
  return '{' .. key .. '}' .. INDEX_SUFFIX
end
"#,
    ),
    (
        "current_index",
        r#"
local function current_index(key)
  if redis.call('EXISTS', key) == 0 then return nil end
  return tonumber(redis.call('GET', index_key(key))) or 0
end
"#,
    ),
    (
        "latest_index",
        r#"
local function latest_index(key) return current_index(key) end
"#,
    ),
    (
        "index_state",
        r#"
local function index_state(key, index)
  local current = current_index(key)
  if not current then return 'gone' end
  if text(current) ~= index then return 'taken' end
  return 'ok'
end
"#,
    ),
    (
        "store",
        r#"
local function store(key, value, ttl, index)
  if tonumber(ttl) > 0 then
    redis.call('SET', key, value, 'PX', ttl)
    redis.call('SET', index_key(key), text(index), 'PX', ttl)
  else
    redis.call('SET', key, value)
    redis.call('SET', index_key(key), text(index))
  end
end
"#,
    ),
    (
        "remove",
        r#"
local function remove(key) redis.call('DEL', key, index_key(key)) end
"#,
    ),
    (
        "set_expiry",
        r#"
local function set_expiry(key, ttl)
  redis.call('PEXPIRE', key, ttl)
  redis.call('PEXPIRE', index_key(key), ttl)
end
"#,
    ),
    (
        "clear_expiry",
        r#"
local function clear_expiry(key)
  redis.call('PERSIST', key)
  redis.call('PERSIST', index_key(key))
end
"#,
    ),
    (
        "value_is",
        r#"
local function value_is(key, b64, raw) return redis.call('GET', key) == raw end
"#,
    ),
];

/// Before the layout: what its functions use.
const HEAD: &[Function] = &[(
    "text",
    r#"
local function text(index) return string.format('%.0f', index) end
"#,
)];

/// After the layout: the helpers built on it.
const PRELUDE: &[Function] = &[
    (
        "next_index",
        r#"
-- The next index of `key`: the server's clock in microseconds, or one more than the key's
-- index if that is not smaller. `absent` says the caller knows the key does not exist.
local function next_index(key, absent)
  local time = redis.call('TIME')
  local index = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local last = not absent and latest_index(key)
  if last and last >= index then index = last + 1 end
  return index
end
"#,
    ),
    (
        "lock_state",
        r#"
-- 'ok' while the lock acquisition that wrote `index` holds the key, else 'gone' or 'taken'.
-- A key without an expiry was released (or rewritten without a TTL): nobody holds it.
local function lock_state(key, index)
  local state = index_state(key, index)
  if state ~= 'ok' then return state end
  if redis.call('PTTL', key) < 0 then return 'gone' end
  return 'ok'
end
"#,
    ),
];

/// `PUT key | payload, ttl_ms` → `ok:<index>`.
const PUT: &str = r#"
local index = next_index(KEYS[1])
store(KEYS[1], ARGV[1], ARGV[2], index)
return 'ok:' .. text(index)
"#;

/// `CREATE key | payload, ttl_ms` → `ok:<index>` or `exists`.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
local index = next_index(KEYS[1], true)
store(KEYS[1], ARGV[1], ARGV[2], index)
return 'ok:' .. text(index)
"#;

/// `CAS key | payload, ttl_ms, expected` → `ok:<index>`, `notfound` or `modified`.
const CAS: &str = r#"
local current = current_index(KEYS[1])
if not current then return 'notfound' end
if text(current) ~= ARGV[3] then return 'modified' end
local index = next_index(KEYS[1])
store(KEYS[1], ARGV[1], ARGV[2], index)
return 'ok:' .. text(index)
"#;

/// `CAD key | expected` → `ok`, `notfound` or `modified`.
const CAD: &str = r#"
local current = current_index(KEYS[1])
if not current then return 'notfound' end
if text(current) ~= ARGV[1] then return 'modified' end
remove(KEYS[1])
return 'ok'
"#;

/// `DELETE key` → `ok` or `notfound`: the raw layout's delete, which takes the index key too.
const DELETE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'notfound' end
remove(KEYS[1])
return 'ok'
"#;

/// `LOCK key | payload, ttl_ms` → `ok:<index>` or `busy:<ms left>`. A key with an expiry
/// is a held lock; a key without one (a value left after an unlock, or plain data) is free.
const LOCK: &str = r#"
local left = redis.call('PTTL', KEYS[1])
if left >= 0 then return 'busy:' .. left end
local index = next_index(KEYS[1], left == -2)
store(KEYS[1], ARGV[1], ARGV[2], index)
return 'ok:' .. text(index)
"#;

/// `RENEW key | expected, ttl_ms` → `ok`, `gone` or `taken`. A released lock (no expiry)
/// is `gone`: a late renewal must not lock it again.
const RENEW: &str = r#"
local state = lock_state(KEYS[1], ARGV[1])
if state ~= 'ok' then return state end
set_expiry(KEYS[1], ARGV[2])
return 'ok'
"#;

/// `UNLOCK key | expected, delete ("1"/"0")` → `ok`, `gone` or `taken`. Without delete, the
/// value stays and loses its expiry, which frees the lock.
const UNLOCK: &str = r#"
local state = index_state(KEYS[1], ARGV[1])
if state ~= 'ok' then return state end
if ARGV[2] == '1' then remove(KEYS[1]) else clear_expiry(KEYS[1]) end
return 'ok'
"#;

/// `COMMIT compared keys…, written keys… | count, (kind, a, b) per compare,
/// (kind, payload, ttl_ms) per operation` → `ok` or `failed:<position>`.
///
/// `count` compares come first in KEYS. A compare is `exists`, `absent`, `index` (a: the
/// index), `value` (a: the envelope's base64, b: the raw bytes, for a value another client
/// wrote) or `held` (a: the fencing token); unused operands are empty. An operation is `put`
/// or `del` (the latter with empty operands). Fixed widths keep the positions plain
/// arithmetic.
const COMMIT: &str = r#"
local function holds(key, kind, a, b)
  if kind == 'exists' then return redis.call('EXISTS', key) == 1 end
  if kind == 'absent' then return redis.call('EXISTS', key) == 0 end
  if kind == 'index' then
    local current = current_index(key)
    return current ~= nil and text(current) == a
  end
  if kind == 'value' then return value_is(key, a, b) end
  if kind == 'held' then return lock_state(key, a) == 'ok' end
  return error('unknown compare ' .. kind)
end
local count = tonumber(ARGV[1])
for i = 1, count do
  local at = 2 + (i - 1) * 3
  if not holds(KEYS[i], ARGV[at], ARGV[at + 1], ARGV[at + 2]) then return 'failed:' .. (i - 1) end
end
local ops = 2 + count * 3
for i = count + 1, #KEYS do
  local at = ops + (i - count - 1) * 3
  if ARGV[at] == 'put' then
    store(KEYS[i], ARGV[at + 1], ARGV[at + 2], next_index(KEYS[i]))
  else
    remove(KEYS[i])
  end
end
return 'ok'
"#;

/// The arguments of a write (`payload, ttl_ms`, what `store()` takes): `ttl` 0 for none,
/// which also clears an earlier expiry.
pub(crate) fn write_args(encoding: ValueEncoding, key: &Key, value: &Bytes, ttl: Option<Duration>) -> [Bytes; 2] {
    [
        codec::payload(encoding, key.as_str(), value),
        ttl.map_or_else(|| "0".to_owned(), millis).into(),
    ]
}

/// Every script of one layout, compiled once per process.
pub(crate) struct Scripts {
    pub(crate) put: Script,
    pub(crate) create: Script,
    pub(crate) cas: Script,
    pub(crate) cad: Script,
    pub(crate) delete: Script,
    pub(crate) lock: Script,
    pub(crate) renew: Script,
    pub(crate) unlock: Script,
    pub(crate) commit: Script,
}

/// The script running `body` on `layout`: the functions it calls, directly or through one
/// another, in definition order (a Lua local is visible only below its definition), then
/// the body. Redis runs a script's whole text on every call, and defining a function costs
/// each call a closure: the put script defining only its five takes about 8 µs of server
/// time where defining all fourteen took 10 (README, "Performance").
fn assemble(layout: &[Function], body: &str) -> String {
    let functions: Vec<Function> = [HEAD, layout, PRELUDE].concat();
    let mut needed = vec![false; functions.len()];
    let mut unread = vec![body];
    while let Some(text) = unread.pop() {
        for (needs, (name, source)) in needed.iter_mut().zip(&functions) {
            if !*needs && calls(text, name) {
                *needs = true;
                unread.push(source);
            }
        }
    }
    let mut script: String = functions
        .iter()
        .zip(needed)
        .filter_map(|((_, source), needs)| needs.then_some(*source))
        .collect();
    script.push_str(body);
    script
}

/// Whether Lua `text` calls the function `name` (`name(` not ending a longer identifier).
fn calls(text: &str, name: &str) -> bool {
    let call = format!("{name}(");
    text.match_indices(&call).any(|(at, _)| {
        text[..at]
            .chars()
            .next_back()
            .is_none_or(|before| !(before.is_ascii_alphanumeric() || before == '_'))
    })
}

impl Scripts {
    fn new(layout: &[Function]) -> Scripts {
        let script = |body: &str| Script::from_lua(assemble(layout, body));
        Scripts {
            put: script(PUT),
            create: script(CREATE),
            cas: script(CAS),
            cad: script(CAD),
            delete: script(DELETE),
            lock: script(LOCK),
            renew: script(RENEW),
            unlock: script(UNLOCK),
            commit: script(COMMIT),
        }
    }

    /// The scripts of `encoding`'s layout; their SHA1s are computed once.
    pub(crate) fn of(encoding: ValueEncoding) -> &'static Scripts {
        static ENVELOPE: LazyLock<Scripts> = LazyLock::new(|| Scripts::new(ENVELOPE_LAYOUT));
        static RAW: LazyLock<Scripts> = LazyLock::new(|| Scripts::new(RAW_LAYOUT));
        match encoding {
            ValueEncoding::Envelope => &ENVELOPE,
            ValueEncoding::Raw => &RAW,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defines(script: &str, name: &str) -> Option<usize> {
        script.find(&format!("local function {name}("))
    }

    #[test]
    fn a_script_defines_what_it_calls_in_order_and_nothing_else() {
        let put = assemble(ENVELOPE_LAYOUT, PUT);
        for name in ["value_is", "is_base64", "lock_state", "index_state", "remove"] {
            assert_eq!(defines(&put, name), None, "the put script defines {name}");
        }
        // A Lua local is visible only below its definition.
        let order = ["text", "current_index", "latest_index", "store", "next_index"];
        let at: Vec<usize> = order
            .iter()
            .map(|name| defines(&put, name).unwrap_or_else(|| panic!("the put script lacks {name}")))
            .collect();
        assert!(at.windows(2).all(|pair| pair[0] < pair[1]), "{order:?} at {at:?}");

        let commit = assemble(RAW_LAYOUT, COMMIT);
        for name in [
            "index_key",
            "current_index",
            "index_state",
            "value_is",
            "lock_state",
            "store",
            "remove",
        ] {
            assert!(defines(&commit, name).is_some(), "the commit script lacks {name}");
        }
        assert_eq!(defines(&commit, "set_expiry"), None);
    }

    #[test]
    fn each_function_defines_exactly_its_name() {
        for (name, source) in [HEAD, ENVELOPE_LAYOUT, RAW_LAYOUT, PRELUDE].concat() {
            assert_eq!(source.matches("local function ").count(), 1, "{name}");
            assert!(defines(source, name).is_some(), "{name}");
        }
    }

    #[test]
    fn calls_are_told_from_longer_names() {
        assert!(calls("store(KEYS[1], ARGV[1])", "store"));
        assert!(calls("x = store(k)", "store"));
        assert!(!calls("x = restore(k)", "store"));
        assert!(!calls("local state = lock_state(k)", "state"));
    }
}
