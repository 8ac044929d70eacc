//! With the `cuda` feature: makes candle-kernels' `-lcudart` link CUDA's static runtime.
//!
//! candle-kernels links its quantised-matmul kernels (compiled by nvcc into a static library)
//! with `cargo:rustc-link-lib=dylib=cudart`, which would make the binary refuse to start
//! wherever `libcudart.so.13` is missing, CPU pipelines included. The static runtime
//! (`libcudart_static.a`, what nvcc itself links by default) has the same functions and loads
//! the driver only when one of them is called. This script puts a copy of it named
//! `libcudart.a` in a folder of its own and names that folder to the linker, which takes it
//! for `-lcudart`: the linker tries the named folders before the system's, `.so` then `.a` in
//! each, and no other folder named to it holds a cudart. The driver, cuBLAS and cuRAND are
//! not linked at all: cudarc loads them when a stage asks for a GPU
//! (`src/train/cuda_libraries.rs`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Environment variables that name a CUDA toolkit (the ones cudarc's build reads).
const TOOLKIT_VARIABLES: [&str; 4] = [
    "CUDA_HOME",
    "CUDA_PATH",
    "CUDA_ROOT",
    "CUDA_TOOLKIT_ROOT_DIR",
];
/// Where toolkits are installed when no variable names one.
const TOOLKIT_FOLDERS: [&str; 4] = ["/usr/local/cuda", "/opt/cuda", "/usr/lib/cuda", "/usr"];
const STATIC_RUNTIME: &str = "libcudart_static.a";

fn main() -> ExitCode {
    println!("cargo::rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return ExitCode::SUCCESS;
    }
    for variable in TOOLKIT_VARIABLES {
        println!("cargo::rerun-if-env-changed={variable}");
    }
    let searched = library_folders();
    let Some(runtime) = searched
        .iter()
        .map(|folder| folder.join(STATIC_RUNTIME))
        .find(|file| file.is_file())
    else {
        eprintln!(
            "mmflow-stages: the `cuda` feature needs CUDA's static runtime {STATIC_RUNTIME}, \
             not found in {}; install a CUDA toolkit (scripts/cuda-toolchain.sh) or name one \
             in CUDA_HOME",
            list(&searched)
        );
        return ExitCode::FAILURE;
    };
    println!("cargo::rerun-if-changed={}", runtime.display());
    match link_as_cudart(&runtime) {
        Ok(folder) => {
            println!("cargo::rustc-link-search=native={}", folder.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mmflow-stages: linking {}: {e}", runtime.display());
            ExitCode::FAILURE
        }
    }
}

/// The folders that may hold the toolkit's libraries, in the order they are tried.
fn library_folders() -> Vec<PathBuf> {
    let named: Vec<PathBuf> = TOOLKIT_VARIABLES
        .iter()
        .filter_map(env::var_os)
        .map(PathBuf::from)
        .collect();
    let roots = if named.is_empty() {
        TOOLKIT_FOLDERS.iter().map(PathBuf::from).collect()
    } else {
        named
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    roots
        .iter()
        .flat_map(|root| {
            [
                root.join("lib64"),
                root.join("lib"),
                root.join(format!("targets/{arch}-linux/lib")),
                root.join(format!("lib/{arch}-linux-gnu")),
            ]
        })
        .collect()
}

/// A folder in OUT_DIR holding only `libcudart.a`, a copy of `runtime`.
fn link_as_cudart(runtime: &Path) -> std::io::Result<PathBuf> {
    let out = env::var_os("OUT_DIR").ok_or_else(|| std::io::Error::other("OUT_DIR is not set"))?;
    let folder = PathBuf::from(out).join("cudart");
    std::fs::create_dir_all(&folder)?;
    std::fs::copy(runtime, folder.join("libcudart.a"))?;
    Ok(folder)
}

fn list(folders: &[PathBuf]) -> String {
    folders
        .iter()
        .map(|folder| folder.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
