//! The compute device: the CPU always; a CUDA GPU when mmflow is built with `--features cuda`.
//!
//! [`resolve`] is the registry's device resolver: the engine calls it once per run, before
//! the first stage that uses a device, and records what it returns (`cpu`, `cuda:0`) in the
//! lock file and the fingerprints. `cuda` that cannot be used is an error saying why (not
//! built in, the driver or a CUDA library missing, no usable driver, no device, or the
//! device failed to open); `auto` takes the GPU when it can be used and logs which device it
//! chose and why. [`open`] gives a stage the candle device for the resolved one.
//!
//! A build with `--features cuda` links no CUDA library, so it starts on any machine: the
//! driver (`libcuda.so.1`), cuBLAS and cuRAND are looked for and loaded only when `cuda` or
//! `auto` is resolved (`cuda_libraries`), before cudarc is first called, and a library that
//! is missing is named with every place looked in. A driver older than the CUDA version the
//! build was compiled with is refused before it is used; a driver library that is only a
//! stub (CUDA's `stubs` folder on the loader's path) is reported as "no usable driver".
//! cudarc panics on a library or function it cannot load; every call into it here runs
//! under [`std::panic::catch_unwind`], so what the checks miss is still an error.

use candle_core::Device;
use mmflow_pipeline::{DeviceChoice, ResolvedDevice, StageError};

#[cfg(feature = "cuda")]
use super::cuda_libraries::{self, Machine, Places, Search};

/// Why a CUDA device cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CudaUnavailable {
    /// mmflow was built without the `cuda` feature.
    #[error("this mmflow was built without CUDA support (rebuild with `--features cuda`)")]
    NotBuilt,
    /// The driver's library or a CUDA library was not found or does not load.
    #[cfg(feature = "cuda")]
    #[error("{0}")]
    Missing(cuda_libraries::Missing),
    /// The driver library is a stub, too old, or not working.
    #[error("no usable NVIDIA driver ({0})")]
    NoDriver(String),
    /// The driver works but sees no device.
    #[error("the NVIDIA driver reports no CUDA device ({0})")]
    NoDevice(String),
    /// Anything else that went wrong opening the device.
    #[error("the CUDA device could not be opened ({0})")]
    Other(String),
}

/// Driver error codes (`CUresult`, stable across CUDA versions) grouped by what they mean
/// for the user.
mod code {
    pub const NOT_INITIALIZED: u32 = 3;
    pub const STUB_LIBRARY: u32 = 34;
    pub const INSUFFICIENT_DRIVER: u32 = 35;
    pub const DEVICE_UNAVAILABLE: u32 = 46;
    pub const NO_DEVICE: u32 = 100;
    pub const INVALID_DEVICE: u32 = 101;
    pub const OPERATING_SYSTEM: u32 = 304;
    pub const SYSTEM_NOT_READY: u32 = 802;
    pub const SYSTEM_DRIVER_MISMATCH: u32 = 803;
    pub const COMPAT_NOT_SUPPORTED_ON_DEVICE: u32 = 804;
}

/// Classifies a driver error by its code; `what` is its name and description.
pub fn classify(code: u32, what: String) -> CudaUnavailable {
    match code {
        code::NOT_INITIALIZED
        | code::STUB_LIBRARY
        | code::INSUFFICIENT_DRIVER
        | code::OPERATING_SYSTEM
        | code::SYSTEM_NOT_READY
        | code::SYSTEM_DRIVER_MISMATCH
        | code::COMPAT_NOT_SUPPORTED_ON_DEVICE => CudaUnavailable::NoDriver(what),
        code::NO_DEVICE | code::INVALID_DEVICE | code::DEVICE_UNAVAILABLE => {
            CudaUnavailable::NoDevice(what)
        }
        _ => CudaUnavailable::Other(what),
    }
}

/// Which device the pipeline's `device` setting means on this machine (the registry's
/// device resolver).
pub fn resolve(choice: DeviceChoice) -> Result<ResolvedDevice, String> {
    match choice {
        DeviceChoice::Cpu => Ok(ResolvedDevice::Cpu),
        DeviceChoice::Cuda => probe_cuda().map_err(|why| format!("device = \"cuda\" but {why}")),
        DeviceChoice::Auto => Ok(match probe_cuda() {
            Ok(gpu) => {
                tracing::info!("device = \"auto\": using {gpu}, a CUDA device that opened");
                gpu
            }
            Err(why) => {
                tracing::info!("device = \"auto\": using the CPU, because {why}");
                ResolvedDevice::Cpu
            }
        }),
    }
}

