//! decdec-server
