//! The wire protocol as a producer in another language sees it: raw NATS
//! requests with protobuf bodies (the default) or JSON, and replies in the
//! request's encoding (docs/PROTOCOL.md); and a service is subscribed, as
//! the server sees it, once it is bound.
use std::sync::Arc;
use std::time::Duration;

use agentlog_commands::Handler;
use agentlog_commands::wire;
use agentlog_log::jetstream::{JetStreamLog, Options};
use agentlog_log::schema::{self as pb, command_reply::Result as Outcome};
use agentlog_log::{HybridClock, RandomIdGen};
use agentlog_tests::nats::NatsServer;
use prost::Message;

async fn request(nats: &async_nats::Client, command: &str, headers: &[(&str, &str)], body: Vec<u8>) -> bytes::Bytes {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, *value);
    }
    let body: bytes::Bytes = body.into();
    // The service was bound (subscribed, and read by the server) before it
    // was spawned.
    let request = async_nats::Request::new().headers(map).payload(body).timeout(Some(Duration::from_secs(5)));
    match nats.send_request(format!("agentlog.cmd.{command}"), request).await {
        Ok(reply) => reply.payload,
        Err(e) => panic!("no reply to {command}: {e}"),
    }
}

fn outcome(payload: &[u8]) -> Outcome {
    pb::CommandReply::decode(payload).expect("a protobuf CommandReply").result.expect("a result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_and_json_requests_get_replies_in_their_own_encoding() {
    let server = NatsServer::start();
    let mirror = tempfile::tempdir().unwrap();
    let log = Arc::new(JetStreamLog::open(Options::new(server.url(), mirror.path())).await.unwrap());
    let handler = Arc::new(Handler::new(log, Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new())));
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let nats = agentlog_log::jetstream::connect(&server.url()).await.unwrap();
    tokio::spawn(wire::Service::bind(nats.clone(), handler).await.unwrap().run(stop));

    let register = pb::RegisterAgent { agent_id: "a1".into(), name: "A".into(), capabilities: vec!["code".into()] };
    let keyed = [("Agentlog-Idempotency-Key", "reg-a1")];
    let Outcome::Accepted(first) = outcome(&request(&nats, "register_agent", &keyed, register.encode_to_vec()).await)
    else {
        panic!("register_agent is accepted");
    };
    assert_eq!(
        (first.events.as_slice(), first.stream.as_str(), first.duplicate),
        (&["agent_registered".to_owned()][..], "agent/a1", false)
    );
    let Outcome::Accepted(again) = outcome(&request(&nats, "register_agent", &keyed, register.encode_to_vec()).await)
    else {
        panic!("a repeated key is accepted");
    };
    assert!(again.duplicate);
    assert_eq!(again.first_seq, first.first_seq);

    let open = pb::OpenSession { agent_id: "a1".into(), ..Default::default() };
    let Outcome::Accepted(opened) = outcome(&request(&nats, "open_session", &[], open.encode_to_vec()).await) else {
        panic!("open_session is accepted");
    };
    assert_eq!(opened.session_id.len(), 36, "the server made a session id");

    let claim =
        pb::ClaimTask { task_id: "nope".into(), agent_id: "a1".into(), session_id: opened.session_id, lease_ms: 0 };
    let Outcome::Rejected(rejected) = outcome(&request(&nats, "claim_task", &[], claim.encode_to_vec()).await) else {
        panic!("claiming a missing task is rejected");
    };
    assert_eq!((rejected.kind.as_str(), rejected.code.as_str()), ("domain", "not_found"));

    // JSON without its Content-Type is read as protobuf, and refused as such.
    let json = br#"{"agent_id": "a2"}"#.to_vec();
    let Outcome::Rejected(garbled) = outcome(&request(&nats, "register_agent", &[], json.clone()).await) else {
        panic!("a JSON body without Content-Type is rejected");
    };
    assert_eq!(garbled.code, "invalid_command");

    // With it, the reply is JSON too.
    let reply = request(&nats, "register_agent", &[("Content-Type", "application/json")], json).await;
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("a JSON reply");
    assert_eq!(reply["accepted"]["stream"], "agent/a2");
}

/// A subscription made on one connection and confirmed with
/// `wire::server_has_read` is seen by a request another connection sends
/// at once (async-nats's `flush` alone only writes the socket: the server
/// may not have read the subscription yet, and the request is answered
/// "no responders": about 1 round in 200 on two cores with `flush` in its
/// place). Many rounds, each a fresh subject, each requested the moment the
/// subscriber returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_confirmed_by_a_round_trip_is_seen_by_another_connection_at_once() {
    use futures_util::StreamExt as _;
    let server = NatsServer::start();
    let requester = async_nats::connect(server.url()).await.unwrap();
    let mut missed = 0;
    for round in 0..1000 {
        let subscriber = async_nats::connect(server.url()).await.unwrap();
        let subject = format!("round.{round}");
        let mut requests = subscriber.queue_subscribe(subject.clone(), "group".into()).await.unwrap();
        wire::server_has_read(&subscriber).await.unwrap();
        let answering = tokio::spawn(async move {
            if let Some(request) = requests.next().await {
                subscriber.publish(request.reply.unwrap(), "here".into()).await.unwrap();
                subscriber.flush().await.unwrap();
            }
        });
        let ask = async_nats::Request::new().payload("?".into()).timeout(Some(Duration::from_secs(5)));
        match requester.send_request(subject, ask).await {
            Ok(reply) => assert_eq!(&reply.payload[..], b"here"),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => missed += 1,
            Err(e) => panic!("round {round}: {e}"),
        }
        answering.abort();
    }
    assert_eq!(missed, 0, "requests answered \"no responders\" right after the subscription");
}
