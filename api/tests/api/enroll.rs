use eventstore::EventStore;

#[tokio::test]
async fn enrolment_stores_a_fresh_secret_that_never_reaches_the_log() {
    let (state, dir) = crate::state().await;
    let now = chrono::Utc::now();
    let a = api::enroll::enrol(&state.store, "render-01", now)
        .await
        .unwrap();
    let b = api::enroll::enrol(&state.store, "render-02", now)
        .await
        .unwrap();
    assert_ne!(a.node_id, b.node_id);
    assert_ne!(a.secret_hex, b.secret_hex);
    assert_eq!(a.secret_hex.len(), 64);
    let stored = state
        .store
        .node_key(a.node_id, a.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hex::encode(&stored.secret), a.secret_hex);
    assert_eq!(stored.name, "render-01");
    assert!(!format!("{a:?}").contains(&a.secret_hex));
    assert!(
        state.store.read_all(0, 100).await.unwrap().is_empty(),
        "no secret in the event log"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn names_that_could_carry_anything_else_are_refused() {
    let (state, dir) = crate::state().await;
    for bad in [
        "",
        "render 01",
        "x;rm -rf /",
        "$(id)",
        "`id`",
        "../etc",
        &"n".repeat(65),
    ] {
        assert!(
            matches!(
                api::enroll::enrol(&state.store, bad, chrono::Utc::now()).await,
                Err(api::enroll::EnrolError::BadName)
            ),
            "{bad:?} was accepted"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}
