//! Compiles the c10d shim against the headers of the libtorch that torch-sys links (found
//! by fusion-core's build script), with the Gloo headers c10d's need vendored (the PyTorch
//! wheel ships c10d's, not Gloo's).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-changed=vendor");
    let (Ok(include), Ok(abi)) = (
        std::env::var("DEP_FUSION_CORE_CXX_INCLUDE"),
        std::env::var("DEP_FUSION_CORE_CXX_CXX11_ABI"),
    ) else {
        panic!("fusion-dist: fusion-core's build did not say where libtorch's headers are");
    };
    let include = PathBuf::from(include);
    let header = include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp");
    if !header.exists() {
        panic!(
            "fusion-dist: {} is missing: this libtorch has no c10d headers",
            header.display()
        );
    }
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
