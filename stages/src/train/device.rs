//! The compute device: the CPU always; a CUDA GPU when mmflow is built with `--features cuda`.
//!
//! [`resolve`] is the registry's device resolver: the engine calls it once per run, before
//! the first stage that uses a device, and records what it returns (`cpu`, `cuda:0`) in the
//! lock file and the fingerprints. `cuda` that cannot be used is an error saying why (not
//! built in, no usable driver, no device, or the device failed to open); `auto` takes the GPU
//! when it can be used and logs which device it chose and why. [`open`] gives a stage the
//! candle device for the resolved one.
//!
//! A build with `--features cuda` links the driver library (`libcuda.so.1`) at load time, as
//! candle requires: on a machine without the NVIDIA driver that binary does not start at all
//! (the system loader names the missing library). A driver library that is only a stub
//! (CUDA's `stubs` folder on the loader's path) is reported as "no usable driver".

use candle_core::Device;
use mmflow_pipeline::{DeviceChoice, ResolvedDevice, StageError};

/// Why a CUDA device cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CudaUnavailable {
    /// mmflow was built without the `cuda` feature.
    #[error("this mmflow was built without CUDA support (rebuild with `--features cuda`)")]
    NotBuilt,
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

/// The first CUDA device, if the driver works and it opens.
#[cfg(feature = "cuda")]
fn probe_cuda() -> Result<ResolvedDevice, CudaUnavailable> {
    use cudarc::driver::{result, DriverError};
    let describe = |e: DriverError| {
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
    };
    result::init().map_err(describe)?;
    let count = result::device::get_count().map_err(describe)?;
    if count < 1 {
        return Err(CudaUnavailable::NoDevice("0 devices".into()));
    }
    open_cuda(0)?;
    Ok(ResolvedDevice::Cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn probe_cuda() -> Result<ResolvedDevice, CudaUnavailable> {
    Err(CudaUnavailable::NotBuilt)
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device, CudaUnavailable> {
    Device::new_cuda(ordinal).map_err(|e| CudaUnavailable::Other(e.to_string()))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_: usize) -> Result<Device, CudaUnavailable> {
    Err(CudaUnavailable::NotBuilt)
}

/// Converts a candle error into a stage error naming what was being done; the GPU running
/// out of memory becomes a config error that suggests a smaller batch.
pub fn err(what: &str) -> impl Fn(candle_core::Error) -> StageError + '_ {
    move |e| {
        let text = e.to_string();
        if is_out_of_memory(&text) {
            StageError::config(format!(
                "{what}: the GPU ran out of memory; lower `batch_size` (or the model's size) and run again ({text})"
            ))
        } else {
            StageError::Internal(format!("{what}: {text}"))
        }
    }
}

/// Whether a candle error is a device allocation failure (the driver's or cuBLAS's).
fn is_out_of_memory(text: &str) -> bool {
    [
        "CUDA_ERROR_OUT_OF_MEMORY",
        "CUBLAS_STATUS_ALLOC_FAILED",
        "out of memory",
    ]
    .iter()
    .any(|marker| text.contains(marker))
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
    fn running_out_of_gpu_memory_suggests_a_smaller_batch() {
        let oom = candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        let e = err("forward pass")(oom);
        assert!(
            matches!(&e, StageError::Config(m) if m.contains("lower `batch_size`") && m.starts_with("forward pass")),
            "{e}"
        );
        let other = err("forward pass")(candle_core::Error::Msg("shape mismatch".into()));
        assert!(matches!(other, StageError::Internal(_)));
    }
}
