use super::*;

fn tiny() -> ModelConfig {
    ModelConfig::preset("tiny-sd21").expect("preset")
}

/// The memo file keeps hashes across memos (processes), keyed by the
/// file's stamp: an entry is used while the file is unchanged, and a
/// rewrite of the same length is hashed again.
#[test]
fn the_memo_is_kept_on_disk_and_follows_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let weights = dir.path().join("w.safetensors");
    std::fs::write(&weights, b"first weights").expect("write");
    let memo_file = dir.path().join("memo").join(MEMO_FILE);
    let a = HashMemo::with_racy_secs(Some(memo_file.clone()), 0);
    let h1 = a.file_hash(&weights, None).expect("hash");
    assert_eq!(h1, blake3::hash(b"first weights").to_hex().to_string());
    assert!(memo_file.is_file(), "the memo was written");

    // A second memo (a later run) answers from the file: prove it by
    // planting another value for the same stamp.
    let text = std::fs::read_to_string(&memo_file).expect("memo");
    std::fs::write(&memo_file, text.replace(&h1, "planted")).expect("plant");
    let b = HashMemo::with_racy_secs(Some(memo_file.clone()), 0);
    assert_eq!(b.file_hash(&weights, None).expect("memo hit"), "planted");

    // The same length, other bytes: the stamp changed, so it is hashed.
    std::fs::write(&weights, b"other weights").expect("rewrite");
    let h2 = b.file_hash(&weights, None).expect("rehash");
    assert_eq!(h2, blake3::hash(b"other weights").to_hex().to_string());
    assert_ne!(h1, h2);
}

/// A file changed less than the racy window before it was hashed is not
/// memoised; a damaged memo file is ignored (and rewritten).
#[test]
fn racy_files_are_not_memoised_and_bad_memos_are_ignored() {
    let dir = tempfile::tempdir().expect("tmp");
    let weights = dir.path().join("w.bin");
    std::fs::write(&weights, b"abc").expect("write");
    let memo_file = dir.path().join(MEMO_FILE);
    let m = HashMemo::with_racy_secs(Some(memo_file.clone()), 3600);
    m.file_hash(&weights, None).expect("hash");
    assert!(
        !memo_file.exists(),
        "a file changed just now is not memoised"
    );
    std::fs::write(&memo_file, b"{ not json").expect("garbage");
    let m = HashMemo::with_racy_secs(Some(memo_file.clone()), 0);
    assert_eq!(
        m.file_hash(&weights, None).expect("hash"),
        blake3::hash(b"abc").to_hex().to_string()
    );
    let text = std::fs::read_to_string(&memo_file).expect("rewritten");
    assert!(text.contains("\"version\": 1"), "{text}");
}

/// A file that changes between the stat before loading and the hash is
/// refused by name.
#[test]
fn a_file_changed_while_loading_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let weights = dir.path().join("unet.safetensors");
    std::fs::write(&weights, b"version one").expect("write");
    let pending = PendingIdentity::stat(&[("unet", weights.as_path())]).expect("stat");
    // Replaced (as `train` or a download does: a new file renamed over).
    let tmp = dir.path().join("new");
    std::fs::write(&tmp, b"version two").expect("write");
    std::fs::rename(&tmp, &weights).expect("rename");
    let memo = HashMemo::with_racy_secs(None, 0);
    let err = pending
        .finish_with("", &memo)
        .expect_err("changed while loading");
    assert!(
        matches!(&err, ModelError::WeightsChanged { path } if *path == weights),
        "{err}"
    );
    assert!(err.to_string().contains("unet.safetensors"), "{err}");
}

/// The digest is the content's: the same bytes in another folder give the
/// same identity, other bytes or another configuration another; seeded
/// weights differ by seed; a student changes the combined identity.
#[test]
fn identities_follow_content_not_paths() {
    let dir = tempfile::tempdir().expect("tmp");
    let memo = HashMemo::with_racy_secs(None, 0);
    let write = |sub: &str, bytes: &[u8]| {
        let p = dir.path().join(sub);
        std::fs::create_dir_all(&p).expect("mkdir");
        let f = p.join("diffusion_pytorch_model.safetensors");
        std::fs::write(&f, bytes).expect("write");
        f
    };
    let (a, b, c) = (
        write("a", b"same"),
        write("b", b"same"),
        write("c", b"diff"),
    );
    let cfg = tiny();
    let id = |p: &Path, cfg: &ModelConfig| {
        PendingIdentity::stat(&[("unet", p)])
            .and_then(|pi| pi.finish_with(&config_text(cfg), &memo))
            .expect("identity")
    };
    let (ia, ib, ic) = (id(&a, &cfg), id(&b, &cfg), id(&c, &cfg));
    assert_eq!(ia.digest(), ib.digest());
    assert_ne!(ia.digest(), ic.digest());
    assert_eq!(ia.files().len(), 1);
    assert_eq!(
        ia.files()[0].blake3,
        blake3::hash(b"same").to_hex().to_string()
    );
    let mut other = cfg.clone();
    other.unet.norm_eps *= 2.0;
    assert_ne!(id(&a, &other).digest(), ia.digest());
    // The config's name (a path or preset name) is not content.
    let mut renamed = cfg.clone();
    renamed.name = "/elsewhere".into();
    assert_eq!(id(&a, &renamed).digest(), ia.digest());

    let s0 = WeightsIdentity::seeded(&cfg, 0);
    assert_eq!(s0, WeightsIdentity::seeded(&cfg, 0));
    assert_ne!(s0.digest(), WeightsIdentity::seeded(&cfg, 1).digest());
    assert_eq!(s0.digest().len(), 64);
    assert_ne!(s0.with_student("x"), s0.with_student("y"));
    assert_ne!(s0.with_student("x"), s0.digest());
}
