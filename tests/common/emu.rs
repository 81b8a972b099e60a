//! Host buffers and launches for tests/kernel_emu.rs: the CUDA kernels run on the CPU by the
//! emulator (device/kernel_emu.rs), over host memory laid out as on the device.

use rand::rngs::StdRng;
use rand::Rng;

pub use tandem::device::kernel_emu::Arg;

/// A storage dtype of the kernels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dt {
    F32,
    Bf16,
}

pub const DTYPES: [Dt; 2] = [Dt::F32, Dt::Bf16];

impl Dt {
    pub fn name(self) -> &'static str {
        match self {
            Dt::F32 => "f32",
            Dt::Bf16 => "bf16",
        }
    }

    /// The values as this dtype stores them.
    pub fn round(self, v: &[f32]) -> Vec<f32> {
        match self {
            Dt::F32 => v.to_vec(),
            Dt::Bf16 => v
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect(),
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dt::F32 => 4,
            Dt::Bf16 => 2,
        }
    }

    /// The kernel exported for this dtype: `base_f32` / `base_bf16`.
    pub fn kernel(self, base: &str) -> String {
        format!("{base}_{}", self.name())
    }

    /// The tolerance for outputs stored in this dtype (bf16 keeps 8 bits of mantissa); exact
    /// comparisons stay exact.
    pub fn tol(self, atol: f32, rtol: f32) -> (f32, f32) {
        match self {
            Dt::F32 => (atol, rtol),
            Dt::Bf16 if atol == 0.0 && rtol == 0.0 => (0.0, 0.0),
            Dt::Bf16 => (atol.max(1e-3), rtol.max(1e-2)),
        }
    }
}

#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Chunk([u8; 16]);

/// A device buffer in host memory: `len` elements of `dt`, 16-byte aligned as cudaMalloc's are
/// (the kernels' vector loads need it), between two guard zones of [`GUARD`] chunks that
/// [`Buf::read`] checks: a kernel that writes past either end of its output fails the test.
pub struct Buf {
    pub dt: Dt,
    pub len: usize,
    mem: Vec<Chunk>,
}

/// 16-byte chunks of guard on each side of a [`Buf`]'s data.
const GUARD: usize = 4;
const GUARD_BYTE: u8 = 0xA5;

impl Buf {
    pub fn new(dt: Dt, vals: &[f32]) -> Buf {
        let width = dt.size();
        let data = (vals.len() * width).div_ceil(16);
        let mut mem = vec![Chunk([GUARD_BYTE; 16]); GUARD + data + GUARD];
        mem[GUARD..GUARD + data].fill(Chunk([0; 16]));
        let mut b = Buf {
            dt,
            len: vals.len(),
            mem,
        };
        b.write(vals);
        b
    }

    /// `len` NaNs: an element the kernel does not write fails any comparison.
    pub fn poisoned(dt: Dt, len: usize) -> Buf {
        Buf::new(dt, &vec![f32::NAN; len])
    }

    fn bytes(&self) -> &[u8] {
        &bytemuck_slice(&self.mem)[GUARD * 16..]
    }

    /// Panics if anything wrote into the guard zones (beyond the data's last element, up to
    /// the end of its 16-byte chunk, is data padding and not checked).
    fn check_guards(&self) {
        let all = bytemuck_slice(&self.mem);
        let back = all.len() - GUARD * 16;
        let written = |r: std::ops::Range<usize>| all[r].iter().any(|&b| b != GUARD_BYTE);
        assert!(
            !written(0..GUARD * 16),
            "a kernel wrote before the buffer's start"
        );
        assert!(
            !written(back..all.len()),
            "a kernel wrote past the buffer's end"
        );
    }

    pub fn write(&mut self, vals: &[f32]) {
        assert_eq!(vals.len(), self.len);
        let bytes = &mut bytemuck_slice_mut(&mut self.mem)[GUARD * 16..];
        for (i, &v) in vals.iter().enumerate() {
            match self.dt {
                Dt::F32 => bytes[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes()),
                Dt::Bf16 => bytes[2 * i..2 * i + 2]
                    .copy_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes()),
            }
        }
    }

    pub fn read(&self) -> Vec<f32> {
        self.check_guards();
        let bytes = self.bytes();
        (0..self.len)
            .map(|i| match self.dt {
                Dt::F32 => f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap()),
                Dt::Bf16 => half::bf16::from_bits(u16::from_le_bytes(
                    bytes[2 * i..2 * i + 2].try_into().unwrap(),
                ))
                .to_f32(),
            })
            .collect()
    }

    pub fn arg(&self) -> Arg {
        Arg::U64(self.mem[GUARD..].as_ptr() as u64)
    }

    pub fn arg_mut(&mut self) -> Arg {
        Arg::U64(self.mem[GUARD..].as_mut_ptr() as u64)
    }
}

fn bytemuck_slice(c: &[Chunk]) -> &[u8] {
    // SAFETY: Chunk is 16 plain bytes.
    unsafe { std::slice::from_raw_parts(c.as_ptr() as *const u8, c.len() * 16) }
}

fn bytemuck_slice_mut(c: &mut [Chunk]) -> &mut [u8] {
    // SAFETY: Chunk is 16 plain bytes.
    unsafe { std::slice::from_raw_parts_mut(c.as_mut_ptr() as *mut u8, c.len() * 16) }
}

/// Runs `kernel` on the emulator; a launch error (wrong arguments, deadlock, trap) fails the test.
pub fn run(kernel: &str, grid: (u32, u32, u32), block: u32, args: &[Arg]) {
    // SAFETY: every pointer argument is a live buffer of the calling test, sized as the
    // kernel's header comment asks.
    unsafe { tandem::device::kernel_emu::launch(kernel, grid, block, args) }
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// `n` values in [-1, 1) as `dt` stores them.
pub fn random_as(dt: Dt, rng: &mut StdRng, n: usize) -> Vec<f32> {
    dt.round(
        &(0..n)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>(),
    )
}

/// Asserts `|got - want| <= atol + |want| * rtol` (tolerances per [`Dt::tol`]) everywhere.
pub fn check(dt: Dt, what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    let (atol, rtol) = dt.tol(atol, rtol);
    super::assert_close(&format!("{} {what}", dt.name()), got, want, atol, rtol);
}
