//! gyro-loadgen: the traffic generator performance teams run against gyro or any Gy
//! server, and the generator of the datasets it loads. Today: the dataset generator;
//! the pipelined traffic runner is built next (see the project's issues).

pub mod dataset;
pub mod plot;
pub mod run;
pub mod sink;
