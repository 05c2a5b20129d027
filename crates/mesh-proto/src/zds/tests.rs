use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use super::seqpacket::SeqPacket;
use super::*;

fn netns_of_self() -> OwnedFd {
    File::open("/proc/self/ns/net")
        .expect("open /proc/self/ns/net")
        .into()
}

fn inode_of(fd: &OwnedFd) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("stat fd")
        .ino()
}

fn self_netns_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net")
        .expect("stat netns")
        .ino()
}

fn info(name: &str) -> WorkloadInfo {
    WorkloadInfo {
        name: name.into(),
        namespace: "shop".into(),
        service_account: "cart".into(),
    }
}

fn server() -> (tempfile::TempDir, PathBuf, ZdsServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run/ztunnel.sock");
    let server = ZdsServer::bind(&path, ZdsServerOptions::default()).expect("bind");
    (dir, path, server)
}

async fn wait_status(server: &ZdsServer, want: impl Fn(&ZdsStatus) -> bool) {
    let mut rx = server.status();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| want(s)))
        .await
        .expect("status not reached in 5s")
        .expect("server gone");
}

/// Receives one message and acks it as successful.
async fn recv_ok(client: &mut ZdsClient) -> ZdsMessage {
    let msg = client.recv().await.expect("recv");
    client.ack(Ok(())).await.expect("ack");
    msg
}

fn expect_add(msg: ZdsMessage, want_uid: &str) -> (WorkloadInfo, OwnedFd) {
    match msg {
        ZdsMessage::Add { uid, info, netns } if uid == want_uid => (info, netns),
        other => panic!("expected Add {want_uid}, got {other:?}"),
    }
}

/// Connects and consumes the snapshot, returning its messages (without the final SnapshotSent).
async fn connect_with_snapshot(path: &PathBuf) -> (ZdsClient, Vec<ZdsMessage>) {
    let mut client = ZdsClient::connect(path).await.expect("connect");
    let mut msgs = Vec::new();
    loop {
        match recv_ok(&mut client).await {
            ZdsMessage::SnapshotSent => return (client, msgs),
            m => msgs.push(m),
        }
    }
}

#[tokio::test]
async fn add_carries_the_netns_descriptor() {
    let (_dir, path, server) = server();
    let early = server.add("uid-1", info("cart-0"), netns_of_self()).await;
    assert!(matches!(early, Err(ZdsError::NotConnected)), "{early:?}");

    let (mut client, snapshot) = connect_with_snapshot(&path).await;
    assert!(snapshot.is_empty(), "{snapshot:?}");
    wait_status(&server, |s| s.connected && s.snapshots == 1).await;

    let (res, msg) = tokio::join!(
        server.add("uid-1", info("cart-0"), netns_of_self()),
        recv_ok(&mut client)
    );
    res.expect("add acked");
    let (got_info, netns) = expect_add(msg, "uid-1");
    assert_eq!(got_info, info("cart-0"));
    assert_eq!(inode_of(&netns), self_netns_inode());
    assert_eq!(server.workloads().await, vec!["uid-1".to_string()]);
}

#[tokio::test]
async fn error_acks_reach_the_caller() {
    let (_dir, path, server) = server();
    let (mut client, _) = connect_with_snapshot(&path).await;
    wait_status(&server, |s| s.connected).await;

    let refuse = async {
        let msg = client.recv().await.expect("recv");
        client
            .ack(Err("cannot enter netns".into()))
            .await
            .expect("ack");
        msg
    };
    let (res, msg) = tokio::join!(server.add("uid-x", info("x"), netns_of_self()), refuse);
    expect_add(msg, "uid-x");
    match res {
        Err(ZdsError::Rejected(text)) => assert_eq!(text, "cannot enter netns"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(
        server.workloads().await.is_empty(),
        "rejected add remembered"
    );

    let refuse_del = async {
        let msg = client.recv().await.expect("recv");
        client
            .ack(Err("unknown workload".into()))
            .await
            .expect("ack");
        msg
    };
    let (res, msg) = tokio::join!(server.del("uid-x"), refuse_del);
    assert!(
        matches!(msg, ZdsMessage::Del { ref uid } if uid == "uid-x"),
        "{msg:?}"
    );
    assert!(
        matches!(res, Err(ZdsError::Rejected(ref t)) if t == "unknown workload"),
        "{res:?}"
    );
}

#[tokio::test]
async fn newer_connection_replaces_older_and_gets_a_snapshot() {
    let (_dir, path, server) = server();
    let (mut first, _) = connect_with_snapshot(&path).await;
    wait_status(&server, |s| s.snapshots == 1).await;
    for uid in ["uid-a", "uid-b"] {
        let (res, _) = tokio::join!(
            server.add(uid, info(uid), netns_of_self()),
            recv_ok(&mut first)
        );
        res.expect("add");
    }

    let (mut second, snapshot) = connect_with_snapshot(&path).await;
    let mut snapshot = snapshot.into_iter();
    for uid in ["uid-a", "uid-b"] {
        let (got, netns) = expect_add(snapshot.next().expect("snapshot entry"), uid);
        assert_eq!(got, info(uid));
        assert_eq!(inode_of(&netns), self_netns_inode());
    }
    assert!(snapshot.next().is_none());
    assert!(matches!(first.recv().await, Err(ZdsError::Closed)));
    wait_status(&server, |s| s.connected && s.snapshots == 2).await;

    let (res, msg) = tokio::join!(server.del("uid-a"), recv_ok(&mut second));
    res.expect("del");
    assert!(
        matches!(msg, ZdsMessage::Del { ref uid } if uid == "uid-a"),
        "{msg:?}"
    );

    let (_third, snapshot) = connect_with_snapshot(&path).await;
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    expect_add(snapshot.into_iter().next().expect("entry"), "uid-b");
}

#[tokio::test]
async fn restored_workloads_are_in_the_first_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("zds.sock");
    let initial = vec![
        ("uid-r".to_string(), info("r"), Some(netns_of_self())),
        ("uid-k".to_string(), info("k"), None),
    ];
    let _server = ZdsServer::bind_with(&path, ZdsServerOptions::default(), initial).expect("bind");
    let (_client, snapshot) = connect_with_snapshot(&path).await;
    let mut it = snapshot.into_iter();
    // Entries come in uid order.
    assert!(matches!(it.next(), Some(ZdsMessage::Keep { ref uid }) if uid == "uid-k"));
    expect_add(it.next().expect("add"), "uid-r");
    assert!(it.next().is_none());
}

#[tokio::test]
async fn a_vanished_ztunnel_is_noticed() {
    let (_dir, path, server) = server();
    let (client, _) = connect_with_snapshot(&path).await;
    wait_status(&server, |s| s.connected).await;
    drop(client);
    wait_status(&server, |s| !s.connected).await;
    let res = server.add("uid-1", info("a"), netns_of_self()).await;
    assert!(matches!(res, Err(ZdsError::NotConnected)), "{res:?}");
    // Removal without a ztunnel succeeds: the next snapshot simply omits the workload.
    server.del("uid-1").await.expect("del while disconnected");
}

#[tokio::test]
async fn a_bad_hello_is_refused() {
    let (_dir, path, server) = server();
    let raw = SeqPacket::connect(&path).expect("connect");
    raw.send(b"\x08\x07", None)
        .await
        .expect("send bogus version");
    let mut buf = vec![0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), raw.recv(&mut buf))
        .await
        .expect("server did not close")
        .expect("recv");
    assert_eq!(n, 0, "expected the server to close the connection");
    assert!(!server.status().borrow().connected);
}
