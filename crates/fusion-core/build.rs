//! Compiles the small C++ shim for what tch does not wrap (the CUDA caching allocator's
//! statistics, autocast in a chosen precision) against the headers of the libtorch that torch-sys links, and tells
//! dependents with shims of their own where those headers are.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("fusion-core: torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB); run `cargo xtask setup`");
    };
    let include = PathBuf::from(lib).join("../include");
    // PyTorch 2.11's wheels use the C++11 ABI, as torch-sys assumes unless told otherwise.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .include(&include)
        .file("csrc/shim.cpp")
        .compile("fusion_core_cxx");
    println!("cargo:include={}", include.display());
    println!("cargo:cxx11_abi={abi}");
}
