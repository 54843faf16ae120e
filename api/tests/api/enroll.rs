use eventstore::EventStore;

#[tokio::test]
async fn enrolment_stores_a_fresh_secret_that_never_reaches_the_log() {
    let (state, dir) = crate::state().await;
    let now = chrono::Utc::now();
    let a = api::enroll::enrol(&state.store, &state.vault, "render-01", now)
        .await
        .unwrap();
    let b = api::enroll::enrol(&state.store, &state.vault, "render-02", now)
        .await
        .unwrap();
    assert_ne!(a.node_id, b.node_id);
    assert_ne!(a.secret_hex, b.secret_hex);
    assert_eq!(a.secret_hex.len(), 64);
    let stored = state
        .store
        .node_key(a.node_id, a.key_id, &state.vault)
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
                api::enroll::enrol(&state.store, &state.vault, bad, chrono::Utc::now()).await,
                Err(api::enroll::EnrolError::BadName)
            ),
            "{bad:?} was accepted"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// `flatrender node enroll` on a fresh data directory: a master key is
/// generated there (mode 0600), the secret is stored sealed under it, and
/// the same key (or `FLATRENDER_MASTER_KEY`) opens it; another key does
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_seals_node_secrets_under_a_master_key_generated_in_the_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::faults::temp_dir("master-key");
    let enrol = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flatrender"))
            .args(["node", "enroll", "--name", "render-01", "--data-dir"])
            .arg(&dir)
            .env_remove("DATABASE_URL")
            .env_remove("FLATRENDER_MASTER_KEY")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap()
                .to_string()
        };
        (field("node_id"), field("key_id"), field("secret"))
    };
    let (node, key, secret) = enrol(&[]);
    let key_file = dir.join("master.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "readable by its owner only");
    let hex_key = std::fs::read_to_string(&key_file).unwrap();
    // The database holds no plaintext secret.
    let db = std::fs::read(dir.join("events.sqlite")).unwrap();
    let plain = hex::decode(&secret).unwrap();
    assert!(!db.windows(plain.len()).any(|w| w == plain.as_slice()));
    let store = eventstore::AnyStore::open(None, &dir).await.unwrap();
    let (node, key) = (node.parse().unwrap(), key.parse().unwrap());
    let vault = eventstore::Vault::new(eventstore::MasterKey::from_hex(&hex_key).unwrap());
    let opened = store.node_key(node, key, &vault).await.unwrap().unwrap();
    assert_eq!(hex::encode(opened.secret), secret);
    let stranger = eventstore::Vault::new(eventstore::MasterKey::ephemeral().unwrap());
    assert!(store.node_key(node, key, &stranger).await.is_err());
    // A key from the environment wins over the file: what it sealed opens
    // with it.
    let other_dir_key = eventstore::MasterKey::generate().unwrap();
    let (n2, k2, s2) = enrol(&[("FLATRENDER_MASTER_KEY", other_dir_key.as_str())]);
    let env_vault =
        eventstore::Vault::new(eventstore::MasterKey::from_hex(&other_dir_key).unwrap());
    let opened = store
        .node_key(n2.parse().unwrap(), k2.parse().unwrap(), &env_vault)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hex::encode(opened.secret), s2);
    let _ = std::fs::remove_dir_all(dir);
}
