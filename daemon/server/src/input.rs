//! Input decoding (in progress).
