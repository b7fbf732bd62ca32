mod common;
#[tokio::test]
async fn smoke() {
    let h = common::Harness::new().await;
    let _ = h.admin().await;
}
