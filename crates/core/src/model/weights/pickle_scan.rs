//! The entries of a PyTorch pickle's state dict that candle's restricted
//! reader drops (issue #20 item 18). The reader never runs code: an entry
//! that is not a tensor (a Python object built by calling some importable
//! function — `os.system`, `builtins.eval` — or a plain number or string)
//! is skipped. That is right, but it was silent; this names each dropped
//! entry, and says when it carried code, so that a user learns the file is
//! not a plain state dict.
//!
//! Parses only the archive's `data.pkl` with candle's own restricted
//! unpickler (no tensor data is read, nothing is imported or called).

use std::path::Path;

use candle_core::pickle::{Object, Stack};

/// Callables a torch state dict legitimately references.
const BENIGN: [(&str, &str); 5] = [
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("collections", "OrderedDict"),
    ("torch", "Size"),
];

/// One state-dict entry the reader skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The entry's key.
    pub name: String,
    /// What it holds, in words.
    pub what: String,
    /// Whether it references a callable (code that unpickling with Python
    /// would have run).
    pub code: bool,
}

impl Dropped {
    /// The warning line for a file.
    pub fn note(&self, path: &Path) -> String {
        let verdict = if self.code {
            "code-carrying entry dropped, nothing was run"
        } else {
            "dropped"
        };
        format!(
            "{}: state-dict entry `{}` is {} ({verdict}); the rest of the file was read",
            path.display(),
            self.name,
            self.what
        )
    }
}

/// At most this many dropped entries are named per file.
const MAX_NAMED: usize = 50;

/// The dropped entries of the state dict that [`super::layout::read_pickle`]
/// reads (the top-level dict, or its `state_dict` when the top level holds
/// no tensors). Best effort: an archive that cannot be parsed gives none
/// (the reader itself reports it).
pub fn dropped_entries(path: &Path) -> Vec<Dropped> {
    if super::file_kind::non_regular(path).is_some() {
        return Vec::new();
    }
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let Ok(mut zip) = zip::ZipArchive::new(std::io::BufReader::new(file)) else {
        return Vec::new();
    };
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok())
        .filter(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .collect();
    let mut out = Vec::new();
    for name in names {
        let Ok(entry) = zip.by_name(&name) else {
            continue;
        };
        let mut reader = std::io::BufReader::new(entry);
        let mut stack = Stack::empty();
        if stack.read_loop(&mut reader).is_err() {
            continue;
        }
        let Ok(obj) = stack.finalize() else {
            continue;
        };
        let dir = std::path::PathBuf::from(name.trim_end_matches(".pkl"));
        let obj = unwrap_module(obj);
        let Object::Dict(entries) = obj else {
            continue;
        };
        let holds_tensor = entries.iter().any(|(k, v)| is_tensor(k, v, &dir));
        let entries = if holds_tensor {
            entries
        } else {
            match entries
                .into_iter()
                .find(|(k, _)| *k == Object::Unicode("state_dict".into()))
            {
                Some((_, Object::Dict(inner))) => inner,
                _ => continue,
            }
        };
        for (k, v) in entries {
            if is_tensor(&k, &v, &dir) {
                continue;
            }
            let key = match &k {
                Object::Unicode(s) => s.clone(),
                other => format!("{other:?}"),
            };
            out.push(describe(key, &k, v, &dir));
            if out.len() >= MAX_NAMED {
                return out;
            }
        }
    }
    out
}

/// A scripted module's pickle keeps its state dict inside a `Build`.
fn unwrap_module(obj: Object) -> Object {
    match obj {
        Object::Build { callable, args } => match *callable {
            Object::Reduce { callable, .. }
                if matches!(&*callable, Object::Class { module_name, class_name }
                    if module_name == "__torch__" && class_name == "Module") =>
            {
                *args
            }
            other => Object::Build {
                callable: Box::new(other),
                args,
            },
        },
        obj => obj,
    }
}

fn is_tensor(k: &Object, v: &Object, dir: &Path) -> bool {
    matches!(v.clone().into_tensor_info(k.clone(), dir), Ok(Some(_)))
}

fn describe(name: String, k: &Object, v: Object, dir: &Path) -> Dropped {
    let mut calls = Vec::new();
    callables(&v, &mut calls);
    calls.retain(|(m, c)| {
        !(BENIGN.iter().any(|(bm, bc)| bm == m && bc == c)
            || (m == "torch" && c.ends_with("Storage")))
    });
    calls.dedup();
    if let Some((m, c)) = calls.first() {
        return Dropped {
            name,
            what: format!("a Python object that unpickling would build by calling `{m}.{c}`"),
            code: true,
        };
    }
    if let Err(e) = v.clone().into_tensor_info(k.clone(), dir) {
        return Dropped {
            name,
            what: format!("a tensor this reader cannot decode ({e})"),
            code: false,
        };
    }
    let kind = match v {
        Object::Int(_) | Object::Long(_) => "an integer",
        Object::Float(_) => "a number",
        Object::Unicode(_) => "a string",
        Object::Bool(_) => "a boolean",
        Object::None => "None",
        Object::Tuple(_) | Object::List(_) => "a list",
        Object::Dict(_) => "a dict",
        _ => "not a tensor",
    };
    Dropped {
        name,
        what: format!("{kind}, not a tensor"),
        code: false,
    }
}

/// Every class or function an object references.
fn callables(o: &Object, out: &mut Vec<(String, String)>) {
    match o {
        Object::Class {
            module_name,
            class_name,
        } => out.push((module_name.clone(), class_name.clone())),
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            callables(callable, out);
            callables(args, out);
        }
        Object::Tuple(v) | Object::List(v) => v.iter().for_each(|x| callables(x, out)),
        Object::Dict(v) => v.iter().for_each(|(a, b)| {
            callables(a, out);
            callables(b, out);
        }),
        Object::PersistentLoad(x) => callables(x, out),
        _ => {}
    }
}

/// The warnings for a part's pickle files (every shard of a sharded one);
/// none for safetensors.
pub fn part_notes(f: &super::layout::PartFile) -> Vec<String> {
    if f.format != super::layout::Format::Pickle {
        return Vec::new();
    }
    let files = if f.sharded {
        let folder = f.path.parent().unwrap_or(Path::new("."));
        super::layout::read_index(&f.path)
            .map(|(shards, _)| shards.iter().map(|s| folder.join(s)).collect())
            .unwrap_or_default()
    } else {
        vec![f.path.clone()]
    };
    files
        .iter()
        .flat_map(|p| dropped_entries(p).into_iter().map(|d| d.note(p)))
        .collect()
}
