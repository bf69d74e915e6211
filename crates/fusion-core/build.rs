//! Makes CUDA usable from every binary that links fusion-core.
//!
//! Nothing in Rust code references a symbol of `libtorch_cuda.so`, so the linker's
//! `--as-needed` drops it and libtorch never registers its CUDA backend. Linking it with
//! the `-as-needed` modifier keeps it; the directive travels with this rlib to every
//! final binary (tests, the CLI). `cargo xtask setup` sets `FUSION_TORCH_CUDA=0` for the
//! slim CPU install, whose `libtorch_cuda.so` lacks its cuBLAS/cuDNN dependencies.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=FUSION_TORCH_CUDA");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        return;
    };
    let cuda_wanted = std::env::var("FUSION_TORCH_CUDA").map_or(true, |v| v != "0");
    if cuda_wanted && libtorch.join("lib").join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-lib=dylib:-as-needed=torch_cuda");
    }
}
