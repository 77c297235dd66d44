use super::*;

fn sd21() -> ModelConfig {
    ModelConfig::preset("sd21").expect("preset")
}

/// The estimate follows its formula: the VAE term with the pixels and the
/// first VAE level's channels, the UNet term per member with the latent's
/// pixels; 16-bit elements are two bytes with an f32 copy beside.
#[test]
fn the_estimate_scales_with_pixels_batch_and_dtype() {
    let cfg = sd21();
    let n768 = Need::of(&cfg, DType::F32, (768, 768), 0, 0);
    let px = 768.0 * 768.0;
    assert_eq!(n768.vae, (VAE_LIVE * 128.0 * px * 4.0).ceil() as u64);
    assert_eq!(
        n768.unet_member,
        (UNET_LIVE * 320.0 * px / 64.0 * 4.0).ceil() as u64
    );
    let n1536 = Need::of(&cfg, DType::F32, (1536, 1536), 0, 0);
    assert_eq!(n1536.vae, 4 * n768.vae);
    // One member: the VAE dominates; enough members: the UNet does.
    assert_eq!(n768.total(1), n768.fixed + n768.vae);
    let many = 64;
    assert_eq!(
        n768.total(many),
        n768.fixed + n768.unet_member * many as u64
    );
    assert!(n768.total(many) > n768.total(1));
    // bf16: two bytes an element plus one f32 copy.
    let b = Need::of(&cfg, DType::BF16, (768, 768), 0, 0);
    assert_eq!(b.vae, ((VAE_LIVE * 2.0 + 4.0) * 128.0 * px).ceil() as u64);
    // Output maps count (f32, and a running sum).
    let with_out = Need::of(&cfg, DType::F32, (768, 768), 1000, 0);
    assert_eq!(with_out.fixed - n768.fixed, 8000);
}

/// Fits: as asked. Too many members: the largest batch that fits, and a
/// note that says so. Not even one: a refusal that names the estimate, the
/// bound and a size that fits.
#[test]
fn the_plan_keeps_lowers_or_refuses() {
    let cfg = sd21();
    let need = Need::of(&cfg, DType::F32, (768, 768), 0, 5 << 30);
    let avail = |bytes: u64| {
        Some(Available {
            bytes,
            bound: Bound::AddressSpace,
        })
    };
    let ok = plan(&need, &cfg, DType::F32, (768, 768), 8, 8, avail(u64::MAX)).expect("fits");
    assert_eq!(
        ok,
        Plan {
            per_pass: 8,
            note: None
        }
    );
    // No measurement (a GPU, not Linux): as asked.
    let unknown = plan(&need, &cfg, DType::F32, (768, 768), 8, 8, None).expect("no check");
    assert_eq!(unknown.per_pass, 8);
    // Asked for more per pass than members: the members.
    let few = plan(&need, &cfg, DType::F32, (768, 768), 3, 8, avail(u64::MAX)).expect("fits");
    assert_eq!(few.per_pass, 3);

    let room = need.total(5) + 1;
    let lowered = plan(&need, &cfg, DType::F32, (768, 768), 64, 32, avail(room)).expect("lowered");
    assert_eq!(lowered.per_pass, 5);
    let note = lowered.note.expect("a note");
    assert!(
        note.contains("32 ensemble members per UNet pass")
            && note.contains("running 5 per pass")
            && note.contains("ulimit -v"),
        "{note}"
    );

    let tight = need.total(1) - 1;
    let err = plan(&need, &cfg, DType::F32, (768, 768), 1, 1, avail(tight)).expect_err("refused");
    assert_eq!(err.need, need.total(1));
    assert_eq!(err.available, tight);
    let msg = err.to_string();
    assert!(
        msg.contains("768x768")
            && msg.contains(&format!("the estimate is {}", gib(need.total(1))))
            && msg.contains("address-space limit (ulimit -v)")
            && msg.contains("5.0 GiB of weights"),
        "{msg}"
    );
    // The suggested size fits.
    assert!(
        err.smaller < 768 && err.smaller.is_multiple_of(8),
        "{}",
        err.smaller
    );
    let smaller = Need::of(&cfg, DType::F32, (err.smaller, err.smaller), 0, 0);
    assert!(smaller.total(1) <= tight, "{msg}");
}

#[test]
fn proc_fields_are_read_in_bytes() {
    let meminfo = "MemTotal:       24000000 kB\nMemAvailable:   1234 kB\n";
    assert_eq!(kib_field(meminfo, "MemAvailable:"), Some(1234 * 1024));
    assert_eq!(kib_field(meminfo, "VmSize:"), None);
    assert_eq!(gib(3 << 30), "3.0 GiB");
    assert_eq!(gib(300 << 20), "300 MiB");
    // On Linux something is always known (at least MemAvailable).
    if cfg!(target_os = "linux") {
        let a = Available::now().expect("available");
        assert!(a.bytes > 0);
    }
}
