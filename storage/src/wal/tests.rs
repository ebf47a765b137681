use super::*;

fn payloads(dir: &Path, after: u64) -> (Vec<Vec<u8>>, ReplayStats) {
    let mut seen = Vec::new();
    let stats = replay(dir, after, |_, p| seen.push(p.to_vec())).unwrap();
    (seen, stats)
}

async fn write_all(wal: &Wal, records: &[Vec<u8>]) {
    let acks: Vec<_> = records.iter().map(|r| wal.append(r.clone()).unwrap()).collect();
    for ack in acks {
        ack.await.unwrap().unwrap();
    }
}

fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("record number {i}").repeat(i % 7 + 1).into_bytes()).collect()
}

#[tokio::test]
async fn round_trip_under_every_policy() {
    for policy in [FsyncPolicy::Always, FsyncPolicy::Interval(Duration::from_millis(5)), FsyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::start(dir.path(), 1, policy, 1 << 20).unwrap();
        let expected = records(100);
        write_all(&wal, &expected).await;
        wal.shutdown().await.unwrap();
        let (seen, stats) = payloads(dir.path(), 0);
        assert_eq!(seen, expected, "{policy:?}");
        assert_eq!(stats.damaged_files, 0);
        assert_eq!(stats.last_seq, 1);
    }
}

#[tokio::test]
async fn torn_tail_is_cut_off_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::start(dir.path(), 1, FsyncPolicy::Always, 1 << 20).unwrap();
    let expected = records(10);
    write_all(&wal, &expected).await;
    wal.shutdown().await.unwrap();
    let path = file_path(dir.path(), 1);
    let full = fs::metadata(&path).unwrap().len();
    // Cut inside the last record, then inside the header of a would-be next record.
    let last_len = expected[9].len() as u64;
    OpenOptions::new().write(true).open(&path).unwrap().set_len(full - last_len / 2).unwrap();
    let (seen, stats) = payloads(dir.path(), 0);
    assert_eq!(seen, expected[..9]);
    assert_eq!(stats.damaged_files, 1);

    let file = OpenOptions::new().append(true).open(&path).unwrap();
    file.set_len(full - last_len - RECORD_HEADER_BYTES as u64 + 3).unwrap();
    drop(file);
    let (seen, _) = payloads(dir.path(), 0);
    assert_eq!(seen, expected[..9]);
}

#[tokio::test]
async fn flipped_bit_rejects_the_record_and_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::start(dir.path(), 1, FsyncPolicy::Always, 1 << 20).unwrap();
    let expected = records(5);
    write_all(&wal, &expected).await;
    wal.shutdown().await.unwrap();
    let path = file_path(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    // Flip one bit inside the third record's payload.
    let third_payload_at = MAGIC.len()
        + expected[..2].iter().map(|r| r.len() + RECORD_HEADER_BYTES).sum::<usize>()
        + RECORD_HEADER_BYTES
        + 3;
    bytes[third_payload_at] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    let (seen, stats) = payloads(dir.path(), 0);
    assert_eq!(seen, expected[..2]);
    assert_eq!(stats.damaged_files, 1);

    // A damaged length field (huge) is rejected the same way.
    let mut bytes = fs::read(&path).unwrap();
    bytes[MAGIC.len() + 3] = 0xff;
    fs::write(&path, &bytes).unwrap();
    let (seen, _) = payloads(dir.path(), 0);
    assert!(seen.is_empty());
}

#[tokio::test]
async fn replay_is_idempotent_and_skips_persisted_files() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::start(dir.path(), 1, FsyncPolicy::Always, 1 << 20).unwrap();
    let first = records(3);
    write_all(&wal, &first).await;
    let closed = wal.rotate().unwrap().await.unwrap().unwrap();
    assert_eq!(closed, 1);
    let second = records(4);
    write_all(&wal, &second).await;
    wal.shutdown().await.unwrap();

    let (once, _) = payloads(dir.path(), 0);
    let (twice, _) = payloads(dir.path(), 0);
    assert_eq!(once, twice);
    assert_eq!(once.len(), 7);
    let (after_first, stats) = payloads(dir.path(), 1);
    assert_eq!(after_first, second);
    assert_eq!(stats.last_seq, 2);

    // A restarted writer never appends to a replayed file.
    let wal = Wal::start(dir.path(), stats.last_seq + 1, FsyncPolicy::Always, 1 << 20).unwrap();
    assert_eq!(wal.remove_through(1).unwrap(), 1);
    write_all(&wal, &records(1)).await;
    wal.shutdown().await.unwrap();
    let (all, stats) = payloads(dir.path(), 0);
    assert_eq!(all.len(), 5);
    assert_eq!(stats.last_seq, 3);
}

#[tokio::test]
async fn queue_beyond_its_budget_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::start(dir.path(), 1, FsyncPolicy::Always, 64).unwrap();
    // Whatever the writer has drained, a queue of many 60-byte records must refuse some.
    let mut refused = 0;
    let mut acks = Vec::new();
    for _ in 0..1000 {
        match wal.append(vec![7u8; 60]) {
            Ok(ack) => acks.push(ack),
            Err(WalError::Backpressure) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    for ack in acks {
        ack.await.unwrap().unwrap();
    }
    assert!(refused > 0);
    assert_eq!(wal.pending_bytes(), 0);
    wal.shutdown().await.unwrap();
}
