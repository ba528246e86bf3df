//! `margincert fetch`: download the official dataset files and verify their SHA-256.
