//! Build script. With the `cuda` feature it will compile `kernels/*.cu` to PTX (the CUDA issue);
//! without it, nothing here needs nvcc, so CPU-only builds stay toolchain-free.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
}
