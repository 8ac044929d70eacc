//! The compute device: the CPU always; a CUDA GPU when mmflow is built with `--features cuda`.

use candle_core::Device;
use mmflow_pipeline::{DeviceChoice, StageError};

/// The candle device for the pipeline's `device` setting.
pub fn resolve(choice: DeviceChoice) -> Result<Device, StageError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => cuda().ok_or_else(|| {
            StageError::config(if cfg!(feature = "cuda") {
                "device = \"cuda\" but no CUDA device could be opened".to_string()
            } else {
                "device = \"cuda\" but this mmflow was built without CUDA support: rebuild with `--features cuda`".to_string()
            })
        }),
        DeviceChoice::Auto => Ok(cuda().unwrap_or(Device::Cpu)),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Option<Device> {
    Device::new_cuda(0).ok()
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Option<Device> {
    None
}

/// Converts a candle error into a stage error naming what was being done.
pub fn err(what: &str) -> impl Fn(candle_core::Error) -> StageError + '_ {
    move |e| StageError::Internal(format!("{what}: {e}"))
}
