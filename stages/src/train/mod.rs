//! Training with candle: data in memory and batches ([`data`]), parameters with seeded
//! initialisation and safetensors checkpoints ([`params`]), layers ([`nn`], with the LSTM recurrence fused into one op: [`fused_lstm`]), losses
//! ([`loss`]), a fused AdamW and schedules ([`optim`]), the loop ([`fit`]), the sentiment
//! model ([`model`]) and the stages `train_adapters` ([`adapters`]) and `train_model`
//! ([`train_model`]).

pub mod adapters;
pub mod apply_adapters;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod finetune;
pub mod fit;
pub mod fused_lstm;
pub mod loss;
pub mod model;
pub mod nn;
pub mod optim;
pub mod params;
pub mod train_model;
