//! What every CPU kernel of this folder needs: f32 views of candle's
//! storage, a row-major copy of a strided tensor, an output pointer that
//! parallel tasks share, and a reusable per-thread scratch buffer.

use std::borrow::Cow;
use std::cell::RefCell;

use candle_core::{CpuStorage, Layout, Result};

/// The whole f32 buffer of a CPU storage, for kernels that walk the
/// layout's strides themselves. `op` names the kernel in the error.
pub(crate) fn f32_storage<'a>(s: &'a CpuStorage, op: &str) -> Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("{op}: expected f32 storage"),
    }
}

/// The elements of a contiguous f32 tensor, in row-major order; an error
/// when the storage is not f32 or the layout not contiguous.
pub(crate) fn f32_contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = f32_storage(s, op)?;
    let Some((o1, o2)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor");
    };
    Ok(&data[o1..o2])
}

/// [`f32_contiguous`] for a storage the kernel overwrites in place.
pub(crate) fn f32_contiguous_mut<'a>(
    s: &'a mut CpuStorage,
    l: &Layout,
    op: &str,
) -> Result<&'a mut [f32]> {
    let Some((o1, o2)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor");
    };
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: expected f32 storage");
    };
    Ok(&mut data[o1..o2])
}

/// The elements of an f32 tensor in row-major order: borrowed when the
/// layout is contiguous, else copied with [`gather`].
pub(crate) fn f32_row_major<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<Cow<'a, [f32]>> {
    Ok(row_major(f32_storage(s, op)?, l))
}

/// The elements of `l` over the buffer `data`, in row-major order: borrowed
/// when the layout is contiguous, else copied with [`gather`].
pub(crate) fn row_major<'a>(data: &'a [f32], l: &Layout) -> Cow<'a, [f32]> {
    match l.contiguous_offsets() {
        Some((o1, o2)) => Cow::Borrowed(&data[o1..o2]),
        None => Cow::Owned(gather(data, l)),
    }
}

/// Elements of a strided tensor in row-major order.
pub(crate) fn gather(data: &[f32], l: &Layout) -> Vec<f32> {
    let dims = l.dims();
    let strides = l.stride();
    (0..l.shape().elem_count())
        .map(|mut i| {
            let mut off = l.start_offset();
            for (&d, &st) in dims.iter().zip(strides).rev() {
                off += (i % d) * st;
                i /= d;
            }
            data[off]
        })
        .collect()
}

/// A raw pointer into one output buffer, shared by the parallel tasks of a
/// kernel that each write their own disjoint block of it.
pub(crate) struct SharedOut<T = f32>(*mut T);

impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedOut<T> {}

// SAFETY: every kernel that builds a `SharedOut` dereferences it only on
// blocks that no other task touches (each use site says which), and the
// buffer outlives the parallel loop that uses the pointer.
unsafe impl<T> Send for SharedOut<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// The start of `buf`, to be shared by the tasks writing into it.
    pub(crate) fn new(buf: &mut [T]) -> Self {
        SharedOut(buf.as_mut_ptr())
    }

    /// The pointer (a method, so closures capture the whole `Send` value).
    pub(crate) fn ptr(self) -> *mut T {
        self.0
    }
}

thread_local! {
    /// Per-thread scratch buffer, reused across kernel calls (im2col
    /// columns, attention score rows).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `len` floats of this thread's scratch buffer (grown when
/// needed, contents unspecified), or with a fresh buffer when this thread's
/// is already in use (a nested kernel run by a work-stealing thread).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn row_major_views_borrow_or_copy() -> Result<()> {
        let t = Tensor::arange(0f32, 24.0, &Device::Cpu)?.reshape((2, 3, 4))?;
        let tt = t.transpose(1, 2)?;
        let (s, l) = t.storage_and_layout();
        let (st, lt) = tt.storage_and_layout();
        let (candle_core::Storage::Cpu(s), candle_core::Storage::Cpu(st)) = (&*s, &*st) else {
            candle_core::bail!("expected CPU storage");
        };
        assert!(matches!(f32_row_major(s, l, "t")?, Cow::Borrowed(_)));
        let copied = f32_row_major(st, lt, "t")?;
        assert!(matches!(copied, Cow::Owned(_)));
        let expected: Vec<f32> = tt.contiguous()?.flatten_all()?.to_vec1()?;
        assert_eq!(&*copied, expected.as_slice());
        assert!(f32_contiguous(st, lt, "t").is_err());
        assert_eq!(f32_contiguous(s, l, "t")?.len(), 24);
        Ok(())
    }

    #[test]
    fn scratch_is_sized_and_nests() {
        let outer = with_scratch(8, |a| {
            a.fill(1.0);
            // A nested borrow gets its own buffer.
            let inner = with_scratch(4, |b| {
                b.fill(2.0);
                b.len()
            });
            (a.len(), inner, a.iter().sum::<f32>())
        });
        assert_eq!(outer, (8, 4, 8.0));
    }
}