/// The candle device for a resolved device.
pub fn open(device: ResolvedDevice) -> Result<Device, StageError> {
    match device {
        ResolvedDevice::Cpu => Ok(Device::Cpu),
        ResolvedDevice::Cuda(ordinal) => open_cuda(ordinal)
            .map_err(|why| StageError::config(format!("device cuda:{ordinal}: {why}"))),
    }
}

/// The first CUDA device, if the driver and the CUDA libraries load, the driver sees a
/// device, and it opens. A missing driver is told first, then a driver that is not usable or
/// sees no device, then a missing CUDA library.
#[cfg(feature = "cuda")]
fn probe_cuda() -> Result<ResolvedDevice, CudaUnavailable> {
    use cudarc::driver::result;
    let libraries = cuda_libraries();
    if libraries.lacks_driver() {
        libraries.complete().map_err(CudaUnavailable::Missing)?;
    }
    without_panic(|| {
        result::init().map_err(describe)?;
        check_driver_version()?;
        let count = result::device::get_count().map_err(describe)?;
        if count < 1 {
            return Err(CudaUnavailable::NoDevice("0 devices".into()));
        }
        Ok(())
    })?;
    open_cuda(0)?;
    Ok(ResolvedDevice::Cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn probe_cuda() -> Result<ResolvedDevice, CudaUnavailable> {
    Err(CudaUnavailable::NotBuilt)
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device, CudaUnavailable> {
    let libraries = cuda_libraries();
    libraries.complete().map_err(CudaUnavailable::Missing)?;
    without_panic(|| Device::new_cuda(ordinal).map_err(|e| CudaUnavailable::Other(e.to_string())))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_: usize) -> Result<Device, CudaUnavailable> {
    Err(CudaUnavailable::NotBuilt)
}

/// The CUDA libraries of this machine, looked for and loaded once per process.
#[cfg(feature = "cuda")]
fn cuda_libraries() -> &'static Search {
    static SEARCH: std::sync::OnceLock<Search> = std::sync::OnceLock::new();
    SEARCH.get_or_init(|| {
        let libraries = cuda_libraries::needed(BUILT_WITH.major());
        let search = Search::run(Places::on(&Machine::this()), &libraries);
        for loaded in search.loaded() {
            tracing::debug!("CUDA: {} from {}", loaded.library.file, loaded.from);
        }
        search
    })
}

/// A CUDA version as the driver API numbers it (`1000 × major + 10 × minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CudaVersion(pub i32);

impl CudaVersion {
    /// The major version (13 for CUDA 13.0).
    pub fn major(self) -> u32 {
        (self.0 / 1000).unsigned_abs()
    }
}

impl std::fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0 / 1000, self.0 % 1000 / 10)
    }
}

/// The CUDA version this build was compiled with (the toolkit's `cuda.h`).
#[cfg(feature = "cuda")]
const BUILT_WITH: CudaVersion = CudaVersion(cudarc::driver::sys::CUDA_VERSION as i32);

/// Why a driver that supports CUDA `driver` cannot run what was built with `built`, if it
/// cannot (candle's kernels are PTX of the build's CUDA version, and cudarc calls the
/// functions of its `cuda.h`).
pub fn driver_too_old(driver: CudaVersion, built: CudaVersion) -> Option<CudaUnavailable> {
    (driver < built).then(|| {
        CudaUnavailable::NoDriver(format!(
            "the driver supports CUDA {driver} and this mmflow was built with CUDA {built}; \
             update the NVIDIA driver (CUDA 13 needs 580 or newer)"
        ))
    })
}

