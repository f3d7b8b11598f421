//! The harness's own check, run by `cargo xtask test` with the servers up: every server is
//! reachable through its endpoint variable and does real work. Run without the variables,
//! each test fails naming the variable to set.

use xtask::probe;

fn endpoint(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run `cargo xtask test`, or export it to point at your own server")
    })
}

fn host_port(variable: &str) -> String {
    let value = endpoint(variable);
    let value = value.split(',').next().unwrap_or_default();
    value
        .trim_start_matches("redis://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

#[test]
fn redis_stores_and_notifies() {
    let address = host_port("VALKEYRIE_REDIS_URL");
    assert!(probe::redis(&address, &["SET", "xtask-smoke", "v"])
        .unwrap()
        .starts_with("+OK"));
    assert!(probe::redis(&address, &["GET", "xtask-smoke"])
        .unwrap()
        .contains("\r\nv\r\n"));
    let events = probe::redis(&address, &["CONFIG", "GET", "notify-keyspace-events"]).unwrap();
    assert!(
        events.contains('K') && events.contains('E'),
        "keyspace notifications are on: {events:?}"
    );
    probe::redis(&address, &["DEL", "xtask-smoke"]).unwrap();
}

#[test]
fn etcd_stores_through_its_gateway() {
    let address = host_port("VALKEYRIE_ETCD_ENDPOINTS");
    // base64("xtask-smoke") and base64("v")
    let put = probe::http(
        &address,
        "POST",
        "/v3/kv/put",
        &[],
        r#"{"key":"eHRhc2stc21va2U=","value":"dg=="}"#,
    )
    .unwrap();
    assert_eq!(put.0, 200, "{put:?}");
    let (status, body) = probe::http(&address, "POST", "/v3/kv/range", &[], r#"{"key":"eHRhc2stc21va2U="}"#).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(r#""value":"dg==""#), "{body}");
    let version = probe::http(&address, "GET", "/version", &[], "").unwrap().1;
    assert!(version.contains("3.4"), "etcd 3.4: {version}");
}

#[test]
fn zookeeper_is_standalone_3_8() {
    let address = host_port("VALKEYRIE_ZOOKEEPER_ENDPOINTS");
    let srvr = probe::four_letter_word(&address, "srvr").unwrap();
    assert!(srvr.contains("Zookeeper version: 3.8"), "{srvr}");
    assert!(srvr.contains("Mode: standalone"), "{srvr}");
    let conf = probe::four_letter_word(&address, "conf").unwrap();
    assert!(
        conf.contains("minSessionTimeout=1000"),
        "short sessions allowed for expiry tests: {conf}"
    );
}

#[test]
fn consul_stores_kv() {
    let address = host_port("VALKEYRIE_CONSUL_ENDPOINTS");
    let (status, body) = probe::http(&address, "PUT", "/v1/kv/xtask-smoke", &[], "v").unwrap();
    assert_eq!((status, body.trim()), (200, "true"));
    let (status, body) = probe::http(&address, "GET", "/v1/kv/xtask-smoke?raw", &[], "").unwrap();
    assert_eq!((status, body.as_str()), (200, "v"));
    let agent = probe::http(&address, "GET", "/v1/agent/self", &[], "").unwrap().1;
    assert!(agent.replace(' ', "").contains("\"Version\":\"1.8.7\""), "consul 1.8.7");
    probe::http(&address, "DELETE", "/v1/kv/xtask-smoke", &[], "").unwrap();
}

#[test]
fn dynamodb_creates_writes_and_reads() {
    let address = host_port("VALKEYRIE_DYNAMODB_ENDPOINT");
    let flavor = endpoint("VALKEYRIE_DYNAMODB_FLAVOR");
    assert!(["dynamodb-local", "moto"].contains(&flavor.as_str()), "{flavor}");
    let table = format!("xtask_smoke_{}", std::process::id());
    let create = format!(
        r#"{{"TableName":"{table}","AttributeDefinitions":[{{"AttributeName":"id","AttributeType":"S"}}],
        "KeySchema":[{{"AttributeName":"id","KeyType":"HASH"}}],"BillingMode":"PAY_PER_REQUEST"}}"#
    );
    let (status, body) = probe::dynamodb(&address, "CreateTable", &create).unwrap();
    assert_eq!(status, 200, "{body}");
    let put = format!(r#"{{"TableName":"{table}","Item":{{"id":{{"S":"k"}},"v":{{"S":"value"}}}}}}"#);
    assert_eq!(probe::dynamodb(&address, "PutItem", &put).unwrap().0, 200);
    let get = format!(r#"{{"TableName":"{table}","Key":{{"id":{{"S":"k"}}}},"ConsistentRead":true}}"#);
    let (status, body) = probe::dynamodb(&address, "GetItem", &get).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("value"), "{body}");
    let delete = format!(r#"{{"TableName":"{table}"}}"#);
    assert_eq!(probe::dynamodb(&address, "DeleteTable", &delete).unwrap().0, 200);
}
