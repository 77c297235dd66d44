use super::*;
use crate::matching::{PairKeypoints, PckScores};

fn header(shard: Option<Shard>, in_shard: usize) -> RecordsHeader {
    RecordsHeader::new(
        "sd",
        "h",
        shard,
        "ds".into(),
        "x".into(),
        OptionsRecord {
            alphas: vec![0.1],
            max_pairs: None,
            categories: None,
            cache_bytes: 1,
            allow_missing: true,
        },
        3,
        in_shard,
    )
}

fn entry(i: usize) -> RecordLine {
    RecordLine {
        pair: pair(i),
        cost: PairCost {
            secs: 0.5,
            maps: 2,
            hits: i,
        },
    }
}

fn pair(i: usize) -> RecordEntry {
    if i % 2 == 1 {
        return RecordEntry::Skipped(SkippedPair {
            index: i,
            name: format!("p{i}"),
            reason: "gone".into(),
        });
    }
    RecordEntry::Evaluated(PairRecord {
        index: i,
        src_image: "a".into(),
        trg_image: "b".into(),
        src_kps: vec![[0.1 + i as f64, 1.0 / 3.0]],
        keypoints: PairKeypoints {
            name: format!("p{i}"),
            category: "c".into(),
            pred: vec![[1.5, 2.25]],
            gt: vec![[1.0, 2.0]],
            bbox: [0.0, 0.0, 10.0, 10.0],
            img_w: 16,
            img_h: 16,
        },
        pck: PckScores {
            pairs: 1,
            keypoints: 1,
            at: Vec::new(),
        },
    })
}

#[test]
fn shards_parse_and_partition_every_key_once() {
    assert_eq!(
        "2/3".parse::<Shard>().unwrap(),
        Shard { index: 2, count: 3 }
    );
    for bad in ["3/3", "1", "a/3", "0/0", "-1/2"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
    let keys: Vec<String> = (0..50).map(|i| format!("img{i}.jpg")).collect();
    let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
    let mut sizes = [0; 3];
    for k in &keys {
        let owners: Vec<usize> = shards
            .iter()
            .filter(|s| s.contains(k))
            .map(|s| s.index)
            .collect();
        assert_eq!(owners.len(), 1, "{k}: {owners:?}");
        sizes[owners[0]] += 1;
        // Stable: the same key, the same shard.
        assert_eq!(shard_of(k, 3), owners[0]);
    }
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
}

#[test]
fn a_torn_last_line_is_dropped_and_a_damaged_middle_line_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pairs-sd.jsonl");
    let mut w = RecordsWriter::create(&p, &header(None, 3)).unwrap();
    for i in 0..3 {
        w.push(&entry(i)).unwrap();
    }
    w.finish().unwrap();
    let whole = std::fs::read(&p).unwrap();
    let got = read_records(&p).unwrap().unwrap();
    assert_eq!(got.entries, (0..3).map(entry).collect::<Vec<_>>());
    assert_eq!(got.valid_len, whole.len() as u64);
    assert!(got.torn.is_none());

    // Cut inside the last line: it is dropped, the file continues after
    // the valid part.
    std::fs::write(&p, &whole[..whole.len() - 7]).unwrap();
    let got = read_records(&p).unwrap().unwrap();
    assert_eq!(got.entries.len(), 2);
    assert!(
        got.torn.as_deref().unwrap().contains("line 4"),
        "{:?}",
        got.torn
    );
    let mut w = RecordsWriter::append(&p, got.valid_len).unwrap();
    w.push(&entry(2)).unwrap();
    w.finish().unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), whole);

    // A changed byte in line 2 (of 4) is an error naming the line.
    let mut bad = whole.clone();
    let second = bad.iter().position(|&b| b == b'\n').unwrap() + 30;
    bad[second] ^= 1;
    std::fs::write(&p, &bad).unwrap();
    let err = read_records(&p).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn settings_differences_are_named() {
    let a: BTreeMap<String, String> = [("t", "261"), ("mode", "clean")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut b = a.clone();
    b.insert("t".into(), "100".into());
    b.insert("seed".into(), "1".into());
    let d: Vec<String> = diff_settings(&a, &b)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(d, vec!["seed: (not set) -> 1", "t: 261 -> 100"]);
    assert_ne!(settings_hash(&a), settings_hash(&b));
}

#[test]
fn merging_refuses_overlaps_and_unfinished_shards() {
    let part = |index: usize, pairs: &[usize], expected: usize| LoadedRecords {
        header: header(Some(Shard { index, count: 2 }), expected),
        entries: pairs.iter().map(|&i| entry(i)).collect(),
        valid_len: 0,
        torn: None,
    };
    let (h, e) = merge_shards(vec![part(0, &[0, 2], 2), part(1, &[1], 1)]).unwrap();
    assert_eq!(h.shard, None);
    assert_eq!(e.len(), 3);
    let err = merge_shards(vec![part(0, &[0, 2], 2), part(1, &[2], 1)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shards 0/2 and 1/2 both hold pair p2"),
        "{err}"
    );
    let err = merge_shards(vec![part(0, &[0], 2), part(1, &[1], 1)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shard 0/2") && err.contains("1 of its 2"),
        "{err}"
    );
}