#[cfg(feature = "cuda")]
fn check_driver_version() -> Result<(), CudaUnavailable> {
    let mut version = 0;
    // SAFETY: the driver is initialised; cuDriverGetVersion writes one int.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(describe)?;
    match driver_too_old(CudaVersion(version), BUILT_WITH) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// A driver error, named and classified.
#[cfg(feature = "cuda")]
fn describe(e: cudarc::driver::DriverError) -> CudaUnavailable {
    let name = format!("{:?}", e.0);
    let text = e
        .error_string()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let what = if text.is_empty() {
        name
    } else {
        format!("{name}: {text}")
    };
    classify(e.0 as u32, what)
}

/// Runs `calls` (calls into cudarc), turning a panic — cudarc's answer to a library or
/// function it cannot load — into an error. The panic is not printed: the error says it.
#[cfg_attr(
    not(any(feature = "cuda", test)),
    expect(dead_code, reason = "only the CUDA build calls cudarc")
)]
fn without_panic<T>(
    calls: impl FnOnce() -> Result<T, CudaUnavailable>,
) -> Result<T, CudaUnavailable> {
    quiet_panics::install();
    let caught =
        quiet_panics::within(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(calls)));
    caught.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no message".into());
        Err(CudaUnavailable::Other(format!("cudarc stopped: {what}")))
    })
}

/// A panic hook that stays silent for panics [`without_panic`] catches on its own thread and
/// hands every other panic to the hook it replaced.
mod quiet_panics {
    use std::cell::Cell;
    use std::sync::Once;

    thread_local! {
        static QUIET: Cell<bool> = const { Cell::new(false) };
    }

    /// Installs the hook (once per process).
    pub fn install() {
        static INSTALLED: Once = Once::new();
        INSTALLED.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !QUIET.get() {
                    previous(info);
                }
            }));
        });
    }

    /// Runs `f` with this thread's panics not printed.
    pub fn within<T>(f: impl FnOnce() -> T) -> T {
        let before = QUIET.replace(true);
        let result = f();
        QUIET.set(before);
        result
    }
}

/// Converts a candle error into a stage error naming the step that was being done, keeping
/// candle's error as its source: the device running out of memory is
/// [`StageError::OutOfMemory`] (a smaller batch fixes it), anything else
/// [`StageError::Compute`]. The convention of `train/` and the text encoder: tensor code
/// returns candle's `Result` or converts each operation's error here, naming its step.
pub fn err(step: &str) -> impl Fn(candle_core::Error) -> StageError + '_ {
    move |e| {
        if is_out_of_memory(&e) {
            StageError::OutOfMemory {
                step: step.to_string(),
                source: Box::new(e),
            }
        } else {
            StageError::compute(step, e)
        }
    }
}

/// Whether a candle error is a device allocation failure, by its type: the CUDA driver's
/// `CUDA_ERROR_OUT_OF_MEMORY` or cuBLAS's `CUBLAS_STATUS_ALLOC_FAILED`, inside whatever context
/// candle wrapped it in. (The CPU has no such error: a failed allocation there aborts.)
fn is_out_of_memory(e: &candle_core::Error) -> bool {
    use candle_core::Error;
    match e {
        Error::WithBacktrace { inner, .. }
        | Error::Context { inner, .. }
        | Error::WithPath { inner, .. } => is_out_of_memory(inner),
        #[cfg(feature = "cuda")]
        Error::Cuda(source) => source
            .downcast_ref::<candle_core::cuda_backend::CudaError>()
            .is_some_and(cuda_out_of_memory),
        _ => false,
    }
}

