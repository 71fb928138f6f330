use crate::common;

#[tokio::test]
async fn migrations_apply_from_empty_and_rerun_as_noop() {
    let test_db = common::TestDatabase::fresh().await;
    let db = test_db.connect().await;
    db.migrate().await.expect("second run is a no-op");
    db.ping().await.expect("ping");
}
