//! The Lua scripts: every write, compare-and-set and lock step in one round trip, on one
//! key (so they work on a cluster too). Each returns a status string: `ok` or `ok:<index>`,
//! `exists`, `notfound`, `modified`, `busy:<ms left>`, `gone` or `taken`.
//!
//! Values arrive base64-encoded (the envelope's encoding) and indexes as decimal strings.

use std::sync::LazyLock;

use fred::types::scripts::Script;

/// Helpers shared by every script.
const PRELUDE: &str = r#"
local function current_index(key)
  local current = redis.call('GET', key)
  if not current then return nil end
  -- A pattern scan, not cjson.decode: decoding the whole envelope (value included) made
  -- every write cost O(value size) in Lua. Inside the JSON-encoded Key every quote is
  -- escaped, so an unescaped `"LastIndex":` can only be the field itself.
  local found = string.match(current, '"LastIndex"%s*:%s*(%d+)%s*[,}]')
  if found and string.sub(current, 1, 1) == '{' then return tonumber(found) end
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and tonumber(decoded['LastIndex']) then
    return tonumber(decoded['LastIndex'])
  end
  return 0
end
local function next_index(key)
  local time = redis.call('TIME')
  local index = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local last = current_index(key)
  if last and last >= index then index = last + 1 end
  return index
end
local function text(index) return string.format('%.0f', index) end
local function store(key, name, value, ttl, index)
  local body = '{"Key":' .. cjson.encode(name) .. ',"Value":"' .. value .. '","LastIndex":' .. text(index) .. '}'
  if tonumber(ttl) > 0 then redis.call('SET', key, body, 'PX', ttl) else redis.call('SET', key, body) end
end
"#;

/// `PUT key | name, b64, ttl_ms` → `ok:<index>`.
const PUT: &str = r#"
local index = next_index(KEYS[1])
store(KEYS[1], ARGV[1], ARGV[2], ARGV[3], index)
return 'ok:' .. text(index)
"#;

/// `CREATE key | name, b64, ttl_ms` → `ok:<index>` or `exists`.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
local index = next_index(KEYS[1])
store(KEYS[1], ARGV[1], ARGV[2], ARGV[3], index)
return 'ok:' .. text(index)
"#;

/// `CAS key | name, b64, ttl_ms, expected` → `ok:<index>`, `notfound` or `modified`.
const CAS: &str = r#"
local current = current_index(KEYS[1])
if not current then return 'notfound' end
if text(current) ~= ARGV[4] then return 'modified' end
local index = next_index(KEYS[1])
store(KEYS[1], ARGV[1], ARGV[2], ARGV[3], index)
return 'ok:' .. text(index)
"#;

/// `CAD key | expected` → `ok`, `notfound` or `modified`.
const CAD: &str = r#"
local current = current_index(KEYS[1])
if not current then return 'notfound' end
if text(current) ~= ARGV[1] then return 'modified' end
redis.call('DEL', KEYS[1])
return 'ok'
"#;

/// `LOCK key | name, b64, ttl_ms` → `ok:<index>` or `busy:<ms left>`. A key with an expiry
/// is a held lock; a key without one (a value left after an unlock, or plain data) is free.
const LOCK: &str = r#"
local left = redis.call('PTTL', KEYS[1])
if left >= 0 then return 'busy:' .. left end
local index = next_index(KEYS[1])
store(KEYS[1], ARGV[1], ARGV[2], ARGV[3], index)
return 'ok:' .. text(index)
"#;

/// `RENEW key | expected, ttl_ms` → `ok`, `gone` or `taken`. A key without an expiry was
/// released (or rewritten without a TTL): a late renewal must not lock it again.
const RENEW: &str = r#"
local current = current_index(KEYS[1])
if not current then return 'gone' end
if text(current) ~= ARGV[1] then return 'taken' end
if redis.call('PTTL', KEYS[1]) < 0 then return 'gone' end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 'ok'
"#;

/// `UNLOCK key | expected, delete ("1"/"0")` → `ok`, `gone` or `taken`. Without delete, the
/// value stays and loses its expiry, which frees the lock.
const UNLOCK: &str = r#"
local current = current_index(KEYS[1])
if not current then return 'gone' end
if text(current) ~= ARGV[1] then return 'taken' end
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) else redis.call('PERSIST', KEYS[1]) end
return 'ok'
"#;

fn script(body: &str) -> Script {
    Script::from_lua(format!("{PRELUDE}{body}"))
}

/// Every script, compiled once per process.
pub(crate) struct Scripts {
    pub(crate) put: Script,
    pub(crate) create: Script,
    pub(crate) cas: Script,
    pub(crate) cad: Script,
    pub(crate) lock: Script,
    pub(crate) renew: Script,
    pub(crate) unlock: Script,
}

/// The scripts; their SHA1s are computed once.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    put: script(PUT),
    create: script(CREATE),
    cas: script(CAS),
    cad: script(CAD),
    lock: script(LOCK),
    renew: script(RENEW),
    unlock: script(UNLOCK),
});
