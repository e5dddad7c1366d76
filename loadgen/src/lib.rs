//! gyro-loadgen: the traffic generator performance teams run against gyro or any Gy
//! server (`run`: closed or open loop, every answer checked; `sweep`: the latency
//! curve over offered rates), the answering sink it is measured against, and the
//! generator of the datasets it loads.

mod conn;
pub mod dataset;
mod evloop;
pub mod plot;
pub mod run;
pub mod sink;
pub mod sweep;
