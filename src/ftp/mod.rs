//! FTP: line parsers and formatters (`parse`), per-direction stream
//! reassembly into lines (`stream`), and the ALG that ties them to the
//! connection table (`alg`).

pub mod alg;
pub mod parse;
pub mod stream;
