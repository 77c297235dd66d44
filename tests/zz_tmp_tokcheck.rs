use cleandift::model::text::ClipTokenizer;
#[test]
fn compare() {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string("/tmp/tokcheck/ids.json").unwrap()).unwrap();
    let mut bad = 0;
    for (shape, pad) in [("tiny-sd15", "<|endoftext|>"), ("tiny-sd21", "!")] {
        let tok = ClipTokenizer::tiny(pad).unwrap();
        for case in v[shape].as_array().unwrap() {
            let p = case[0].as_str().unwrap();
            let want: Vec<u32> = case[1].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let got = tok.encode(p).unwrap();
            if got != want { bad += 1; println!("{shape} {p:?}\n  want {want:?}\n  got  {got:?}"); }
        }
    }
    assert_eq!(bad, 0);
}
