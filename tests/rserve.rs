//! Real Rserve (examples/hello, started natively) behind the front door: the `RsOC`
//! greeting and OCAP calls through the proxy, with our own QAP encoder/decoder.

mod common_dataplane;
mod support;

use common_dataplane::rserve::Rserve;
use common_dataplane::*;
use rserve_proxy::proxy::limits::Limits;
use support::qap::{occall, CallResult, OcapClient, RObj, RValue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocap_calls_through_the_proxy() {
    let r = Rserve::start();
    let proxy = Proxy::start(Limits::default());
    proxy.app("hello", &[r.addr]);

    let mut c = OcapClient::connect(&proxy.ws_url("/hello/"))
        .await
        .unwrap_or_else(|e| panic!("{e}; Rserve log: {}", r.log()));
    // 16-byte header + the capability list of examples/hello (see docs/qap-notes.md).
    assert_eq!(&c.greeting_raw[..4], b"RsOC");
    assert_eq!(c.greeting_raw.len(), 256);
    assert_eq!(c.greeting.names(), vec!["add", "greet", "sysinfo"]);
    let add = c.capability("add").expect("add capability");

    // Our encoding of add(3, 4) is byte for byte the documented one.
    let bytes = occall(&add, &[RObj::double(3.0), RObj::double(4.0)], 1);
    assert_eq!(bytes.len(), 112);
    assert_eq!(
        &bytes[..24],
        &[
            0x0f, 0, 0, 0, 0x60, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x5c, 0, 0, 0x16, 0x58, 0,
            0
        ]
    );
    assert_eq!(
        &bytes[88..],
        &[0x21, 8, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0x40, 0x21, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x40]
    );

    let seven = c
        .call(&add, &[RObj::double(3.0), RObj::double(4.0)])
        .await
        .unwrap();
    assert_eq!(seven, CallResult::Ok(RObj::new(RValue::Double(vec![7.0]))));
    let seven = c
        .call_ok("add", &[RObj::int(3), RObj::int(4)])
        .await
        .unwrap();
    assert_eq!(seven.value, RValue::Int(vec![7]));
    let hi = c
        .call_ok("greet", &[RObj::string("rserve-proxy")])
        .await
        .unwrap();
    assert_eq!(
        hi.strings(),
        Some(vec![Some("Hello, rserve-proxy!".into())])
    );
    let info = c.call_ok("sysinfo", &[]).await.unwrap();
    let version = info.get("r_version").and_then(|v| v.strings()).unwrap();
    assert!(version[0].as_deref().unwrap().starts_with("4."));

    // An R error answers RESP_ERR 0x7F and leaves the connection usable.
    let bad = c
        .call(&add, &[RObj::string("x"), RObj::double(1.0)])
        .await
        .unwrap();
    assert_eq!(bad, CallResult::RError(0x7F));
    let ok = c
        .call_ok("add", &[RObj::double(1.5), RObj::double(1.0)])
        .await
        .unwrap();
    assert_eq!(ok.value, RValue::Double(vec![2.5]));
    c.close().await;

    // Any path under the slug reaches Rserve.
    for path in ["/hello", "/hello/any/where?x=1"] {
        let mut c = OcapClient::connect(&proxy.ws_url(path)).await.unwrap();
        let sum = c
            .call_ok("add", &[RObj::double(40.0), RObj::double(2.0)])
            .await
            .unwrap();
        assert_eq!(sum.value, RValue::Double(vec![42.0]));
        c.close().await;
    }
    let counters = proxy.counters_when("hello", |c| c.ws_open == 0).await;
    assert_eq!(counters.ws_opened, 3);
    assert_eq!(counters.connect_errors, 0);
    assert!(counters.bytes_out >= 3 * 256, "{counters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rserve_replica_failover_and_concurrent_sessions() {
    let r = Rserve::start();
    let proxy = Proxy::start(Limits::default());
    proxy.app("hello", &[dead_addr(), r.addr]);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = proxy.ws_url("/hello/");
        tasks.push(tokio::spawn(async move {
            let mut c = OcapClient::connect(&url).await.unwrap();
            for j in 0..5 {
                let v = c
                    .call_ok(
                        "add",
                        &[RObj::double(f64::from(i)), RObj::double(f64::from(j))],
                    )
                    .await
                    .unwrap();
                assert_eq!(v.value, RValue::Double(vec![f64::from(i + j)]));
            }
            c.close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let c = proxy.counters_when("hello", |c| c.ws_open == 0).await;
    assert_eq!(c.ws_opened, 20);
    assert!(c.connect_errors >= 1);
}
