//! The `margincert` command-line tool: a thin layer over the library (see [`cli`]).
#![deny(unsafe_op_in_unsafe_fn)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
