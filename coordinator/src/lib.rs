//! The concept-depth coordinator. (Being built.)
