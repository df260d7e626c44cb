//! The extraction engine: model loading, forward passes with capture sites,
//! pooling and batching. (Being built.)
