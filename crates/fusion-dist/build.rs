//! Compiles the c10d shim against the headers of the libtorch that torch-sys links, with
//! the Gloo headers c10d's need vendored (the PyTorch wheel ships c10d's, not Gloo's).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-changed=vendor");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("fusion-dist: torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB); run `cargo xtask setup`");
    };
    let include = PathBuf::from(lib).join("../include");
    let header = include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp");
    if !header.exists() {
        panic!(
            "fusion-dist: {} is missing: this libtorch has no c10d headers",
            header.display()
        );
    }
    // PyTorch 2.11's wheels use the C++11 ABI, as torch-sys assumes unless told otherwise.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .std("c++17")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include("vendor")
        .file("csrc/c10d_shim.cpp")
        .compile("fusion_c10d");
}