#[cfg(feature = "cuda")]
fn cuda_out_of_memory(e: &candle_core::cuda_backend::CudaError) -> bool {
    use candle_core::cuda_backend::CudaError;
    use cudarc::cublas::{result::CublasError, sys::cublasStatus_t};
    use cudarc::driver::{sys::CUresult, DriverError};
    match e {
        CudaError::Cuda(DriverError(code))
        | CudaError::Load {
            cuda: DriverError(code),
            ..
        } => *code == CUresult::CUDA_ERROR_OUT_OF_MEMORY,
        CudaError::Cublas(CublasError(status)) => {
            *status == cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_are_told_apart() {
        let kind = |code| classify(code, String::new());
        assert_eq!(kind(34), CudaUnavailable::NoDriver(String::new()));
        assert_eq!(kind(35), CudaUnavailable::NoDriver(String::new()));
        assert_eq!(kind(803), CudaUnavailable::NoDriver(String::new()));
        assert_eq!(kind(100), CudaUnavailable::NoDevice(String::new()));
        assert_eq!(kind(101), CudaUnavailable::NoDevice(String::new()));
        assert_eq!(kind(999), CudaUnavailable::Other(String::new()));
        let message = classify(
            100,
            "CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected".into(),
        )
        .to_string();
        assert!(message.contains("reports no CUDA device") && message.contains("NO_DEVICE"));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_cuda_feature_cuda_is_refused_and_auto_is_the_cpu() {
        let why = resolve(DeviceChoice::Cuda).unwrap_err();
        assert!(
            why.contains("built without CUDA support") && why.contains("--features cuda"),
            "{why}"
        );
        assert_eq!(resolve(DeviceChoice::Auto), Ok(ResolvedDevice::Cpu));
        assert_eq!(resolve(DeviceChoice::Cpu), Ok(ResolvedDevice::Cpu));
        assert!(
            matches!(open(ResolvedDevice::Cuda(0)), Err(StageError::Config(m)) if m.contains("cuda:0"))
        );
    }

    #[test]
    fn a_driver_older_than_the_build_is_refused() {
        let built = CudaVersion(13000);
        assert_eq!(built.major(), 13);
        assert_eq!(CudaVersion(12040).to_string(), "12.4");
        assert_eq!(driver_too_old(CudaVersion(13000), built), None);
        assert_eq!(driver_too_old(CudaVersion(13010), built), None);
        let why = driver_too_old(CudaVersion(12090), built)
            .unwrap()
            .to_string();
        assert_eq!(
            why,
            "no usable NVIDIA driver (the driver supports CUDA 12.9 and this mmflow was built \
             with CUDA 13.0; update the NVIDIA driver (CUDA 13 needs 580 or newer))"
        );
    }

    #[test]
    fn a_panic_in_cudarc_is_an_error() {
        let stopped = without_panic::<()>(|| panic!("Missing symbol cuCtxCreate_v4"));
        assert_eq!(
            stopped,
            Err(CudaUnavailable::Other(
                "cudarc stopped: Missing symbol cuCtxCreate_v4".into()
            ))
        );
        assert_eq!(without_panic(|| Ok(7)), Ok(7));
    }

    #[test]
    fn other_errors_are_computations_that_keep_candles_error() {
        // Classified by type, not by message: text that reads like the driver's is not it.
        let look_alike = candle_core::Error::Msg("CUDA_ERROR_OUT_OF_MEMORY: out of memory".into());
        let e = err("forward pass")(look_alike.context("a context"));
        assert!(
            matches!(&e, StageError::Compute { step, .. } if step == "forward pass"),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("internal error: forward pass: "),
            "{e}"
        );
        let source = std::error::Error::source(&e).expect("candle's error is kept");
        assert!(source.to_string().contains("a context"), "{source}");
        let e = e.during("epoch 2, batch 5");
        assert!(e
            .to_string()
            .starts_with("internal error: epoch 2, batch 5: forward pass: "));
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn running_out_of_gpu_memory_suggests_a_smaller_batch() {
        use candle_core::cuda_backend::CudaError;
        use cudarc::cublas::{result::CublasError, sys::cublasStatus_t};
        use cudarc::driver::{sys::CUresult, DriverError};
        let driver = |code| candle_core::Error::from(CudaError::Cuda(DriverError(code)));
        let e = err("forward pass")(driver(CUresult::CUDA_ERROR_OUT_OF_MEMORY).context("matmul"))
            .during("epoch 1, batch 3");
        // (Not formatted: cudarc's driver errors describe themselves through the driver.)
        assert!(matches!(
            &e,
            StageError::OutOfMemory { step, .. } if step == "epoch 1, batch 3: forward pass"
        ));
        let told = StageError::OutOfMemory {
            step: "forward pass".into(),
            source: "out of memory".into(),
        };
        assert!(told.to_string().contains("lower `batch_size`"), "{told}");
        let cublas = CudaError::Cublas(CublasError(cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED));
        assert!(matches!(
            err("backward")(cublas.into()),
            StageError::OutOfMemory { .. }
        ));
        let other = err("forward pass")(driver(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS));
        assert!(matches!(other, StageError::Compute { .. }));
    }
}
