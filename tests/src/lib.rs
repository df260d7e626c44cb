//! Helpers for the end-to-end tests: locating binaries and shared data, and
//! standing up a cluster of real processes.
