//! PostgreSQL: a subscriber in one instance is woken by an append in another
//! through `LISTEN/NOTIFY`, long before its slow poll would find the event.

use std::time::Duration;

use eventstore::{EventStore, ExpectedVersion, Subscription};
use uuid::Uuid;

use crate::support::{TestDb, tenant_append, tenant_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_one_instance_wakes_a_subscriber_in_another() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let other = db.second_instance().await;
    let mut subscription =
        Subscription::new(other.clone(), 0).with_poll_interval(Duration::from_secs(60));
    let stream = Uuid::new_v4();
    let store = db.store.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        store
            .append(tenant_append(
                stream,
                ExpectedVersion::NoStream,
                vec![tenant_event(1)],
            ))
            .await
            .unwrap();
    });
    let batch = tokio::time::timeout(Duration::from_secs(20), subscription.next_batch())
        .await
        .expect("woken by NOTIFY well before the 60 s poll")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].stream_id, stream);
    drop((subscription, other));
    db.cleanup().await;
}
