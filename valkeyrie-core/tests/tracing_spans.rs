//! Every call is a `tracing` span named `valkeyrie` with the store, the call and the key,
//! and never the value.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use valkeyrie_core::{LockOptions, MemoryStore, ReadOptions, Store, WriteOptions};

/// Records every span's name and fields as text.
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<Vec<String>>>,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(span.metadata().name().to_owned());
        span.record(&mut fields);
        let mut spans = self.spans.lock().expect("the span list");
        spans.push(fields.0);
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test]
async fn calls_are_spans_with_store_call_and_key_but_no_value() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let store = MemoryStore::new();
    store
        .put("app/secret", "hunter2".into(), &WriteOptions::default())
        .await
        .unwrap();
    store.get("app/secret", &ReadOptions::default()).await.unwrap();
    store.list("app", &ReadOptions::default()).await.unwrap();
    let locker = store
        .new_lock("app/lock", LockOptions::with_value("hunter2"))
        .await
        .unwrap();
    locker.lock().await.unwrap().unlock().await.unwrap();
    let spans = recorder.spans.lock().unwrap().clone();
    for expected in [
        "valkeyrie store=\"memory\" call=\"put\" key=\"app/secret\"",
        "valkeyrie store=\"memory\" call=\"get\" key=\"app/secret\"",
        "valkeyrie store=\"memory\" call=\"list\" key=\"app\"",
        "valkeyrie store=\"memory\" call=\"new_lock\" key=\"app/lock\"",
        "valkeyrie store=\"memory\" call=\"lock\" key=\"app/lock\"",
    ] {
        assert!(
            spans.iter().any(|s| s == expected),
            "missing span {expected:?} in {spans:#?}"
        );
    }
    assert!(
        spans.iter().all(|s| !s.contains("hunter2")),
        "a value leaked into a span: {spans:#?}"
    );
}
