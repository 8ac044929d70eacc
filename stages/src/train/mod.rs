//! Training with candle. Shared pieces: data in memory and batches ([`data`]), named
//! network weights with seeded initialisation and safetensors files ([`weights`]), layers
//! ([`nn`], with the LSTM recurrence fused into one op: [`fused_lstm`], linear layers with
//! their ReLU: [`fused_linear`], attention: [`fused_attention`], layer norm:
//! [`fused_layer_norm`], and MFN's gated memory: [`fused_memory`]), losses ([`loss`]), a fused AdamW and schedules
//! ([`optim`]), the `optim` settings table ([`settings`]), the loop ([`fit`]) and the rules it
//! follows between epochs ([`rules`]), the sentiment model ([`model`]) and how the loop sees
//! it ([`task`]), the checkpoint formats ([`checkpoint`]) and a checkpoint put back to work
//! ([`restore`]), the compute device ([`device`]) and, in a CUDA build, where the CUDA
//! libraries it loads are found (`cuda_libraries`).
//!
//! Stages (leaves: nothing imports them): `train_model` ([`train_model`]),
//! `train_adapters` ([`train_adapters`]), `finetune` ([`finetune`]) and `apply_adapters`
//! ([`apply_adapters`]).

/// A test written once as `fn case(device: &Device)`, run on every device the build has (as
/// candle's `test_device!`): `$cpu` on the CPU always; `$cuda` on GPU 0 in a build with
/// `cuda`, which says "skipped" where no GPU answers (and fails instead with
/// `MMFLOW_REQUIRE_GPU=1`, for a machine that has one).
#[cfg(test)]
macro_rules! test_device {
    ($case:ident, $cpu:ident, $cuda:ident) => {
        #[test]
        fn $cpu() {
            $case(&candle_core::Device::Cpu)
        }

        #[cfg(feature = "cuda")]
        #[test]
        fn $cuda() {
            use $crate::train::device;
            let opened = device::resolve(mmflow_pipeline::DeviceChoice::Cuda)
                .map_err(|why| why.to_string())
                .and_then(|d| device::open(d).map_err(|e| e.to_string()));
            match opened {
                Ok(gpu) => $case(&gpu),
                Err(why) if std::env::var_os("MMFLOW_REQUIRE_GPU").is_none() => {
                    eprintln!("skipped: no GPU ({why})")
                }
                Err(why) => panic!("MMFLOW_REQUIRE_GPU is set but no GPU opened: {why}"),
            }
        }
    };
}

pub mod apply_adapters;
pub mod checkpoint;
#[cfg(any(feature = "cuda", test))]
pub mod cuda_libraries;
pub mod data;
pub mod device;
pub mod finetune;
pub mod fit;
pub mod fused_attention;
pub mod fused_batch_norm;
pub mod fused_gelu;
pub mod fused_layer_norm;
pub mod fused_linear;
pub mod fused_lstm;
pub mod fused_memory;
#[cfg(test)]
pub(crate) mod golden;
pub mod loss;
pub mod model;
pub mod nn;
pub mod optim;
pub mod restore;
pub mod rules;
pub mod settings;
pub mod task;
pub mod text_bert;
pub mod train_adapters;
pub mod train_model;
pub mod weights;
pub mod zoo;
