//! Writing PyTorch files in tests: the zip archive, a pickle of tensor
//! entries (optionally with code-carrying entries), safetensors to torch.

use std::path::Path;

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A stored (uncompressed) zip archive.
pub fn write_zip(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let n = data.len() as u32;
        let mut local = Vec::new();
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&n.to_le_bytes());
        local.extend_from_slice(&n.to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&local);
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&n.to_le_bytes());
        central.extend_from_slice(&n.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 12]); // extra, comment, disk, internal and external attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    let cd_len = central.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    std::fs::write(path, out).expect("write zip");
}

pub struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, b: u8) {
        self.0.push(b);
    }
    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn unicode(&mut self, s: &str) {
        self.op(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        if v < 256 {
            self.op(b'K');
            self.op(v as u8);
        } else if v < 65536 {
            self.op(b'M');
            self.0.extend_from_slice(&(v as u16).to_le_bytes());
        } else {
            self.op(b'J');
            self.0.extend_from_slice(&(v as i32).to_le_bytes());
        }
    }
    fn put(&mut self, slot: u8) {
        self.op(b'q');
        self.op(slot);
    }
    fn get(&mut self, slot: u8) {
        self.op(b'h');
        self.op(slot);
    }
    fn tuple(&mut self, items: &[usize]) {
        match items.len() {
            0 => self.op(b')'),
            _ => {
                self.op(b'(');
                for &i in items {
                    self.int(i);
                }
                self.op(b't');
            }
        }
    }
}

/// Writes `tensors` (raw little-endian bytes, storage class, shape) as a
/// `torch.save` zip pickle under the archive folder `archive`.
pub fn write_torch_file(
    path: &Path,
    archive: &str,
    tensors: &[(String, &str, Vec<usize>, Vec<u8>)],
) {
    write_torch_file_in(path, archive, None, tensors);
}

/// [`write_torch_file`], the state dict under the top-level key `wrap` when
/// given (as Lightning's `.ckpt` keeps it under `state_dict`).
pub fn write_torch_file_in(
    path: &Path,
    archive: &str,
    wrap: Option<&str>,
    tensors: &[(String, &str, Vec<usize>, Vec<u8>)],
) {
    write_torch_file_with_code(path, archive, wrap, tensors, &[]);
}

/// [`write_torch_file_in`] with extra state-dict entries `(name, module,
/// function)` that unpickling with Python would build by calling
/// `module.function("echo pwned")`.
pub fn write_torch_file_with_code(
    path: &Path,
    archive: &str,
    wrap: Option<&str>,
    tensors: &[(String, &str, Vec<usize>, Vec<u8>)],
    code: &[(&str, &str, &str)],
) {
    let mut p = Pickle(Vec::new());
    p.op(0x80);
    p.op(2);
    if let Some(key) = wrap {
        p.op(b'}');
        p.unicode(key);
    }
    p.global("collections", "OrderedDict");
    p.put(0);
    p.op(b')');
    p.op(b'R');
    p.put(1);
    p.op(b'(');
    let mut entries = Vec::new();
    for (i, (name, storage, shape, bytes)) in tensors.iter().enumerate() {
        p.unicode(name);
        if i == 0 {
            p.global("torch._utils", "_rebuild_tensor_v2");
            p.put(2);
        } else {
            p.get(2);
        }
        p.op(b'(');
        // persistent id: ('storage', torch.<X>Storage, key, 'cpu', numel)
        p.op(b'(');
        p.unicode("storage");
        p.global("torch", storage);
        p.unicode(&i.to_string());
        p.unicode("cpu");
        let elem = if *storage == "FloatStorage" { 4 } else { 2 };
        p.int(bytes.len() / elem);
        p.op(b't');
        p.op(b'Q');
        p.int(0);
        p.tuple(shape);
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        p.tuple(&stride);
        p.op(0x89); // requires_grad False
        p.get(0);
        p.op(b')');
        p.op(b'R'); // backward hooks: OrderedDict()
        p.op(b't');
        p.op(b'R');
        entries.push((format!("{archive}/data/{i}"), bytes.clone()));
    }
    for (name, module, function) in code {
        p.unicode(name);
        p.global(module, function);
        p.op(b'(');
        p.unicode("echo pwned");
        p.op(b't');
        p.op(b'R');
    }
    p.op(b'u');
    if wrap.is_some() {
        p.op(b's');
    }
    p.op(b'.');
    entries.insert(0, (format!("{archive}/data.pkl"), p.0));
    entries.push((format!("{archive}/version"), b"3\n".to_vec()));
    entries.push((format!("{archive}/byteorder"), b"little".to_vec()));
    write_zip(path, &entries);
}

/// Rewrites a safetensors file as a torch pickle with the same bytes (fp16
/// stays fp16), as `torch.save(model.state_dict(), path)` would.
pub fn safetensors_to_torch(from: &Path, to: &Path) {
    safetensors_to_torch_in(from, to, None);
}

/// [`safetensors_to_torch`], the state dict under the top-level key `wrap`.
pub fn safetensors_to_torch_in(from: &Path, to: &Path, wrap: Option<&str>) {
    safetensors_to_torch_with_code(from, to, wrap, &[]);
}

/// [`safetensors_to_torch_in`] with code-carrying entries (see
/// [`write_torch_file_with_code`]).
pub fn safetensors_to_torch_with_code(
    from: &Path,
    to: &Path,
    wrap: Option<&str>,
    code: &[(&str, &str, &str)],
) {
    let bytes = std::fs::read(from).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let tensors: Vec<(String, &str, Vec<usize>, Vec<u8>)> = names
        .into_iter()
        .map(|n| {
            let v = st.tensor(n.as_str()).expect("tensor");
            let storage = match v.dtype() {
                safetensors::Dtype::F16 => "HalfStorage",
                safetensors::Dtype::F32 => "FloatStorage",
                safetensors::Dtype::BF16 => "BFloat16Storage",
                other => panic!("fixture dtype {other:?}"),
            };
            (n, storage, v.shape().to_vec(), v.data().to_vec())
        })
        .collect();
    write_torch_file_with_code(to, "archive", wrap, &tensors, code);
}
